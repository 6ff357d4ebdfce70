"""Images per second of the evaluation networks' feature extraction, as `imagen-jax eval`
runs them: the FID InceptionV3 (any input size, resized to 299 inside) and CLIP's image
tower (ViT-B/32, ViT-L/14 shapes at 224 px), through ShardedFeatures over every device.
Random weights: the speed does not depend on their values.

    python benchmarks/eval_throughput.py [--batch 32] [--repeats 3] [--out benchmarks/results/eval_throughput_cpu.json]

Prints a table and writes JSON; times are medians of `repeats` global batches after one
warm-up batch (compile). On an accelerator, run it there as is (every device is used).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from results_io import write_results

from imagen_jax.eval import clip_model, inception
from imagen_jax.eval.features import ShardedFeatures


def time_extractor(name, feature_fn, params, batch, repeats, dtype) -> dict:
    extractor = ShardedFeatures(feature_fn, params, batch_size=batch.shape[0])
    start = time.perf_counter()
    extractor(batch)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        extractor(batch)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "network": name,
        "input": list(batch.shape),
        "input_dtype": str(batch.dtype),
        "param_dtype": dtype,
        "devices": len(jax.devices()),
        "first_call_s": first,
        "batch_s": seconds,
        "images_per_s": batch.shape[0] / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="global batch (rounded up to the device count)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="64,256", help="FID input sides (the cascade's outputs)")
    parser.add_argument("--clip", default="ViT-B/32,ViT-L/14", help="CLIP presets to time ('' for none)")
    parser.add_argument("--out", default="benchmarks/results/eval_throughput_cpu.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    fid_params = jax.tree.map(jnp.asarray, inception.init_params(0))
    for size in (int(s) for s in args.sizes.split(",") if s):
        images = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
        rows.append(time_extractor(f"FID InceptionV3 ({size} px)", inception.pool_features, fid_params, images,
                                   args.repeats, "float32"))  # fmt: skip
        print(rows[-1])
    for preset in (p for p in args.clip.split(",") if p):
        config = clip_model.PRESETS[preset]
        params = clip_model.init_params(config)
        size = config.vision.image_size
        pixels = rng.standard_normal((args.batch, size, size, 3)).astype(np.float32)

        def tower(p, x, config=config):
            return clip_model.image_embeddings(p, config, x)

        rows.append(time_extractor(f"CLIP {preset} image tower", tower, params, pixels, args.repeats, "float32"))
        print(rows[-1])
        del params
    print(f"\n{'network':34} {'input':>20} {'img/s':>8} {'first call s':>13}")
    for row in rows:
        print(f"{row['network']:34} {str(row['input']):>20} {row['images_per_s']:8.2f} {row['first_call_s']:13.1f}")
    write_results(args.out, {"rows": rows, "batch": args.batch, "repeats": args.repeats})


if __name__ == "__main__":
    main()
