"""`imagen-jax sample`: prompts -> images through trained stages.

  imagen-jax sample --workdir runs/base --workdir runs/sr --prompt "a red circle" --out samples/
  imagen-jax sample --workdir runs/base --prompts-file prompts.txt --out samples/ \
      --config.0.sampling.guidance_weight=5 --config.0.sampling.num_steps=64

--workdir once per stage, base first. Writes <out>/<index>_<prompt>.png (final stage),
<out>/grid.png, <out>/manifest.json (for `imagen-jax eval --manifest`), and each earlier
stage's images under <out>/stages/<i>_<workdir name>/.
Each stage samples with the `sampling` section of its training config;
--config.STAGE.sampling.FIELD=VALUE changes it for stage STAGE (0 = the first --workdir),
with the same names and syntax as `--config.sampling.FIELD=VALUE` in training: sampler,
num_steps, threshold, quantile, gamma, eta, guidance_weight, aug_level, image_size,
start_logsnr, guidance_logsnr_min, guidance_logsnr_max ("None" unsets an optional one).
"""

from __future__ import annotations

import argparse
import sys

from imagen_jax import storage


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
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run, accepts_config_overrides=True)


def stage_overrides(overrides: list[str], num_stages: int) -> list[list[str]]:
    """['0.sampling.guidance_weight=5', '1.sampling.num_steps=64'] -> per stage
    [['sampling.guidance_weight=5'], ['sampling.num_steps=64']] (config overrides of each
    stage's saved config, applied by Cascade.from_workdirs)."""
    per_stage: list[list[str]] = [[] for _ in range(num_stages)]
    for item in overrides:
        stage, _, rest = item.partition(".")
        if not stage.isdigit() or not rest.startswith("sampling.") or "=" not in rest:
            raise ValueError(
                f"--config.{item}: expected --config.STAGE.sampling.FIELD=VALUE, e.g. "
                "--config.0.sampling.guidance_weight=5 (STAGE: 0 for the first --workdir)."
            )
        if int(stage) >= num_stages:
            raise ValueError(
                f"--config.{item}: stage {stage} does not exist; stages are 0..{num_stages - 1} (one per --workdir)."
            )
        per_stage[int(stage)].append(rest)
    return per_stage


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
    overrides = stage_overrides(args.config_overrides, len(args.workdir))
    cascade = Cascade.from_workdirs(args.workdir, config_overrides=overrides)
    for i, stage in enumerate(cascade.stages):
        print(
            f"stage {i} {cascade.names[i]}: {stage.image_size} px, {stage.sampler.kind} "
            f"{stage.sampler.num_steps} steps, w={stage.guidance_weight:g}, threshold={stage.sampler.threshold}"
            + (f", aug_level={stage.aug_level:g}" if stage.is_super_resolution else ""),
            file=sys.stderr,
        )
    output = cascade.sample(prompts, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress)
    for i, images in enumerate(output.images[:-1]):
        write_images(storage.join(args.out, "stages", f"{i}_{cascade.names[i]}"), prompts, images, upscale_to=64)
    write_images(args.out, prompts, output.final, upscale_to=64)
    print(f"wrote {len(prompts)} images of {output.final.shape[1]} px to {args.out} (grid.png, manifest.json)")
    return 0
