"""Editing with the demo's trained base stage, scored by the shapes evaluator: recolor the
object (image-to-image) and repaint the background (inpainting), before and after.

    python benchmarks/demo_editing.py runs/demo/base [--seed 0] [--strength 0.6] \
        [--jump-length 5] [--resamples 5] [--out benchmarks/results/demo_editing.json] \
        [--grid docs/images/demo_editing.png]

Source images: the demo's one-object prompts that state a background (configs/demo.py
eval.prompts), sampled by the base stage at `--seed`. Recolor: each image edited from
`--strength` with its prompt's color replaced by another palette color (shape and background
kept); scored as color + shape against the new prompt, and against it before the edit.
Background: the pixels the evaluator reads as the image's background are the inpainting
mask (everything else kept exactly), the prompt names another background color; scored as
the background rate against the new prompt, and color + shape (the object must survive).
Writes JSON and a grid: rows of source, recolored, source, new background.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
from results_io import write_results

from imagen_jax.config import load_config
from imagen_jax.data.shapes_scene import COLOR_NAMES
from imagen_jax.diffusion import Repaint
from imagen_jax.eval.color_space import nearest_color_index, srgb_to_lab
from imagen_jax.eval.prompt_accuracy import prompt_accuracy
from imagen_jax.eval.shape_analyzer import analyze_image
from imagen_jax.images import make_grid, save_png
from imagen_jax.pipeline import Cascade

REPO = Path(__file__).resolve().parent.parent
PATTERN = re.compile(r"^an? (\w+) (\w+) on a (\w+) background$")


def other_color(avoid: set[str], start: str) -> str:
    """The palette color after `start` (cyclically) that is in none of `avoid`."""
    i = COLOR_NAMES.index(start)
    for k in range(1, len(COLOR_NAMES)):
        color = COLOR_NAMES[(i + k) % len(COLOR_NAMES)]
        if color not in avoid:
            return color
    raise ValueError(f"no color outside {avoid}")


def prompt(color: str, shape: str, background: str) -> str:
    article = "an" if color[0] in "aeiou" else "a"
    return f"{article} {color} {shape} on a {background} background"


def background_mask(image: np.ndarray) -> np.ndarray:
    """bool [H, W]: the pixels whose nearest palette color is the background the evaluator reads."""
    background = COLOR_NAMES.index(analyze_image(image).background)
    return nearest_color_index(srgb_to_lab(image)) == background


def rates(images, prompts) -> dict:
    result = prompt_accuracy(images, prompts)
    return {k: result[k] for k in ("correct", "color", "shape", "background")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="the demo's base-stage workdir (runs/demo/base)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strength", type=float, default=0.6, help="image-to-image strength for the recolor")
    parser.add_argument("--jump-length", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "demo_editing.json"))
    parser.add_argument("--grid", default=str(REPO / "docs" / "images" / "demo_editing.png"))
    args = parser.parse_args()

    prompts = [p for p in load_config(str(REPO / "configs" / "demo.py")).eval.prompts if PATTERN.match(p)]
    cascade = Cascade.from_workdirs([args.workdir])
    source = cascade.sample(prompts, seed=args.seed, batch_size=len(prompts)).final
    parsed = [PATTERN.match(p).groups() for p in prompts]

    recolor_prompts = [prompt(other_color({c, b}, c), s, b) for c, s, b in parsed]
    recolored = next(
        cascade.edit_batches(
            recolor_prompts, source, strength=args.strength, seed=args.seed + 1, batch_size=len(prompts)
        )
    ).images[0]

    background_prompts = [prompt(c, s, other_color({c, b}, b)) for c, s, b in parsed]
    masks = np.stack([background_mask(im) for im in source])
    sampler = cascade.stages[0].sampler
    if sampler.kind == "dpm_solver_pp_2m":  # inpainting takes ancestral or DDIM (diffusion/editing.py)
        sampler = dataclasses.replace(sampler, kind="ddim", eta=0.0)
    repainted = next(
        cascade.edit_batches(
            background_prompts,
            source,
            masks=masks,
            repaint=Repaint(args.jump_length, args.resamples),
            seed=args.seed + 2,
            batch_size=len(prompts),
            stage_settings=[{"sampler": sampler}],
        )
    ).images[0]
    kept_exactly = bool(np.all(repainted[~masks] == source[~masks]))

    results = {
        "workdir": args.workdir,
        "checkpoint_step": cascade.checkpoint_steps[0],
        "num_images": len(prompts),
        "seed": args.seed,
        "sampler": dict(kind=cascade.stages[0].sampler.kind, num_steps=cascade.stages[0].sampler.num_steps),
        "source_vs_own_prompts": rates(source, prompts),
        "recolor": {
            "strength": args.strength,
            "before": rates(source, recolor_prompts),
            "after": rates(recolored, recolor_prompts),
            "after_vs_old_prompts": rates(recolored, prompts),
        },
        "background": {
            "repaint": [args.jump_length, args.resamples],
            "sampler": dict(kind=sampler.kind, eta=sampler.eta, num_steps=sampler.num_steps),
            "mask_fraction": float(masks.mean()),
            "kept_region_exact": kept_exactly,
            "before": rates(source, background_prompts),
            "after": rates(repainted, background_prompts),
        },
    }
    write_results(args.out, results)
    rows = 8
    grid = np.concatenate([source[:rows], recolored[:rows], source[:rows], repainted[:rows]])
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    save_png(make_grid(grid, columns=rows, upscale_to=96), args.grid)
    recolor = results["recolor"]
    print(
        f"recolor (strength {args.strength}): color+shape of the new prompt {recolor['before']['correct']:.0%}"
        f" -> {recolor['after']['correct']:.0%} (color {recolor['after']['color']:.0%})"
    )
    print(
        f"background inpainting (RePaint {args.jump_length}x{args.resamples}): background right "
        f"{results['background']['before']['background']:.0%} -> {results['background']['after']['background']:.0%}, "
        f"object still right {results['background']['after']['correct']:.0%}; kept region exact: {kept_exactly}"
    )
    print(f"wrote {args.out} and {args.grid}")


if __name__ == "__main__":
    main()
