"""`imagen-jax sample`: prompts -> images through trained stages.

  imagen-jax sample --workdir runs/base --workdir runs/sr --prompt "a red circle" --out samples/
  imagen-jax sample --workdir runs/base --prompts-file prompts.txt --out samples/ --set 0.guidance_weight=5

--workdir once per stage, base first. Writes <out>/<index>_<prompt>.png (final stage),
<out>/grid.png, <out>/manifest.json (for `imagen-jax eval --manifest`), and each earlier
stage's images under <out>/stages/<i>_<workdir name>/.
--set STAGE.FIELD=VALUE changes one stage's sampling: FIELD is guidance_weight, aug_level,
image_size, or a sampler field (kind, num_steps, threshold, quantile, gamma, eta, start_logsnr,
guidance_logsnr_min, guidance_logsnr_max; "None" unsets an optional one).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from imagen_jax import storage

_STAGE_FIELDS = {"guidance_weight": float, "aug_level": float, "image_size": int}
# SamplerConfig fields a user may change per stage.
_SAMPLER_FIELDS = {
    "kind": str,
    "num_steps": int,
    "threshold": str,
    "quantile": float,
    "gamma": float,
    "eta": float,
    "start_logsnr": float,
    "guidance_logsnr_min": float,
    "guidance_logsnr_max": float,
}
_OPTIONAL_FIELDS = ("start_logsnr", "guidance_logsnr_min", "guidance_logsnr_max")  # "None" unsets these


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="sample images for prompts through trained stages (base, then SR)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        action="append",
        required=True,
        help="a stage's training workdir (local or gs://); repeat per stage, base first",
    )
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", help="text file, one prompt per line")
    parser.add_argument("--out", required=True, help="output folder (local or gs://)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per sampler call (default 16)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.FIELD=VALUE",
        help="change one stage's sampling setting, e.g. 0.guidance_weight=5 or 1.num_steps=64",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def parse_settings(items: list[str], num_stages: int) -> list[dict]:
    """['0.guidance_weight=5', '1.num_steps=64'] -> per-stage {field: value}; sampler fields
    are gathered under 'sampler' (a dict of SamplerConfig changes)."""
    settings = [{} for _ in range(num_stages)]
    for item in items:
        key, sep, value = item.partition("=")
        stage, dot, field = key.partition(".")
        if not sep or not dot or not stage.isdigit():
            raise ValueError(f"--set {item!r}: expected STAGE.FIELD=VALUE, e.g. 0.guidance_weight=5.")
        if int(stage) >= num_stages:
            raise ValueError(f"--set {item!r}: stage {stage} does not exist; stages are 0..{num_stages - 1}.")
        kinds = {**_STAGE_FIELDS, **_SAMPLER_FIELDS}
        if field not in kinds:
            raise ValueError(f"--set {item!r}: unknown field {field!r}; use one of {sorted(kinds)}.")
        try:
            parsed = None if field in _OPTIONAL_FIELDS and value.strip() == "None" else kinds[field](value)
        except ValueError:
            raise ValueError(f"--set {item!r}: {field} takes a {kinds[field].__name__}.") from None
        target = settings[int(stage)].setdefault("sampler", {}) if field in _SAMPLER_FIELDS else settings[int(stage)]
        target[field] = parsed
    return settings


def _stage_changes(cascade, settings: list[dict]) -> list[dict]:
    """Per-stage StageConfig changes, sampler fields applied on the stage's own SamplerConfig."""
    changes = []
    for stage, setting in zip(cascade.stages, settings):
        setting = dict(setting)
        if "sampler" in setting:
            setting["sampler"] = dataclasses.replace(stage.sampler, **setting["sampler"])
        changes.append(setting)
    return changes


def read_prompts(prompts: list[str], prompts_file: str | None) -> list[str]:
    prompts = [p.strip() for p in prompts]
    if prompts_file:
        if not storage.path(prompts_file).exists():
            raise FileNotFoundError(f"--prompts-file {prompts_file!r} does not exist.")
        prompts += [line.strip() for line in storage.read_text(prompts_file).splitlines() if line.strip()]
    if not prompts or not all(prompts):
        raise ValueError("Give at least one non-empty prompt with --prompt TEXT or --prompts-file FILE.")
    return prompts


def run(args) -> int:
    from imagen_jax.pipeline.cascade import Cascade
    from imagen_jax.pipeline.outputs import write_images

    prompts = read_prompts(args.prompt, args.prompts_file)
    for workdir in args.workdir:
        storage.check_access(workdir, write=False)
    storage.check_access(args.out, write=True)
    settings = parse_settings(args.set, len(args.workdir))
    cascade = Cascade.from_workdirs(args.workdir)
    changes = _stage_changes(cascade, settings)
    for i, (stage, change) in enumerate(zip(cascade.stages, changes)):
        stage = dataclasses.replace(stage, **change)
        print(
            f"stage {i} {cascade.names[i]}: {stage.image_size} px, {stage.sampler.kind} "
            f"{stage.sampler.num_steps} steps, w={stage.guidance_weight:g}, threshold={stage.sampler.threshold}"
            + (f", aug_level={stage.aug_level:g}" if stage.is_super_resolution else ""),
            file=sys.stderr,
        )
    output = cascade.sample(
        prompts, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress, stage_settings=changes
    )
    for i, images in enumerate(output.images[:-1]):
        write_images(storage.join(args.out, "stages", f"{i}_{cascade.names[i]}"), prompts, images, upscale_to=64)
    write_images(args.out, prompts, output.final, upscale_to=64)
    print(f"wrote {len(prompts)} images of {output.final.shape[1]} px to {args.out} (grid.png, manifest.json)")
    return 0
