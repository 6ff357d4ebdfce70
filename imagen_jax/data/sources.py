"""Random-access record sources: TFDS ArrayRecord datasets by name, plus text embeddings.

`open_source("imagen_shapes/64px", split="train")` returns a `tfds.data_source`-style
sequence of record dicts (len + __getitem__), which is what Grain reads. Images stored
as TFDS `Image` features are left encoded (bytes); the pipeline decodes them with PIL
after choosing a JPEG draft size, which is much faster than decoding at full size.

A data_dir may be local or gs:// (storage). TFDS reads a dataset's metadata there itself;
its records are ArrayRecord files, which are read at storage.local_view (a gs:// dataset at
its gcsfuse mount) and written in a local staging folder that is then uploaded
(`prepare_builder`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import tensorflow_datasets as tfds

from imagen_jax import storage

DATA_DIR_ENV = "IMAGEN_JAX_DATA_DIR"
DEFAULT_DATA_DIR = "~/imagen_jax_data"


class RandomAccessSource(Protocol):
    """What Grain needs: a length and records by index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """`data_dir`, else $IMAGEN_JAX_DATA_DIR, else ~/imagen_jax_data: gs:// as given, a local
    path absolute with ~ expanded (storage.path)."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return os.fspath(storage.path(chosen))


def prepare_builder(make_builder: Callable[[str], tfds.core.DatasetBuilder], data_dir: str) -> tfds.core.DatasetBuilder:
    """`make_builder(data_dir)` after TFDS's download_and_prepare. TFDS's ArrayRecord writer
    writes local files only, so for a gs:// data_dir the dataset is prepared under a local
    staging folder and uploaded, dataset_info.json (TFDS's mark of a prepared dataset) last."""
    config = tfds.download.DownloadConfig()
    if not storage.is_remote(data_dir):
        builder = make_builder(data_dir)
        builder.download_and_prepare(download_config=config)
        return builder
    with tempfile.TemporaryDirectory(prefix="imagen_jax_tfds_") as local:
        staged = make_builder(local)
        staged.download_and_prepare(download_config=config)
        storage.upload_tree(local, data_dir, last=("dataset_info.json",))
    return make_builder(data_dir)


def data_source(builder: tfds.core.DatasetBuilder, split: str, decoders=None) -> Sequence[dict]:
    """builder.as_data_source(split), its ArrayRecord files read at storage.local_view of the
    builder's folder (for a dataset on gs://, its gcsfuse mount)."""
    local = storage.local_view(builder.data_dir)
    if local != os.fspath(builder.data_dir):
        builder = tfds.builder_from_directory(local)
    return builder.as_data_source(split=split, decoders=decoders)


def get_path(tree: Any, key: str) -> Any:
    """tree['a']['b'] for key 'a/b' (TFDS nested features and decoded records)."""
    for part in key.split("/"):
        tree = tree[part]
    return tree


def _shapes_builder(name: str, data_dir: str, prepare: bool, num_workers: int | None):
    from imagen_jax.data.shapes_builder import (
        DATASET_NAME,
        ImagenShapes,
        parse_shapes_config_name,
    )

    config_name = name[len(DATASET_NAME) + 1 :] or "64px"

    def make_builder(directory: str) -> ImagenShapes:
        return ImagenShapes(
            config=parse_shapes_config_name(config_name),
            data_dir=directory,
            file_format="array_record",
            num_workers=num_workers or os.cpu_count() or 1,
        )

    builder = make_builder(data_dir)
    if not builder.is_prepared():
        if not prepare:
            raise FileNotFoundError(
                f"Shapes dataset {name!r} is not prepared in {data_dir}. Prepare it with "
                f"`imagen-jax data shapes --resolution {builder.builder_config.resolution} "
                f"--data-dir {data_dir}` (or set data.prepare_shapes=True)."
            )
        builder = prepare_builder(make_builder, data_dir)
    return builder


def open_builder(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    prepare_shapes: bool = True,
    num_workers: int | None = None,
) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of dataset `name` ('name' or 'name/config[:version]').

    The built-in `imagen_shapes/...` datasets are generated on first use when
    `prepare_shapes`; any other dataset must already be prepared under `data_dir`
    (never downloaded): an imported one, or a TFDS catalog dataset built as ArrayRecord.
    """
    from imagen_jax.data.shapes_builder import DATASET_NAME

    data_dir = resolve_data_dir(data_dir)
    if name == DATASET_NAME or name.startswith(DATASET_NAME + "/"):
        return _shapes_builder(name, data_dir, prepare_shapes, num_workers)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types (not found, bad config, ...)
        raise FileNotFoundError(
            f"Dataset {name!r} was not found in {data_dir} ({str(error).splitlines()[0]}). "
            "Import your images with `imagen-jax data import`, or prepare the TFDS dataset there "
            "with `tfds build NAME --data_dir DIR --file_format=array_record`."
        ) from None
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"Dataset {name!r} is not prepared in {data_dir}; nothing is downloaded here. Prepare it with "
            f"`tfds build {name} --data_dir {data_dir} --file_format=array_record`."
        )
    file_format = builder.info.file_format
    if file_format is None or file_format.value != "array_record":
        raise ValueError(
            f"Dataset {name!r} in {data_dir} is stored as {getattr(file_format, 'value', file_format)}, "
            "but Grain needs random access (ArrayRecord). Rebuild it with "
            f"`tfds build {name} --data_dir {data_dir} --file_format=array_record`."
        )
    return builder


def open_source(
    name: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    image_key: str = "image",
    prepare_shapes: bool = True,
) -> Sequence[dict]:
    """Random-access records of `split` ('train', 'test', 'train[:90%]', ...).

    Records are dicts of numpy values as decoded by TFDS, except `image_key` when it is
    an `Image` feature: then it stays the encoded image bytes.
    """
    builder = open_builder(name, data_dir=data_dir, prepare_shapes=prepare_shapes)
    features = builder.info.features
    try:
        image_feature = get_path(features, image_key)
    except KeyError:
        raise KeyError(
            f"Dataset {name!r} has no feature {image_key!r}; its features are {list(features.keys())}. "
            "Set data.image_key."
        ) from None
    decoders = None
    if isinstance(image_feature, tfds.features.Image):
        decoders = {}
        node = decoders
        *parents, leaf = image_key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tfds.decode.SkipDecoding()
    split_names = [part.split("[")[0].strip() for part in split.split("+")]
    if any(part not in builder.info.splits for part in split_names):
        raise KeyError(f"Dataset {name!r} has no split {split!r}; it has {list(builder.info.splits)}. Set data.split.")
    return data_source(builder, split, decoders)


class RecordsWithTextEmbeddings:
    """Record i of `records` with `text_embedding` [n_i, D] of `embeddings[i]` added.

    `embeddings` is any random-access source in the same index order as `records`, e.g.
    `imagen_jax.text.embedding_cache.EmbeddingCacheSource(dir)`; item i is a dict with
    'text_embedding' (only the unmasked tokens, float16/bfloat16/float32).
    """

    def __init__(self, records: RandomAccessSource, embeddings: RandomAccessSource):
        if len(records) != len(embeddings):
            raise ValueError(
                f"The text embedding cache has {len(embeddings)} entries but the dataset split has "
                f"{len(records)} records; rebuild the cache for this dataset and split."
            )
        self._records = records
        self._embeddings = embeddings

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict:
        record = dict(self._records[index])
        record["text_embedding"] = np.asarray(self._embeddings[index]["text_embedding"])
        return record

    def __repr__(self) -> str:
        return f"RecordsWithTextEmbeddings({self._records!r}, {self._embeddings!r})"
