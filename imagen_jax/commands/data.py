"""`imagen-jax data`: prepare the shapes dataset, import user images, inspect a dataset.

  imagen-jax data shapes --resolution 64 [--num-train N --num-test M --seed S --data-dir D]
  imagen-jax data import SOURCE --name NAME [--test-size N --max-size S --image-column C ...]
  imagen-jax data import 'gs://B/shards/{00000..00099}.tar' --name NAME [--runner R --min-image-side S ...]
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
    from imagen_jax.data.web_filters import ImportFilters

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
        "import",
        help="import img2dataset shards (.tar / .parquet, local or gs://), a folder of images + .txt captions, "
        "or a .csv/.jsonl of (path, caption)",
    )
    imports.add_argument(
        "source", nargs="+", help="shards (paths, globs, {00000..00099} ranges), or one folder / .csv / .jsonl"
    )
    imports.add_argument("--name", required=True, help="TFDS dataset name (lower_snake_case)")
    imports.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    imports.add_argument(
        "--image-column",
        default=None,
        help="table column of image paths (default path), parquet column of image bytes (default jpg)",
    )
    imports.add_argument("--caption-column", default=None, help="table / parquet column of captions (default caption)")
    imports.add_argument("--max-size", type=int, default=None, help="reduce the shorter side to this (pixels)")
    imports.add_argument("--num-workers", type=int, default=None, help="decode processes (default: all CPUs)")
    imports.add_argument("--overwrite", action="store_true", help="replace an existing dataset of this name")
    folder = imports.add_argument_group("folder and table imports")
    folder.add_argument("--test-size", type=int, default=0, help="images held out as a 'test' split")
    folder.add_argument("--seed", type=int, default=0, help="seed choosing the test images")
    web = imports.add_argument_group("shard imports (img2dataset output)")
    web.add_argument(
        "--runner",
        default=None,
        help="Apache Beam runner: DirectRunner (local, --num-workers processes), DataflowRunner, FlinkRunner, ...; "
        "inprocess (no Beam); default: DirectRunner if Beam is installed, else inprocess (the same dataset)",
    )
    web.add_argument(
        "--pipeline-options",
        default=None,
        help="more Beam options, one string: --pipeline-options='--project=P --region=R --temp_location=gs://B/tmp'",
    )
    web.add_argument("--test-shards", type=int, default=None, help="the last N shards form a 'test' split")
    filters = ImportFilters()
    for flag, kind, unit in (
        ("--min-image-side", int, "pixels of the shorter side, stored and original; 0: none"),
        ("--max-aspect-ratio", float, "longer / shorter side; 0: none"),
        ("--min-caption-length", int, "characters"),
        ("--max-caption-length", int, "characters; 0: none"),
    ):
        default = getattr(filters, flag[2:].replace("-", "_"))
        web.add_argument(flag, type=kind, default=None, help=f"{unit} (default {default})")
    web.add_argument("--no-dedup", action="store_true", default=None, help="keep exact duplicate images")
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


_SHARD_OPTIONS = ("runner", "pipeline_options", "test_shards", "min_image_side", "max_aspect_ratio")
_SHARD_OPTIONS += ("min_caption_length", "max_caption_length", "no_dedup")


def _is_shard_import(sources: list[str]) -> bool:
    from imagen_jax.data.web_shards import is_shard

    if len(sources) == 1 and not is_shard(sources[0]) and not any(c in sources[0] for c in "*?[{"):
        return False
    return True


def run_import(args: argparse.Namespace) -> int:
    log_to_stderr(logging.INFO, "%(levelname)s: %(message)s")
    if _is_shard_import(args.source):
        return _run_shard_import(args)
    from imagen_jax.data.importer import import_dataset

    given = [option for option in _SHARD_OPTIONS if getattr(args, option) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ValueError(f"{flag} applies to shard imports (.tar / .parquet) only, not to a folder or a table.")
    builder, report = import_dataset(
        args.source[0],
        name=args.name,
        data_dir=args.data_dir,
        image_column=args.image_column or "path",
        caption_column=args.caption_column or "caption",
        test_size=args.test_size,
        seed=args.seed,
        max_size=args.max_size,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
    )
    print(report.summary())
    print(f"Dataset {args.name} is ready in {builder.data_dir}")
    return 0


def _run_shard_import(args: argparse.Namespace) -> int:
    import shlex

    from imagen_jax.data.web_filters import ImportFilters
    from imagen_jax.data.web_import import import_shards

    if args.test_size or args.seed:
        raise ValueError("Shard imports hold out whole shards: use --test-shards N instead of --test-size / --seed.")
    given = {field: getattr(args, field) for field in ("min_image_side", "max_aspect_ratio")}
    given |= {field: getattr(args, field) for field in ("min_caption_length", "max_caption_length")}
    given |= {"dedup": False if args.no_dedup else None, "max_size": args.max_size}
    filters = ImportFilters(**{field: value for field, value in given.items() if value is not None})
    builder, report = import_shards(
        args.source,
        name=args.name,
        data_dir=args.data_dir,
        filters=filters,
        test_shards=args.test_shards or 0,
        image_column=args.image_column,
        caption_column=args.caption_column,
        runner=args.runner or "auto",
        num_workers=args.num_workers,
        pipeline_options=shlex.split(args.pipeline_options or ""),
        overwrite=args.overwrite,
    )
    print(report.summary())
    print(f"Dataset {args.name} is ready in {builder.data_dir} (counts in import_report.json there)")
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
