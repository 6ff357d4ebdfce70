"""`imagen-jax data`: prepare the shapes dataset, import user images, inspect a dataset.

  imagen-jax data shapes --resolution 64 [--num-train N --num-test M --seed S --data-dir D]
  imagen-jax data import SOURCE --name NAME [--test-size N --max-size S --image-column C ...]
  imagen-jax data info NAME [--split train --count 5]
Datasets live in --data-dir, default $IMAGEN_JAX_DATA_DIR or ~/imagen_jax_data.
"""

from __future__ import annotations

import argparse
import logging

from imagen_jax.cli import log_to_stderr
from imagen_jax.data.sources import DATA_DIR_ENV, DEFAULT_DATA_DIR

_DATA_DIR_HELP = f"dataset folder (default: ${DATA_DIR_ENV} or {DEFAULT_DATA_DIR})"


def add_parser(subparsers) -> None:
    """Registers `data` and its subcommands on the `imagen-jax` parser."""
    from imagen_jax.data.shapes_builder import (
        DEFAULT_NUM_TEST,
        DEFAULT_NUM_TRAIN,
        DEFAULT_SEED,
    )

    parser = subparsers.add_parser("data", help="prepare, import and inspect datasets")
    commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    shapes = commands.add_parser("shapes", help="generate the built-in shapes dataset (TFDS ArrayRecord)")
    shapes.add_argument("--resolution", type=int, default=64, help="image side in pixels (default 64)")
    shapes.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    shapes.add_argument("--num-test", type=int, default=DEFAULT_NUM_TEST)
    shapes.add_argument("--seed", type=int, default=DEFAULT_SEED)
    shapes.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    shapes.add_argument("--num-workers", type=int, default=None, help="render processes (default: all CPUs)")
    shapes.set_defaults(run=run_shapes)

    imports = commands.add_parser(
        "import", help="import a folder of images + .txt captions, or a .csv/.jsonl of (path, caption)"
    )
    imports.add_argument("source", help="folder, .csv or .jsonl")
    imports.add_argument("--name", required=True, help="TFDS dataset name (lower_snake_case)")
    imports.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    imports.add_argument("--image-column", default="path", help="table column of image paths")
    imports.add_argument("--caption-column", default="caption", help="table column of captions")
    imports.add_argument("--test-size", type=int, default=0, help="images held out as a 'test' split")
    imports.add_argument("--seed", type=int, default=0, help="seed choosing the test images")
    imports.add_argument("--max-size", type=int, default=None, help="reduce the shorter side to this (pixels)")
    imports.add_argument("--num-workers", type=int, default=None, help="decode processes (default: all CPUs)")
    imports.add_argument("--overwrite", action="store_true", help="replace an existing dataset of this name")
    imports.set_defaults(run=run_import)

    info = commands.add_parser("info", help="show a prepared dataset's splits, features and first captions")
    info.add_argument("name", help="TFDS name, e.g. imagen_shapes/64px or my_photos")
    info.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    info.add_argument("--split", default="train")
    info.add_argument("--text-key", default="caption")
    info.add_argument("--count", type=int, default=5, help="captions to print")
    info.set_defaults(run=run_info)


def run_shapes(args: argparse.Namespace) -> int:
    from imagen_jax.data.shapes_builder import prepare_shapes

    builder = prepare_shapes(
        args.resolution,
        seed=args.seed,
        num_train=args.num_train,
        num_test=args.num_test,
        data_dir=args.data_dir,
        num_workers=args.num_workers,
    )
    print(f"Shapes dataset imagen_shapes/{builder.builder_config.name} is ready in {builder.data_dir}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from imagen_jax.data.importer import import_dataset

    log_to_stderr(logging.INFO, "%(levelname)s: %(message)s")
    builder, report = import_dataset(
        args.source,
        name=args.name,
        data_dir=args.data_dir,
        image_column=args.image_column,
        caption_column=args.caption_column,
        test_size=args.test_size,
        seed=args.seed,
        max_size=args.max_size,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
    )
    print(report.summary())
    print(f"Dataset {args.name} is ready in {builder.data_dir}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from imagen_jax.data.sources import data_source, get_path, open_builder
    from imagen_jax.data.transforms import caption_text

    builder = open_builder(args.name, data_dir=args.data_dir, prepare_shapes=False)
    print(f"{args.name} in {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  split {split}: {info.num_examples} records")
    print(f"  features: {builder.info.features}")
    source = data_source(builder, args.split)
    for index in range(min(args.count, len(source))):
        print(f"  [{index}] {caption_text(get_path(source[index], args.text_key))}")
    return 0
