"""Offline text-embedding cache (design.md §2: "embeddings may be precomputed offline").

Captions are encoded once and stored beside the dataset, so training never runs T5 per step.

Layout of a cache directory:
  metadata.json                                  {"format", "version", "encoder_name", "dim",
                                                  "max_length", "dtype", "count",
                                                  "records_per_file", "files"}
  text_embeddings-00000-of-0000N.array_record    one record per caption, in the records' order
  in_progress.json                               while it is written: the same settings

Record i holds only the unmasked tokens of caption i: the raw little-endian bytes of an
array [n_i, dim] in `dtype` (float16 or bfloat16), n_i = number of unmasked tokens.
The cache directory may be local or gs://. It is written by every process together, file
by file, each file committed whole (ArrayRecord writes a local file that is then renamed
or uploaded: storage.StagedFile), metadata.json last, so an interrupted run never leaves a
directory that looks complete and a rerun writes only the missing files. It is read
through storage.local_view (a gcsfuse mount for gs://).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_dtypes
import numpy as np

from imagen_jax import storage

CACHE_FORMAT = "imagen_jax.text_embeddings"
CACHE_VERSION = 1
METADATA_FILE = "metadata.json"
PROGRESS_FILE = "in_progress.json"  # the settings of a cache being written (removed when complete)
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


def _chunks(files: Sequence[int], records_per_file: int, count: int, batch_size: int) -> list[tuple[int, int, int]]:
    """(file, begin, end) record ranges of at most batch_size, file by file, in order."""
    out = []
    for k in files:
        first, last = k * records_per_file, min((k + 1) * records_per_file, count)
        out += [(k, b, min(b + batch_size, last)) for b in range(first, last, batch_size)]
    return out


def _read_captions(records, caption_key: str, begin: int, end: int) -> list[str]:
    """Captions of records [begin, end), read a batch at a time where the source can
    (`__getitems__`, as TFDS and grain sources have)."""
    indices = list(range(begin, end))
    batch = records.__getitems__(indices) if hasattr(records, "__getitems__") else [records[i] for i in indices]
    return [_caption(record, caption_key, i) for i, record in zip(indices, batch)]


def _process_max(value: int) -> int:
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _start_or_resume(out_dir: str, metadata: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Check `out_dir` against the cache to write (every process; process 0 changes files).
    Returns the existing metadata when the same cache is already complete; raises when a
    cache or partial cache with other settings is there (unless overwrite: then it is deleted)."""
    target = storage.path(out_dir)
    done, progress = target / METADATA_FILE, target / PROGRESS_FILE

    def same(saved: dict) -> bool:  # caches written before records_per_file was recorded: the default
        return {k: saved.get(k, 100_000 if k == "records_per_file" else None) for k in metadata} == metadata

    if overwrite and jax.process_index() == 0:
        storage.rmtree(out_dir)
    _barrier("embedding_cache_cleared")
    if done.exists():
        existing = json.loads(done.read_text())
        if same(existing):
            return existing
        raise FileExistsError(
            f"An embedding cache with other settings is at {out_dir} ({_difference(existing, metadata)}); "
            "pass overwrite=True (--overwrite) to replace it."
        )
    if progress.exists():
        saved = json.loads(progress.read_text())
        if not same(saved):
            raise FileExistsError(
                f"A partly written embedding cache with other settings is at {out_dir} "
                f"({_difference(saved, metadata)}); pass overwrite=True (--overwrite) to start it again."
            )
    elif jax.process_index() == 0:
        storage.write_text(progress, json.dumps(metadata, indent=2))
    if jax.process_index() == 0 and not storage.is_remote(out_dir):  # files a killed run was writing
        for leftover in target.glob("*.array_record.tmp-*"):
            leftover.unlink()
    _barrier("embedding_cache_started")
    return None


def _difference(saved: dict, wanted: dict) -> str:
    keys = [k for k in wanted if k != "files" and saved.get(k) != wanted[k]]
    return ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} here" for k in keys) or "other files"


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
    """Encodes every record's caption with `encoder` (a TextEncoder) and writes the cache to
    out_dir; returns the metadata written to out_dir/metadata.json.

    records: random-access sequence (len + __getitem__) of dicts whose `caption_key` is str
    or bytes. Every process calls it (with several processes, together, with the encoder
    on a mesh over all of them: load_text_encoder(mesh=)): process p writes files p, p + P,
    ... and each step encodes every process's batch_size captions on all devices at once.
    Resumable: each file is committed whole (storage.StagedFile), so a rerun with the same
    settings writes only the files still missing; metadata.json comes last. A complete
    cache with the same settings is left as it is; with other settings it is refused
    unless overwrite (which deletes it first).
    """
    from array_record.python.array_record_module import ArrayRecordWriter
    from tqdm.auto import tqdm

    from imagen_jax.pipeline.batch_rows import host_rows, local_rows, to_global

    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not a cache dtype; use one of {sorted(CACHE_DTYPES)}.")
    if batch_size <= 0 or records_per_file <= 0:
        raise ValueError(f"batch_size ({batch_size}) and records_per_file ({records_per_file}) must be positive.")
    out_dir = os.fspath(storage.path(out_dir))
    count = len(records)
    if count == 0:
        raise ValueError("No records to encode: the dataset split is empty.")
    np_dtype = CACHE_DTYPES[dtype]
    num_files = -(-count // records_per_file)
    metadata = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "encoder_name": encoder.name,
        "dim": int(encoder.dim),
        "max_length": int(encoder.max_length),
        "dtype": dtype,
        "count": count,
        "records_per_file": records_per_file,
        "files": [f"text_embeddings-{i:05d}-of-{num_files:05d}.array_record" for i in range(num_files)],
    }
    existing = _start_or_resume(out_dir, metadata, overwrite)
    if existing is not None:
        return existing

    # Each step: batch_size captions per process, together a whole number of rows per device.
    processes, index = jax.process_count(), jax.process_index()
    per_process = encoder.num_shards // processes
    batch_size = -(-batch_size // per_process) * per_process
    global_batch = batch_size * processes
    rows = host_rows(encoder.batch_sharding, global_batch)
    mine = [
        k for k in range(index, num_files, processes) if not (storage.path(out_dir) / metadata["files"][k]).exists()
    ]
    chunks = _chunks(mine, records_per_file, count, batch_size)
    steps = _process_max(len(chunks))

    def encode(step):
        captions = _read_captions(records, caption_key, *chunks[step][1:]) if step < len(chunks) else []
        ids, mask = encoder.tokenize(captions + [""] * (batch_size - len(captions)))
        ids_global = to_global(ids, rows, encoder.batch_sharding, global_batch)
        mask_global = to_global(mask, rows, encoder.batch_sharding, global_batch)
        return encoder.encode_arrays(ids_global, mask_global), mask, len(captions)

    staged, writer = None, None
    todo = sum(b - a for _, a, b in chunks)
    try:
        with tqdm(total=todo, unit="caption", desc=f"embed ({encoder.name})", disable=not progress) as bar:
            pending = encode(0) if steps else None
            for step in range(steps):
                embeddings, mask, n_real = pending
                failed = None
                try:  # the next batch is dispatched before this one is read; its failure waits for this write
                    pending = encode(step + 1) if step + 1 < steps else None
                except Exception as error:
                    failed = error
                embeddings = local_rows(embeddings, rows)
                if not n_real:
                    continue
                k, begin, end = chunks[step]
                if begin == k * records_per_file:
                    staged = storage.StagedFile(storage.join(out_dir, metadata["files"][k]))
                    writer = ArrayRecordWriter(staged.local, "group_size:1")
                for row in range(n_real):
                    n = int(mask[row].sum())
                    if not mask[row, :n].all():
                        raise ValueError("The text encoder's mask is not right-padded; the cache stores prefixes.")
                    tokens = embeddings[row, :n].astype(np_dtype)
                    if not np.isfinite(tokens.astype(np.float32)).all():
                        raise FloatingPointError(
                            f"Caption {begin + row}'s embedding is not finite in {dtype} (values up to "
                            f"{np.abs(embeddings[row, :n]).max():.3g}); use dtype='bfloat16'."
                        )
                    writer.write(np.ascontiguousarray(tokens).tobytes())
                if end == min((k + 1) * records_per_file, count):  # the file is whole: commit it
                    writer.close()
                    staged.commit()
                    staged, writer = None, None
                bar.update(n_real)
                if failed is not None:
                    raise failed
    finally:
        if writer is not None:
            writer.close()
            staged.discard()
    _barrier("embedding_cache_files_written")
    if index == 0:
        missing = [f for f in metadata["files"] if not (storage.path(out_dir) / f).exists()]
        if missing:
            raise RuntimeError(f"{len(missing)} cache files are missing after every process finished: {missing[:3]}")
        storage.write_text(storage.join(out_dir, METADATA_FILE), json.dumps(metadata, indent=2))
        (storage.path(out_dir) / PROGRESS_FILE).unlink()
    _barrier("embedding_cache_complete")
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
