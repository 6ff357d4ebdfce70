"""`imagen-jax eval`: FID and CLIP score; prompt accuracy and SR fidelity on the shapes dataset.

  imagen-jax eval fid --images DIR_OR_GLOB --reference DATASET_OR_NPZ --inception-weights FILE
  imagen-jax eval clip --images DIR_OR_GLOB --prompts prompts.txt --clip CLIP_DIR   (or --manifest)
  imagen-jax eval coco --workdir base --workdir sr --dataset NAME --num-samples 30000 \
      --out samples/ --inception-weights FILE --clip CLIP_DIR     captions -> cascade -> FID + CLIP
  (each: imagen-jax eval fid --help)

  imagen-jax eval --images DIR --prompts prompts.txt    image i (natural file order) <-> line i
  imagen-jax eval --manifest manifest.json              [{"image": path, "prompt": text}, ...]
                                                        (or manifest.jsonl: one object per line)
  imagen-jax eval --dataset-check N [--resolution 32]   self-test on N true dataset images
  imagen-jax eval --sr-images DIR --high-res DIR --low-res DIR   SR vs bicubic (same file names)
Prints a table; --output writes the JSON (default eval.json). Manifest paths are
relative to the manifest's folder; it may also be {"images": [...], "prompts": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os

from imagen_jax import storage

_MODES = ("images", "manifest", "dataset_check", "sr_images")


def add_parser(subparsers) -> None:
    """Registers `eval` on the `imagen-jax` parser."""
    parser = subparsers.add_parser(
        "eval",
        help="score images against shapes prompts (prompt accuracy) and SR outputs against true images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", help="folder of images, scored against --prompts")
    parser.add_argument("--prompts", help="text file, one prompt per line (image i <-> line i)")
    parser.add_argument("--manifest", help="JSON list of {image, prompt} (or {images: [...], prompts: [...]})")
    parser.add_argument("--dataset-check", type=int, metavar="N", help="score N true shapes-dataset images")
    parser.add_argument("--resolution", type=int, default=32, help="--dataset-check image side (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="--dataset-check dataset seed (default 0)")
    parser.add_argument("--split", default="test", help="--dataset-check split (default test)")
    parser.add_argument("--sr-images", help="folder of SR outputs")
    parser.add_argument("--high-res", help="folder of the true high-res images (same file names as --sr-images)")
    parser.add_argument("--low-res", help="folder of the low-res SR inputs (same file names)")
    parser.add_argument("--per-image", action="store_true", help="add each image's outcome to the JSON")
    parser.add_argument("--output", default="eval.json", help="JSON file to write (default eval.json)")
    parser.set_defaults(run=run)
    from imagen_jax.commands import eval_metrics

    eval_metrics.add_parsers(parser)


def _read_prompts(path: str) -> list[str]:
    return [line.strip() for line in storage.read_text(path).splitlines() if line.strip()]


def _read_manifest(path: str) -> tuple[list[str], list[str]]:
    text = storage.read_text(path)
    if str(path).endswith(".jsonl"):  # imagen-jax sample's: one {"image", "prompt", ...} per line
        manifest = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        manifest = json.loads(text)
    if isinstance(manifest, dict) and {"images", "prompts"} <= manifest.keys():
        paths, prompts = list(manifest["images"]), list(manifest["prompts"])
    elif isinstance(manifest, list) and all(isinstance(e, dict) and {"image", "prompt"} <= e.keys() for e in manifest):
        paths, prompts = [e["image"] for e in manifest], [e["prompt"] for e in manifest]
    else:
        raise ValueError(
            f'Manifest {path!r} must be a JSON list of {{"image": path, "prompt": text}} objects '
            f'or an object {{"images": [...], "prompts": [...]}}.'
        )
    folder = storage.path(path).parent
    return [os.fspath(folder / p) for p in paths], prompts


def _load_pairs(args) -> tuple[list, list[str]]:
    from imagen_jax.eval.dataset_check import dataset_images
    from imagen_jax.eval.image_io import list_images, read_image

    if args.dataset_check is not None:
        images, prompts = dataset_images(args.dataset_check, args.resolution, seed=args.seed, split=args.split)
        return list(images), prompts
    if args.manifest:
        paths, prompts = _read_manifest(args.manifest)
    else:
        if not args.prompts:
            raise ValueError("--images needs --prompts FILE (one prompt per line, image i <-> line i).")
        paths, prompts = list_images(args.images), _read_prompts(args.prompts)
        if len(paths) != len(prompts):
            raise ValueError(
                f"{len(paths)} images in {args.images!r} but {len(prompts)} prompts in {args.prompts!r}; "
                f"give one prompt line per image."
            )
    return [read_image(p) for p in paths], prompts


def _load_sr(args):
    import numpy as np

    from imagen_jax.eval.image_io import list_images, read_image

    if not (args.high_res and args.low_res):
        raise ValueError("--sr-images needs --high-res DIR and --low-res DIR (same file names in all three).")
    names = [storage.name(p) for p in list_images(args.sr_images)]
    folders = (args.sr_images, args.high_res, args.low_res)
    missing = [storage.join(d, n) for d in folders[1:] for n in names if not storage.path(storage.join(d, n)).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} matching files missing, e.g. {missing[0]!r}; name them as in --sr-images."
        )
    return [np.stack([read_image(storage.join(d, n)) for n in names]) for d in folders]


def run(args: argparse.Namespace) -> int:
    if getattr(args, "metric", None):
        from imagen_jax.commands import eval_metrics

        return eval_metrics.run(args)
    from imagen_jax.eval.prompt_accuracy import prompt_accuracy
    from imagen_jax.eval.report import accuracy_table, fidelity_table, write_json
    from imagen_jax.eval.sr_fidelity import sr_fidelity

    modes = [m for m in _MODES if getattr(args, m) is not None]
    if len(modes) != 1:
        raise ValueError("choose exactly one of --images, --manifest, --dataset-check, --sr-images.")
    if modes[0] == "sr_images":
        result = {"sr_fidelity": sr_fidelity(*_load_sr(args))}
        table = fidelity_table(result["sr_fidelity"])
    else:
        images, prompts = _load_pairs(args)
        accuracy = prompt_accuracy(images, prompts, per_image=args.per_image)
        result = {"prompt_accuracy": accuracy}
        table = accuracy_table(accuracy)
        if args.dataset_check is not None:
            result["dataset_check"] = {"resolution": args.resolution, "seed": args.seed, "split": args.split}
    print(table)
    write_json(result, args.output)
    print(f"wrote {args.output}")
    return 0
