"""A trained base stage's prompt accuracy on the demo's 30 one-object prompts, over
sampling seeds, with the shape confusion table: how the README's base-stage variants
were compared.

    python benchmarks/base_accuracy.py runs/demo/base [more base workdirs ...] \
        [--seeds 4] [--first-seed 0] [--guidance 5] [--sampler dpm_solver_pp_2m] [--num-steps 32] \
        [--threshold dynamic] [--start-logsnr -10] [--guidance-logsnr-min None] [--guidance-logsnr-max 2] \
        [--strip-backgrounds] [--out benchmarks/results/base_accuracy.json]

For each workdir (its latest checkpoint, EMA params), the prompts of configs/demo.py
(eval.prompts) are sampled at seeds first .. first + seeds - 1 in one batch each and scored by
imagen_jax.eval.prompt_accuracy. Sampler flags left out keep the stage's own `sampling`
settings. Prints a table, the accuracy per asked color, and how often an image whose prompt
states a background shows an object of that background's color; writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import re
from pathlib import Path

import numpy as np
from results_io import write_results

from imagen_jax.config import load_config
from imagen_jax.eval.prompt_accuracy import match_objects, score_prompt, summarize
from imagen_jax.eval.prompt_parser import parse_prompt
from imagen_jax.eval.shape_analyzer import analyze_image
from imagen_jax.pipeline import Cascade

REPO = Path(__file__).resolve().parent.parent
RATES = ("correct", "color", "shape", "background", "count")


def score_images(
    images, requests, backgrounds
) -> tuple[dict, dict[str, collections.Counter], dict[str, list[bool]], list[bool], collections.Counter]:
    """One analysis per image -> (prompt-accuracy rates, {asked shape: Counter(read shape
    or "none")} over the one-object prompts, {asked color: [correct per image]}, for
    each image with a background color in `backgrounds` (one per image, None: none) whether
    an object of that color was detected (the stage drawing the background's color word as
    a shape), and Counter(number of objects detected) over the one-object prompts: where the
    count misses go, empty images or extra objects)."""
    scores, confusion = [], collections.defaultdict(collections.Counter)
    by_color, background_as_object, objects_read = collections.defaultdict(list), [], collections.Counter()
    for image, request, background in zip(images, requests, backgrounds):
        analysis = analyze_image(image)
        score = score_prompt(request, analysis)
        scores.append(score)
        if len(request.objects) == 1:
            got = match_objects(request, analysis.objects)[0]
            confusion[request.objects[0].shape][got.shape if got is not None else "none"] += 1
            by_color[request.objects[0].color].append(score["correct"])
            objects_read[len(analysis.objects)] += 1
        if background is not None:
            background_as_object.append(any(o.color == background for o in analysis.objects))
    return summarize(scores), confusion, by_color, background_as_object, objects_read


def without_background(prompt: str) -> str:
    """'a red circle on a white background' -> 'a red circle' (the control of --strip-backgrounds)."""
    return re.sub(r" on an? \w+ background$", "", prompt)


def score_workdir(
    workdir: str, prompts, seeds, guidance: float, sampler_changes: dict, strip_backgrounds: bool = False
) -> dict:
    cascade = Cascade.from_workdirs([workdir])
    settings = {"guidance_weight": guidance}
    if sampler_changes:
        settings["sampler"] = dataclasses.replace(cascade.stages[0].sampler, **sampler_changes)
    backgrounds = [parse_prompt(p).background for p in prompts]
    if strip_backgrounds:
        prompts = [without_background(p) for p in prompts]
    requests = [parse_prompt(p) for p in prompts]
    per_seed, confusion = [], collections.defaultdict(collections.Counter)
    by_color, background_as_object, objects_read = collections.defaultdict(list), [], collections.Counter()
    for seed in seeds:
        images = cascade.sample(prompts, seed=seed, batch_size=len(prompts), stage_settings=[settings]).images[0]
        rates, seed_confusion, seed_by_color, seed_background, seed_objects = score_images(
            images, requests, backgrounds
        )
        objects_read.update(seed_objects)
        per_seed.append({k: rates[k] for k in RATES})
        for shape, counts in seed_confusion.items():
            confusion[shape].update(counts)
        for color, outcomes in seed_by_color.items():
            by_color[color].extend(outcomes)
        background_as_object.extend(seed_background)
    rated = {k: [r[k] for r in per_seed if r[k] is not None] for k in RATES}
    mean = {k: float(np.mean(v)) if v else None for k, v in rated.items()}  # None: no prompt states it
    return {
        "workdir": workdir,
        "per_seed": per_seed,
        "mean": mean,
        "shape_confusion": {s: dict(c) for s, c in sorted(confusion.items())},
        "correct_by_color": {c: float(np.mean(v)) for c, v in by_color.items()},
        "background_color_as_object": float(np.mean(background_as_object)) if background_as_object else None,
        "objects_read": {str(n): objects_read[n] for n in sorted(objects_read)},
    }


_STAGES = object()  # a flag left out: keep the stage's own setting


def optional_float(text: str):
    """A float, or None for "None" (an optional sampler field turned off)."""
    return None if text.strip().lower() == "none" else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", help="trained base-stage workdirs")
    parser.add_argument("--seeds", type=int, default=4, help="number of sampling seeds (default 4)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first .. first + N - 1 (default 0)")
    parser.add_argument("--guidance", type=float, default=5.0, help="guidance weight (default 5, the demo's)")
    parser.add_argument("--sampler", help="ancestral | ddim | dpm_solver_pp_2m (default: the stage's)")
    parser.add_argument("--num-steps", type=int, help="sampler steps (default: the stage's)")
    parser.add_argument("--threshold", help="none | static | dynamic (default: the stage's)")
    for flag, what in (
        ("--start-logsnr", "log-SNR of the sampler's first step"),
        ("--guidance-logsnr-min", "guidance only at log-SNR >= this"),
        ("--guidance-logsnr-max", "guidance only at log-SNR <= this"),
    ):
        parser.add_argument(
            flag, type=optional_float, default=_STAGES, help=f"{what}; None turns it off (default: the stage's)"
        )
    parser.add_argument(
        "--strip-backgrounds",
        action="store_true",
        help="sample the prompts without their 'on a ... background' clause (a control: the "
        "background-color-as-object rate still checks the removed color)",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/base_accuracy.json"))
    args = parser.parse_args()
    prompts = list(load_config(str(REPO / "configs/demo.py")).eval.prompts)
    flags = (("kind", args.sampler), ("num_steps", args.num_steps), ("threshold", args.threshold))
    changes = {k: v for k, v in flags if v is not None}
    for field in ("start_logsnr", "guidance_logsnr_min", "guidance_logsnr_max"):
        if getattr(args, field) is not _STAGES:
            changes[field] = getattr(args, field)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    results = [score_workdir(w, prompts, seeds, args.guidance, changes, args.strip_backgrounds) for w in args.workdirs]
    print(f"| workdir | {' | '.join(RATES)} | correct per seed | squares read as |")
    print("|---" * (len(RATES) + 3) + "|")
    for r in results:
        per_seed = " / ".join(f"{s['correct']:.1%}" for s in r["per_seed"])
        squares = r["shape_confusion"].get("square", {})
        means = " | ".join("n/a" if r["mean"][k] is None else f"{r['mean'][k]:.1%}" for k in RATES)
        print(f"| {r['workdir']} | {means} | {per_seed} | {squares} |")
    for r in results:
        colors = ", ".join(f"{c} {v:.0%}" for c, v in r["correct_by_color"].items())
        stated = r["background_color_as_object"]
        stated = "n/a" if stated is None else f"{stated:.1%}"
        print(f"{r['workdir']}: correct by asked color: {colors}; an object in the stated background's color: {stated}")
        print(f"{r['workdir']}: objects read in the one-object prompts' images (number: images): {r['objects_read']}")
    write_results(
        args.out,
        {
            "prompts": prompts,
            "strip_backgrounds": args.strip_backgrounds,
            "seeds": list(seeds),
            "guidance_weight": args.guidance,
            "sampler_changes": changes,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
