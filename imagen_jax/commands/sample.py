"""`imagen-jax sample`: prompts -> images through trained stages, streamed to disk.

  imagen-jax sample --workdir runs/base --workdir runs/sr --prompt "a red circle" --out samples/
  imagen-jax sample --workdir base64 --workdir sr256 --workdir sr1024 --prompts-file coco.txt \
      --out gs://bucket/samples --batch-size 64 --param-dtype bfloat16

  imagen-jax sample --workdir base64 --workdir sr256 --workdir sr1024 --from-stage 1 \
      --images my_64px_images/ --prompt "a photo" --out upscaled/      # SR only

--workdir once per stage, base first. Each finished batch is written at once:
<out>/<index>_<prompt>.png (final stage), each earlier stage's images under
<out>/stages/<i>_<workdir name>/, <out>/manifest.jsonl (for `imagen-jax eval --manifest`) and
<out>/settings.json. Rerun the same command after an interruption: finished batches are
skipped. On several hosts (a TPU pod: run it on every worker) the prompts are split across
hosts and each batch over all devices; the params are FSDP-sharded over the mesh by the
training's rules.
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
    parser.add_argument(
        "--from-stage",
        type=int,
        default=0,
        help="start at this SR stage (1 = the second --workdir) from --images instead of from the base stage",
    )
    parser.add_argument(
        "--images",
        action="append",
        default=[],
        help="with --from-stage: the input images (files or a folder; resized to the stage's input size), "
        "one prompt for all or one per image",
    )
    add_output_arguments(parser)
    parser.set_defaults(run=run, accepts_config_overrides=True)


def add_output_arguments(parser) -> None:
    """Options `sample` and `edit` share: where and how the cascade runs and writes."""
    parser.add_argument("--out", required=True, help="output folder (local or gs://)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="prompts per global batch, split over all devices (default 16; with several hosts, a multiple of "
        "the device count). The images depend on it: a rerun must use the same",
    )
    parser.add_argument(
        "--mesh-fsdp",
        type=int,
        default=-1,
        help="devices each stage's params are sharded over (default -1: all; 1: replicated, as fits)",
    )
    parser.add_argument(
        "--param-dtype", choices=("float32", "bfloat16"), default="float32", help="params' dtype for sampling"
    )
    parser.add_argument("--no-stages", action="store_true", help="write the final stage's images only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


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
    from imagen_jax.pipeline.edit_inputs import pair, read_images

    prompts = read_prompts(args.prompt, args.prompts_file)
    first = args.from_stage
    extra, images = {}, None
    if first:
        if not args.images:
            raise ValueError(f"--from-stage {first} starts from your images: give them with --images FILE_OR_FOLDER.")
        if not 0 < first < len(args.workdir):
            raise ValueError(f"--from-stage must be an SR stage, 1..{len(args.workdir) - 1} (0 is the base stage).")
        paths = image_paths(args.images)
        prompts = pair(prompts, len(paths), "prompt")
        size = stage_sizes(args)[first][1]
        images = read_images(paths, size, purpose=f"stage {first}'s {size} px input", log=_note)
        extra = {"from_stage": first, "images": paths}
    elif args.images:
        raise ValueError(
            "--images needs --from-stage K (an SR stage); to edit images at the base stage use imagen-jax edit."
        )
    cascade, overrides = open_cascade(args)  # after the inputs are read: bad ones fail fast

    def batches(skip):
        options = dict(seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress, skip=skip)
        if images is None:
            return cascade.sample_batches(prompts, **options)
        return cascade.edit_batches(prompts, images, start_stage=first, **options)

    write_cascade_outputs(args, cascade, overrides, prompts, batches, first_stage=first, extra_settings=extra)
    return 0


def _note(message: str) -> None:
    import jax

    if jax.process_index() == 0:
        print(message, file=sys.stderr)


def image_paths(items: list[str]) -> list[str]:
    """Image files from --images / --image items: files, or folders of PNG / JPEG files (sorted)."""
    from imagen_jax.eval.image_io import list_images

    paths = []
    for item in items:
        paths += list_images(item) if storage.path(item).is_dir() else [item]
    return paths


def stage_sizes(args) -> list[tuple[int, int]]:
    """(output side, low-res input side) of each --workdir's stage with its --config
    overrides, read from the workdirs' config.json alone (no checkpoint, no encoder)."""
    import ml_collections

    from imagen_jax.config import apply_overrides, to_dict
    from imagen_jax.pipeline.stage_params import read_stage_config
    from imagen_jax.pipeline.stage_sampler import sampling_sizes

    overrides = stage_overrides(args.config_overrides, len(args.workdir))
    sizes = []
    for workdir, items in zip(args.workdir, overrides):
        config = read_stage_config(workdir)
        if items:
            config = to_dict(apply_overrides(ml_collections.ConfigDict(config), items))
        sizes.append(sampling_sizes(config))
    return sizes


def open_cascade(args):
    """(the Cascade of args.workdir on the mesh args.mesh_fsdp asks for, the per-stage
    sampling overrides); paths checked first."""
    import jax.numpy as jnp

    from imagen_jax.parallel import initialize, make_mesh
    from imagen_jax.pipeline.cascade import Cascade

    initialize()
    for workdir in args.workdir:
        storage.check_access(workdir, write=False)
    storage.check_access(args.out, write=True)
    overrides = stage_overrides(args.config_overrides, len(args.workdir))
    mesh = make_mesh(data=1 if args.mesh_fsdp == -1 else -1, fsdp=args.mesh_fsdp)
    cascade = Cascade.from_workdirs(
        args.workdir,
        config_overrides=overrides,
        mesh=mesh,
        param_dtype=jnp.bfloat16 if args.param_dtype == "bfloat16" else None,
    )
    return cascade, overrides


def write_cascade_outputs(args, cascade, overrides, prompts, batches, *, first_stage=0, extra_settings=None):
    """Print each stage's settings, then write every batch of `batches(skip)` (the cascade's
    batch generator) with a SampleWriter under args.out: resumable, refused when args.out
    holds other settings."""
    import hashlib

    import jax

    from imagen_jax.pipeline.outputs import SampleWriter

    stages = []
    for i in range(first_stage, len(cascade.stages)):
        stage = cascade.stages[i]
        settings = {
            "workdir": args.workdir[i],
            "checkpoint_step": cascade.checkpoint_steps[i],
            "image_size": stage.image_size,
            "low_res_size": stage.low_res_size,
            "sampler": stage.sampler.kind,
            "num_steps": stage.sampler.num_steps,
            "threshold": stage.sampler.threshold,
            "guidance_weight": stage.guidance_weight,
            "aug_level": stage.aug_level,
            "overrides": overrides[i],
        }
        stages.append(settings)
        _note(
            f"stage {i} {cascade.names[i]}: {stage.image_size} px, {stage.sampler.kind} "
            f"{stage.sampler.num_steps} steps, w={stage.guidance_weight:g}, threshold={stage.sampler.threshold}"
            + (f", aug_level={stage.aug_level:g}" if stage.is_super_resolution else "")
        )
    settings = {
        "prompts": len(prompts),
        "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
        "seed": args.seed,
        "batch_size": min(args.batch_size, len(prompts)),
        "param_dtype": args.param_dtype,
        "stages": stages,
        **(extra_settings or {}),
    }
    last = len(cascade.stages) - 1
    kept = ([] if args.no_stages else list(range(first_stage, last))) + [last]  # stages whose images are written
    dirs = [f"stages/{i}_{cascade.names[i]}" for i in kept[:-1]] + [""]
    writer = SampleWriter(args.out, prompts, settings=settings, stage_dirs=dirs)
    for batch in batches(writer.done):
        batch.images = [batch.images[i - first_stage] for i in kept]
        writer.write(batch)
    count = writer.finish()
    if jax.process_index() == 0:
        print(f"wrote {count} images of {cascade.stages[-1].image_size} px to {args.out} (manifest.jsonl, grid.png)")
