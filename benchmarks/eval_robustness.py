"""How far the shapes evaluator can be trusted on imperfect images, and how fast it is.

Prompt accuracy ("correct") of TRUE dataset images after a Gaussian blur (std in pixels)
and Gaussian noise (std as a fraction of 255), at each resolution: where this table is
below 100%, a generated image of that quality would be under-scored by the evaluator,
not by the model. Then the analyzer's throughput per resolution.

    python benchmarks/eval_robustness.py [--num 500] [--out benchmarks/results/eval_robustness.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from scipy import ndimage

from imagen_jax.eval import analyze_image, prompt_accuracy
from imagen_jax.eval.dataset_check import dataset_images
from imagen_jax.images import to_uint8

BLURS = (0.0, 0.5, 0.75, 1.0)
NOISES = (0.0, 0.03, 0.06)


def degrade(images: np.ndarray, blur: float, noise: float, seed: int = 0) -> np.ndarray:
    x = images.astype(np.float32)
    if blur:
        x = ndimage.gaussian_filter(x, sigma=(0, blur, blur, 0))
    if noise:
        x = x + np.random.default_rng(seed).normal(0.0, noise * 255, x.shape)
    return to_uint8(x, value_range=(0, 255))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--out", default="benchmarks/results/eval_robustness.json")
    args = parser.parse_args()

    rows = []
    print(f"prompt accuracy ('correct') of {args.num} true test-split images, degraded")
    print(f"{'res':>5} {'blur px':>8} " + " ".join(f"{f'noise {n:.0%}':>10}" for n in NOISES))
    for resolution in (32, 64):
        images, captions = dataset_images(args.num, resolution)
        for blur in BLURS:
            cells = []
            for noise in NOISES:
                result = prompt_accuracy(degrade(images, blur, noise), captions)
                rows.append({"resolution": resolution, "blur": blur, "noise": noise, **result})
                cells.append(f"{100 * result['correct']:9.1f}%")
            print(f"{resolution:>5} {blur:>8.2f} " + " ".join(cells))

    speed = []
    print(f"\n{'res':>5} {'images/s':>9}")
    for resolution, count in ((32, 200), (64, 200), (256, 20), (1024, 3)):
        images, _ = dataset_images(count, resolution)
        start = time.perf_counter()
        for image in images:
            analyze_image(image)
        rate = count / (time.perf_counter() - start)
        speed.append({"resolution": resolution, "images_per_s": rate})
        print(f"{resolution:>5} {rate:9.1f}")

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        machine = platform.processor() or platform.machine()
        json.dump({"machine": machine, "accuracy": rows, "speed": speed}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
