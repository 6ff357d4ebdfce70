"""`imagen-jax eval fid | clip | coco`: FID and CLIP score over all devices.

  imagen-jax eval fid --reference imagen_coco/256px --inception-weights pt_inception.pth
      (no --images: compute the dataset's reference statistics once, saved beside it)
  imagen-jax eval fid --images 'gs://bucket/samples/*.png' --reference imagen_coco/256px \\
      --data-dir gs://bucket/data --inception-weights pt_inception-2015-12-05-6726825d.pth
  imagen-jax eval clip --manifest samples/manifest.jsonl --clip clip-vit-l-14/
  imagen-jax eval coco --workdir base64 --workdir sr256 --dataset imagen_coco/256px --split validation \\
      --num-samples 30000 --out gs://bucket/coco_samples --inception-weights ... --clip ...

coco is the paper's zero-shot protocol: --num-samples captions drawn with --caption-seed from
the dataset's split, sampled by the cascade into --out (resumable: rerun the same command),
then FID against that split's images at the final stage's size and CLIP score against the
captions. Every setting is recorded in the JSON (--output, default eval_<metric>.json).
Weights are never downloaded: FID uses pytorch-fid's pt_inception-2015-12-05-6726825d.pth
(or the same tensors as .safetensors); CLIP a Hugging Face CLIP checkpoint directory
(safetensors + tokenizer), e.g. openai/clip-vit-large-patch14 saved with save_pretrained.
"""

from __future__ import annotations

import argparse
import json

from imagen_jax import storage


def _add_common(parser, *, fid: bool, clip: bool, progress: bool = True) -> None:
    if fid:
        parser.add_argument("--inception-weights", required=True, help="pytorch-fid's Inception .pth or .safetensors")
        parser.add_argument("--data-dir", help="data directory of the reference dataset (default as `data`)")
        parser.add_argument("--split", default="train", help="the reference dataset's split (default train)")
        parser.add_argument(
            "--reference-images", type=int, help="reference images drawn from the split (default: all of them)"
        )
        parser.add_argument("--reference-seed", type=int, default=0, help="seed of that draw (default 0)")
    if clip:
        parser.add_argument("--clip", required=True, help="Hugging Face CLIP checkpoint directory (local or gs://)")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="images per global batch (default 64)")
    if progress:  # (coco has it from sample's options)
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parsers(eval_parser) -> None:
    """Adds fid, clip and coco under `imagen-jax eval`."""
    metrics = eval_parser.add_subparsers(dest="metric", metavar="{fid,clip,coco}")
    common = dict(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    fid = metrics.add_parser("fid", help="FID of images against a dataset's (or saved) statistics", **common)
    fid.add_argument("--images", action="append", default=[], help="a folder, a glob or a file (repeatable)")
    fid.add_argument("--reference", required=True, help="a dataset name (its split's images) or a statistics .npz")
    fid.add_argument("--resolution", type=int, help="reference images' side (default: that of --images)")
    _add_common(fid, fid=True, clip=False)
    fid.add_argument("--output", default="eval_fid.json", help="JSON to write (default eval_fid.json)")

    clip = metrics.add_parser("clip", help="CLIP score of images against their prompts", **common)
    clip.add_argument("--images", action="append", default=[], help="a folder, a glob or a file (repeatable)")
    clip.add_argument("--prompts", help="text file, one prompt per line (image i <-> line i)")
    clip.add_argument("--manifest", help="sample's manifest.jsonl (or a JSON list of {image, prompt})")
    _add_common(clip, fid=False, clip=True)
    clip.add_argument("--output", default="eval_clip.json", help="JSON to write (default eval_clip.json)")

    coco = metrics.add_parser("coco", help="the zero-shot protocol: captions -> cascade -> FID and CLIP", **common)
    from imagen_jax.commands.sample import add_output_arguments

    coco.add_argument("--workdir", action="append", required=True, help="a stage's workdir; repeat, base first")
    coco.add_argument("--dataset", required=True, help="the dataset whose captions and images are used")
    coco.add_argument("--num-samples", type=int, default=30000, help="captions drawn (default 30000, FID-30K)")
    coco.add_argument("--caption-seed", type=int, default=0, help="seed of the caption draw (default 0)")
    add_output_arguments(coco)
    _add_common(coco, fid=True, clip=True, progress=False)
    coco.set_defaults(accepts_config_overrides=True)
    coco.add_argument("--output", help="JSON to write (default <out>/eval_coco.json)")


def image_files(items: list[str]) -> list[str]:
    """Files of --images items: folders (their images, natural order), globs (sorted), files."""
    from imagen_jax.eval.image_io import IMAGE_SUFFIXES, list_images

    files = []
    for item in items:
        if any(c in item for c in "*?["):
            found = [f for f in storage.glob(item) if f.lower().endswith(IMAGE_SUFFIXES)]
            if not found:
                raise FileNotFoundError(f"No images match {item!r}.")
            files += found
        elif storage.path(item).is_dir():
            files += list_images(item)
        elif storage.path(item).exists():
            files.append(item)
        else:
            raise FileNotFoundError(f"--images {item!r} is not a folder, a glob or a file.")
    return files


def _resolution_of(path: str) -> int:
    from imagen_jax.eval.image_io import read_image

    image = read_image(path)
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"{path!r} is {image.shape[1]}x{image.shape[0]}; give --resolution for the reference images.")
    return image.shape[0]


def _dataset_options(args) -> dict:
    return dict(data_dir=args.data_dir, split=args.split, max_images=args.reference_images, seed=args.reference_seed)


def _fid(args, paths: list[str], resolution: int | None, reference: str) -> dict:
    """FID of `paths` against `reference` (a dataset name or a statistics .npz)."""
    from imagen_jax.eval.scoring import FidScorer

    scorer = FidScorer(args.inception_weights, batch_size=args.eval_batch_size)
    is_file = reference.endswith(".npz")
    resolution = resolution or (_resolution_of(paths[0]) if paths else None)
    if not is_file and resolution is None:
        raise ValueError("Without --images, give --resolution: the side the reference images are resized to.")
    options = {} if is_file else _dataset_options(args)
    statistics, where = scorer.reference(reference, resolution=resolution, progress=not args.no_progress, **options)
    result = {
        "reference": reference,
        "reference_statistics": where,
        "reference_images": statistics.count,
        "resolution": resolution,
        "inception_weights": args.inception_weights,
        "inception_fingerprint": scorer.fingerprint,
        **({} if is_file else {"split": args.split, "reference_seed": args.reference_seed}),
    }
    if paths:
        result.update(scorer.score(paths, statistics, progress=not args.no_progress))
    return result


def _clip(args, paths: list[str], prompts: list[str]) -> dict:
    from imagen_jax.eval.scoring import ClipScorer

    scorer = ClipScorer(args.clip, batch_size=args.eval_batch_size)
    return {"clip": args.clip, **scorer.score(paths, prompts, progress=not args.no_progress)}


def _manifest_pairs(args) -> tuple[list[str], list[str]]:
    from imagen_jax.commands.eval import _read_manifest, _read_prompts

    if args.manifest:
        return _read_manifest(args.manifest)
    if not (args.images and args.prompts):
        raise ValueError("clip needs --images and --prompts FILE (image i <-> line i), or --manifest.")
    paths, prompts = image_files(args.images), _read_prompts(args.prompts)
    if len(paths) != len(prompts):
        raise ValueError(f"{len(paths)} images but {len(prompts)} prompts; give one prompt line per image.")
    return paths, prompts


def _coco(args) -> dict:
    from imagen_jax.commands.sample import open_cascade, stage_sizes, write_cascade_outputs
    from imagen_jax.data.sources import open_source
    from imagen_jax.eval.reference import draw_captions, draw_indices

    records = open_source(args.dataset, split=args.split, data_dir=args.data_dir)
    indices = draw_indices(len(records), args.num_samples, args.caption_seed)
    prompts = draw_captions(records, indices)
    resolution = stage_sizes(args)[-1][0]
    cascade, overrides = open_cascade(args)

    def batches(skip):
        options = dict(seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress, skip=skip)
        return cascade.sample_batches(prompts, **options)

    protocol = dict(dataset=args.dataset, split=args.split, captions=len(prompts), caption_seed=args.caption_seed)
    write_cascade_outputs(args, cascade, overrides, prompts, batches, extra_settings={"coco": protocol})
    cascade = None  # the stages' params: freed before the evaluation networks load
    from imagen_jax.commands.eval import _read_manifest

    paths, written_prompts = _read_manifest(storage.join(args.out, "manifest.jsonl"))
    settings = json.loads(storage.read_text(storage.join(args.out, "settings.json")))
    return {
        "protocol": protocol,
        "sampling": settings,
        "fid": _fid(args, paths, resolution, args.dataset),
        "clip_score": _clip(args, paths, written_prompts),
    }


def run(args) -> int:
    from imagen_jax.eval.report import write_json

    if args.metric == "fid":
        result = _fid(args, image_files(args.images), args.resolution, args.reference)
        summary = f"FID {result['fid']:.3f}" if "fid" in result else "reference statistics ready"
        summary += f" ({result.get('images', 0)} images vs {result['reference_images']} reference)"
    elif args.metric == "clip":
        result = _clip(args, *_manifest_pairs(args))
        summary = f"CLIP score {result['clip_score']:.3f} over {result['images']} images"
    else:
        result = _coco(args)
        summary = (
            f"FID {result['fid']['fid']:.3f}, CLIP score {result['clip_score']['clip_score']:.3f} "
            f"({result['fid']['images']} samples)"
        )
        args.output = args.output or storage.join(args.out, "eval_coco.json")
    import jax

    if jax.process_index() == 0:
        print(summary)
        write_json(result, args.output)
        print(f"wrote {args.output}")
    return 0
