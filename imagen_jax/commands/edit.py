"""`imagen-jax edit`: edit your images with trained stages (diffusion/editing.py).

  imagen-jax edit --workdir runs/base --workdir runs/sr --image cat.png --mask cat_mask.png \
      --prompt "a red circle on a blue background" --out edited/              # inpainting
  imagen-jax edit --workdir runs/base --workdir runs/sr --image cat.png --strength 0.6 \
      --prompt "a green circle" --out recolored/                             # image-to-image

The images (any size; center-cropped to a square and resized, with a note) are read at the
last stage's output size and resized to each stage's. With --mask (white = generate, black
= keep; one for all images or one per image) every stage inpaints, keeping the rest of the
image, with RePaint resampling (--jump-length, --resamples; 1 = none); each SR stage is
conditioned on the inpainted image before it. With --strength S < 1 the first stage starts
from your image noised to S (0.3: small changes, 0.8: mostly new) and the SR stages sample
from its output. --from-stage K starts at SR stage K from your images. Outputs are written
as by `imagen-jax sample` (PNGs, stages/, manifest.jsonl, settings.json; reruns resume).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from imagen_jax.commands.sample import add_output_arguments

    parser = subparsers.add_parser(
        "edit",
        help="inpaint or transform your images with trained stages (image-to-image, SR of your images)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir", action="append", required=True, help="a stage's training workdir; repeat per stage, base first"
    )
    parser.add_argument(
        "--image", action="append", required=True, help="an input image or a folder of them (repeatable)"
    )
    parser.add_argument("--mask", action="append", default=[], help="inpainting mask: white = generate (repeatable)")
    parser.add_argument("--prompt", action="append", default=[], help="the prompt: one for all images or one each")
    parser.add_argument("--prompts-file", help="text file, one prompt per line")
    parser.add_argument(
        "--strength", type=float, default=1.0, help="image-to-image strength in (0, 1] (default 1: from noise)"
    )
    parser.add_argument("--jump-length", type=int, default=10, help="RePaint: steps per jump back (default 10)")
    parser.add_argument("--resamples", type=int, default=1, help="RePaint: passes over each jump (default 1: none)")
    parser.add_argument("--from-stage", type=int, default=0, help="start at this stage (0: the base stage)")
    add_output_arguments(parser)
    parser.set_defaults(run=run, accepts_config_overrides=True)


def run(args) -> int:
    from imagen_jax.commands.sample import (
        _note,
        image_paths,
        open_cascade,
        read_prompts,
        stage_sizes,
        write_cascade_outputs,
    )
    from imagen_jax.diffusion.editing import Repaint
    from imagen_jax.pipeline.edit_inputs import pair, read_images, read_masks

    if not 0.0 < args.strength <= 1.0:
        raise ValueError(f"--strength must be in (0, 1], got {args.strength}.")
    repaint = Repaint(args.jump_length, args.resamples)
    paths = image_paths(args.image)
    prompts = pair(read_prompts(args.prompt, args.prompts_file), len(paths), "prompt")
    masks = pair(args.mask, len(paths), "mask") if args.mask else []
    if not masks and args.strength == 1.0 and args.from_stage == 0:
        raise ValueError(
            "nothing to edit: give --mask MASK.png (inpainting), --strength S < 1 (image-to-image), "
            "or --from-stage K (start at an SR stage)."
        )
    if not masks and args.resamples != 1:
        raise ValueError("--resamples is for inpainting: give --mask too.")
    if not 0 <= args.from_stage < len(args.workdir):
        raise ValueError(f"--from-stage must be in 0..{len(args.workdir) - 1} (one stage per --workdir).")
    size = stage_sizes(args)[-1][0]
    images = read_images(paths, size, purpose=f"the last stage's {size} px", log=_note)
    mask_arrays = read_masks(masks, paths, size, log=_note) if masks else None
    cascade, overrides = open_cascade(args)  # after the inputs are read: bad ones fail fast

    def batches(skip):
        return cascade.edit_batches(
            prompts,
            images,
            masks=mask_arrays,
            strength=args.strength,
            repaint=repaint,
            start_stage=args.from_stage,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            skip=skip,
        )

    extra = {
        "images": paths,
        "masks": masks,
        "strength": args.strength,
        "repaint": [repaint.jump_length, repaint.resamples],
        "from_stage": args.from_stage,
    }
    write_cascade_outputs(args, cascade, overrides, prompts, batches, first_stage=args.from_stage, extra_settings=extra)
    return 0
