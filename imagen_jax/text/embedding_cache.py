"""Offline text-embedding cache (design.md §2: "embeddings may be precomputed offline").

Captions are encoded once and stored beside the dataset, so training never runs T5 per step.

Layout of a cache directory:
  metadata.json                                  {"format", "version", "encoder_name", "dim",
                                                  "max_length", "dtype", "count", "files"}
  text_embeddings-00000-of-0000N.array_record    one record per caption, in the records' order

Record i holds only the unmasked tokens of caption i: the raw little-endian bytes of an
array [n_i, dim] in `dtype` (float16 or bfloat16), n_i = number of unmasked tokens.
The cache directory may be local or gs://. It is written in a local staging folder
(ArrayRecord writes local files) that replaces the directory at the end, metadata.json
last (storage.staged_dir), so an interrupted run never leaves a directory that looks
complete. It is read through storage.local_view (a gcsfuse mount for gs://).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from imagen_jax import storage

CACHE_FORMAT = "imagen_jax.text_embeddings"
CACHE_VERSION = 1
METADATA_FILE = "metadata.json"
CACHE_DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
EMBEDDING_KEY = "text_embedding"


def embedding_cache_dir(dataset_dir: str, encoder_name: str, split: str) -> str:
    """Where `imagen-jax embed` puts a split's cache: <dataset_dir>/text_embeddings/<encoder_name>/<split>.

    `dataset_dir` is the prepared TFDS dataset's version directory (the one holding dataset_info.json).
    """
    return storage.join(dataset_dir, "text_embeddings", encoder_name, split)


def _caption(record: Any, caption_key: str, index: int) -> str:
    try:
        caption = record[caption_key]
    except (KeyError, TypeError, IndexError) as e:
        keys = list(record) if isinstance(record, dict) else type(record).__name__
        raise KeyError(f"Record {index} has no caption key {caption_key!r} (it has {keys}); pass caption_key=.") from e
    caption = caption.item() if isinstance(caption, np.ndarray) else caption
    if isinstance(caption, bytes):
        return caption.decode("utf-8")
    if not isinstance(caption, str):
        raise TypeError(f"Record {index}'s {caption_key!r} is {type(caption).__name__}; captions must be str or bytes.")
    return caption


def _encoded_batches(records, encoder, caption_key: str, batch_size: int) -> Iterator[tuple]:
    """(embeddings [batch_size, L, D] float32, mask [batch_size, L] bool, n_real) per batch, in order.

    Records are read a batch at a time (`__getitems__` where the source has it, as TFDS and
    grain sources do). Every batch has the same shape (the last one is padded with empty
    captions) so the encoder compiles once; the next batch is dispatched before the current
    one is copied to the host.
    """
    pending = None
    for start in range(0, len(records), batch_size):
        indices = range(start, min(start + batch_size, len(records)))
        batch = (
            records.__getitems__(list(indices)) if hasattr(records, "__getitems__") else [records[i] for i in indices]
        )
        captions = [_caption(record, caption_key, i) for i, record in zip(indices, batch)]
        n_real = len(captions)
        embeddings, mask = encoder.encode(captions + [""] * (batch_size - n_real))
        if pending is not None:
            yield np.asarray(pending[0]), np.asarray(pending[1]), pending[2]
        pending = (embeddings, mask, n_real)
    if pending is not None:
        yield np.asarray(pending[0]), np.asarray(pending[1]), pending[2]


def write_embedding_cache(
    records: Sequence[Any],
    encoder,
    out_dir: str,
    *,
    caption_key: str = "caption",
    batch_size: int = 256,
    dtype: str = "float16",
    records_per_file: int = 100_000,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Encodes every record's caption with `encoder` (a TextEncoder) and writes the cache to out_dir.

    records: random-access sequence (len + __getitem__) of dicts whose `caption_key` is str or bytes.
    Returns the metadata written to out_dir/metadata.json.
    """
    from array_record.python.array_record_module import ArrayRecordWriter
    from tqdm.auto import tqdm

    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not a cache dtype; use one of {sorted(CACHE_DTYPES)}.")
    if batch_size <= 0 or records_per_file <= 0:
        raise ValueError(f"batch_size ({batch_size}) and records_per_file ({records_per_file}) must be positive.")
    out_dir = os.fspath(storage.path(out_dir))
    if storage.path(out_dir).exists() and not overwrite:
        raise FileExistsError(
            f"An embedding cache already exists at {out_dir}; pass overwrite=True (--overwrite) to replace it."
        )
    count = len(records)
    if count == 0:
        raise ValueError("No records to encode: the dataset split is empty.")
    np_dtype = CACHE_DTYPES[dtype]
    num_files = -(-count // records_per_file)
    files = [f"text_embeddings-{i:05d}-of-{num_files:05d}.array_record" for i in range(num_files)]

    writer, written = None, 0
    with storage.staged_dir(out_dir, last=(METADATA_FILE,)) as tmp_dir:
        try:
            with tqdm(total=count, unit="caption", desc=f"embed ({encoder.name})", disable=not progress) as bar:
                for embeddings, mask, n_real in _encoded_batches(records, encoder, caption_key, batch_size):
                    for row in range(n_real):
                        if written % records_per_file == 0:
                            if writer is not None:
                                writer.close()
                            path = os.path.join(tmp_dir, files[written // records_per_file])
                            writer = ArrayRecordWriter(path, "group_size:1")
                        n = int(mask[row].sum())
                        if not mask[row, :n].all():
                            raise ValueError("The text encoder's mask is not right-padded; the cache stores prefixes.")
                        tokens = embeddings[row, :n].astype(np_dtype)
                        if not np.isfinite(tokens.astype(np.float32)).all():
                            raise FloatingPointError(
                                f"Caption {written}'s embedding is not finite in {dtype} (values up to "
                                f"{np.abs(embeddings[row, :n]).max():.3g}); use dtype='bfloat16'."
                            )
                        writer.write(np.ascontiguousarray(tokens).tobytes())
                        written += 1
                    bar.update(n_real)
        finally:
            if writer is not None:
                writer.close()
        metadata = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "encoder_name": encoder.name,
            "dim": int(encoder.dim),
            "max_length": int(encoder.max_length),
            "dtype": dtype,
            "count": count,
            "files": files,
        }
        with open(os.path.join(tmp_dir, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2)
    return metadata


def read_cache_metadata(cache_dir: str) -> dict[str, Any]:
    path = storage.path(cache_dir) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"No text-embedding cache at {cache_dir} (no {METADATA_FILE}). Write it with `imagen-jax embed` "
            "(or write_embedding_cache)."
        )
    metadata = json.loads(path.read_text())
    if metadata.get("format") != CACHE_FORMAT or metadata.get("version") != CACHE_VERSION:
        raise ValueError(
            f"{path} is not a version-{CACHE_VERSION} {CACHE_FORMAT} cache; "
            "rewrite it with `imagen-jax embed --overwrite`."
        )
    return metadata


class EmbeddingCacheSource:
    """Grain-compatible random-access source over a cache directory.

    len(src) == number of records; src[i] == {"text_embedding": [n_i, dim] float16 or bfloat16}
    in the order of the records it was written from. Picklable (for grain worker processes).
    A gs:// cache is read through its gcsfuse mount (storage.local_view).
    """

    def __init__(self, cache_dir: str):
        from array_record.python.array_record_data_source import ArrayRecordDataSource

        self.cache_dir = os.fspath(storage.path(cache_dir))
        self.metadata = read_cache_metadata(self.cache_dir)
        self._dtype = CACHE_DTYPES[self.metadata["dtype"]]
        local = storage.local_view(self.cache_dir)
        self._records = ArrayRecordDataSource([os.path.join(local, f) for f in self.metadata["files"]])
        if len(self._records) != self.metadata["count"]:
            raise ValueError(
                f"{self.cache_dir} holds {len(self._records)} records but its metadata says {self.metadata['count']}; "
                "rewrite it with `imagen-jax embed --overwrite`."
            )

    @property
    def dim(self) -> int:
        return self.metadata["dim"]

    @property
    def max_length(self) -> int:
        return self.metadata["max_length"]

    @property
    def encoder_name(self) -> str:
        return self.metadata["encoder_name"]

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __len__(self) -> int:
        return self.metadata["count"]

    def _decode(self, data: bytes) -> dict[str, np.ndarray]:
        return {EMBEDDING_KEY: np.frombuffer(data, self._dtype).reshape(-1, self.dim)}

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for an embedding cache of {len(self)} records")
        return self._decode(self._records[index % len(self)])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [self._decode(data) for data in self._records.__getitems__([int(i) for i in indices])]

    def __repr__(self) -> str:
        return (
            f"EmbeddingCacheSource({self.cache_dir!r}, count={len(self)}, encoder={self.encoder_name!r}, "
            f"dim={self.dim}, max_length={self.max_length}, dtype={self.metadata['dtype']})"
        )


def caption_records(builder, split: str, caption_key: str):
    """Random-access records of one split with only `caption_key` decoded."""
    import tensorflow_datasets as tfds

    from imagen_jax.data.sources import data_source

    features = builder.info.features
    if caption_key not in features:
        raise ValueError(f"The dataset has no feature {caption_key!r} (it has {sorted(features)}); pass --caption-key.")
    # Images stay undecoded (the costly part); nested features (dicts, sequences) cannot take
    # SkipDecoding and are small, so they are decoded.
    skip = {
        name: tfds.decode.SkipDecoding()
        for name, feature in features.items()
        if name != caption_key and isinstance(feature, tfds.features.Image)
    }
    return data_source(builder, split, skip)
