"""`imagen-jax embed`: encode a prepared TFDS dataset's captions once into the embedding cache.

The cache of split S goes to <dataset_dir>/text_embeddings/<encoder_name>/<S>/, where
<dataset_dir> is the dataset's prepared version directory (the one holding dataset_info.json),
e.g. ~/tensorflow_datasets/shapes/1.0.0/text_embeddings/tiny-random-byt5/train/ for the train
split of ~/tensorflow_datasets/shapes/1.0.0 encoded with the built-in encoder.
TensorFlow is not needed: the records are read with TFDS's ArrayRecord data source, with
every feature other than the caption left undecoded.

On a pod, run the same command on every host (launch/tpu_train.sh runs commands that way):
the encoder's params are FSDP-sharded over all devices of all hosts, each host encodes its
share of the captions (files p, p + P, ... of the cache) and every batch runs on all
devices. An interrupted run resumes: the cache is written file by file (each committed
whole) and a rerun writes only the missing files. A complete cache is left as it is.
"""

from __future__ import annotations

import argparse

from imagen_jax.text.builtin import TINY_RANDOM_BYT5
from imagen_jax.text.embedding_cache import (
    CACHE_DTYPES,
    caption_records,
    embedding_cache_dir,
    write_embedding_cache,
)
from imagen_jax.text.encoder import DEFAULT_MAX_LENGTH


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="encode a dataset's captions with the text encoder and cache the embeddings beside it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset-dir", help="prepared TFDS dataset version directory (holds dataset_info.json)")
    source.add_argument("--dataset", help="TFDS dataset name[/config][:version], found under --data-dir")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory for --dataset (default: TFDS's)")
    parser.add_argument("--splits", default=None, help="comma-separated splits (default: all)")
    parser.add_argument(
        "--encoder", default=TINY_RANDOM_BYT5, help="built-in encoder name, Hugging Face T5 directory, or hub id"
    )
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="tokens per caption")
    parser.add_argument("--batch-size", type=int, default=256, help="captions per encoder call on each host")
    parser.add_argument("--dtype", choices=sorted(CACHE_DTYPES), default="float16", help="stored embedding dtype")
    parser.add_argument("--caption-key", default="caption", help="feature holding the caption text")
    parser.add_argument(
        "--records-per-file", type=int, default=100_000, help="captions per cache file (the unit of resumption)"
    )
    parser.add_argument(
        "--mesh-fsdp",
        type=int,
        default=-1,
        help="devices each encoder param is split over (default -1: all; 1: replicated, batch split only)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete an existing (or partly written) cache and write it anew"
    )
    parser.set_defaults(run=run)


def _builder(args):
    import tensorflow_datasets as tfds

    if args.dataset_dir:
        return tfds.builder_from_directory(args.dataset_dir)
    return tfds.builder(args.dataset, data_dir=args.data_dir)


def run(args) -> int:
    import jax

    from imagen_jax.parallel import initialize, make_mesh
    from imagen_jax.text.encoder import load_text_encoder

    initialize()
    builder = _builder(args)
    available = list(builder.info.splits)
    splits = args.splits.split(",") if args.splits else available
    unknown = sorted(set(splits) - set(available))
    if unknown:
        raise ValueError(f"Unknown split(s) {unknown}; the dataset has {available}.")
    mesh = make_mesh(data=1 if args.mesh_fsdp == -1 else -1, fsdp=args.mesh_fsdp)
    encoder = load_text_encoder(args.encoder, max_length=args.max_length, mesh=mesh)
    for split in splits:
        out_dir = embedding_cache_dir(str(builder.data_dir), encoder.name, split)
        metadata = write_embedding_cache(
            caption_records(builder, split, args.caption_key),
            encoder,
            out_dir,
            caption_key=args.caption_key,
            batch_size=args.batch_size,
            dtype=args.dtype,
            records_per_file=args.records_per_file,
            overwrite=args.overwrite,
            progress=jax.process_index() == 0,
        )
        if jax.process_index() == 0:
            print(f"{split}: {metadata['count']} captions -> {out_dir}")
    return 0
