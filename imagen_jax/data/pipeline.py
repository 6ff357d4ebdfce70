"""The Grain input pipeline: records -> per-host batches, deterministic and resumable.

Order of operations (a Grain MapDataset up to to_iter_dataset, so every step before
it is a pure function of the element index):
  source -> seed -> shuffle (a fresh permutation per epoch) -> repeat (num_epochs, 0:
  forever) -> PrepareExample (seeded per global element index) -> this host's blocks
  (host p takes elements [p b, (p + 1) b) of every global batch of b x process_count, see
  host_blocks.py) -> batch (per-host batch; compact dtypes) ->
  TokenizeCaptions -> to_iter_dataset (read threads) -> mp_prefetch (worker processes)
  -> FinishBatch (float32 model inputs, in a prefetch thread of the consumer process).
Because the global stream is shuffled before it is dealt to hosts, hosts see disjoint
elements, each epoch mixes across hosts, and the global batch (hosts' batches in process
order) is the same whatever the number of hosts; a final partial global batch is dropped.
Workers take whole batches round-robin, so batches do not depend on the number of
workers. A tokenizer runs in the workers, so it must be picklable. Close an iterator
that has workers (`it.close()`) when done with it.

Resuming: the stream is a function of the global element index, so the position to save
is one number, the elements consumed (global batches x global batch size), the same on
every host; `make_dataset(start_element=n)` starts there on any number of hosts (training
checkpoints it beside the model: a run saved by 2 hosts resumes on 1 or 4). The Grain
iterator's own state (`it.get_state()` / `it.set_state(state)`, per host) works too,
but only for the same number of hosts.

Batch (b = per-host batch):
  "image": float32 [b, C, C, 3] in [-1, 1]
  "low_res": float32 [b, c, c, 3] in [-1, 1]                 SR stages (low_res_resolution c > 0)
  "text_embedding": float32 [b, L, D] (0 at padding) + "text_mask": bool [b, L]   cache
  "text_tokens": int32 [b, L] + "text_mask": bool [b, L]                 tokenizer
  "caption": str [b]      only with keep_caption
  "labels": dict          only with shapes_labels (see transforms.shapes_labels)
"""

from __future__ import annotations

from typing import Any

import grain
import jax
import ml_collections

from imagen_jax.data.host_blocks import HostBlocksMapDataset
from imagen_jax.data.sources import (
    RandomAccessSource,
    RecordsWithTextEmbeddings,
    open_source,
)
from imagen_jax.data.transforms import (
    BatchExamples,
    FinishBatch,
    PrepareExample,
    TokenizeCaptions,
    Tokenizer,
)


def make_dataset(
    records: RandomAccessSource,
    prepare: PrepareExample,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int = 0,
    text_embeddings: RandomAccessSource | None = None,
    tokenize: Tokenizer | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_workers: int = 0,
    worker_buffer_size: int = 2,
    read_threads: int = 4,
    read_buffer_size: int = 4,
    finish_buffer_size: int = 2,
    start_element: int = 0,
) -> grain.IterDataset:
    """Grain dataset of this host's batches (see the module docstring).

    records: random-access records (e.g. `open_source(...)`); prepare: the per-record
    transform; batch_size: per-host batch; text_embeddings: source of cached embeddings in
    record order (needed when prepare.text == 'embedding'); tokenize: needed when
    prepare.text == 'tokens'; process_index / process_count: default to JAX's;
    num_workers: worker processes (0: read threads of this process only);
    finish_buffer_size: finished batches kept ready by the background thread;
    start_element: global stream elements already consumed (the resume position): the
    first global batch is elements [start_element, start_element + batch_size x hosts).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if prepare.text == "embedding":
        if text_embeddings is None:
            raise ValueError(
                "Text mode 'embedding' needs the embedding cache: pass text_embeddings (or set "
                "data.text_embedding_dir), or use text mode 'tokens' with a tokenizer."
            )
        records = RecordsWithTextEmbeddings(records, text_embeddings)
    if prepare.text == "tokens" and tokenize is None:
        raise ValueError("Text mode 'tokens' needs a tokenizer: pass tokenize(list[str]) -> (ids, mask).")
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"Need 0 <= process_index < process_count, got {process_index}, {process_count}.")
    if start_element < 0:
        raise ValueError(f"start_element must be >= 0, got {start_element}.")
    if len(records) == 0 or (num_epochs and len(records) * num_epochs < process_count * batch_size):
        raise ValueError(
            f"{len(records)} records x {num_epochs or 'all'} epochs cannot fill one batch of {batch_size} on each "
            f"of {process_count} hosts; use more data, a smaller batch, or data.num_epochs=0 (repeat forever)."
        )

    dataset = grain.MapDataset.source(records).seed(seed)
    if shuffle:
        dataset = dataset.shuffle()
    dataset = dataset.repeat(num_epochs or None)
    # Per-element randomness (crops) is keyed by the GLOBAL stream index, before hosts take
    # their blocks: the global batches do not depend on the number of hosts.
    dataset = dataset.random_map(prepare)
    if start_element:
        dataset = dataset[start_element:]  # the rest of the same stream (indices, crops unchanged)
    dataset = HostBlocksMapDataset(dataset, block=batch_size, index=process_index, count=process_count)
    dataset = dataset.batch(batch_size, drop_remainder=True, batch_fn=BatchExamples())
    if prepare.text == "tokens":
        dataset = dataset.map(
            TokenizeCaptions(tokenize, max_text_length=prepare.max_text_length, keep_caption=prepare.keep_caption)
        )
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=max(read_buffer_size, read_threads))
    )
    if num_workers > 0:
        _ensure_absl_flags_parsed()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=worker_buffer_size)
        )
    iter_dataset = iter_dataset.map(FinishBatch(prepare.max_text_length))
    # A background thread finishes the next batches while the consumer trains.
    return grain.experimental.ThreadPrefetchIterDataset(iter_dataset, prefetch_buffer_size=finish_buffer_size)


def _ensure_absl_flags_parsed() -> None:
    """Grain 0.2.18's worker processes read an absl flag and fail when the program never
    parsed flags (a plain script, not absl.app): google/grain#1355, fixed upstream in
    #1362. Marking unparsed flags as parsed leaves them at their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def prepare_from_config(config: ml_collections.ConfigDict, text: str) -> PrepareExample:
    """The per-record transform of a stage config: its `data` section says how (resize,
    crop position, methods, keys), the stage the sizes: crop `resolution`, low-res image
    `low_res_resolution` (0: none), resize to data.resize_to (0: the resolution)."""
    data = config.data
    return PrepareExample(
        image_size=data.resize_to or config.resolution,
        crop_size=config.resolution,
        random_crop=data.random_crop,
        low_res_size=int(config.get("low_res_resolution") or 0),
        resize_method=data.resize_method,
        low_res_method=data.low_res_method,
        image_key=data.image_key,
        text_key=data.text_key,
        text=text,
        max_text_length=data.max_text_length,
        keep_caption=data.keep_caption,
        with_shapes_labels=data.shapes_labels,
    )


def text_mode(data: ml_collections.ConfigDict, text_embeddings: Any, tokenize: Any) -> str:
    """'embedding' if a cache is given (argument or data.text_embedding_dir), 'tokens' if a
    tokenizer is, else data.text (which may say 'none' for image-only pipelines)."""
    if text_embeddings is not None or data.text_embedding_dir:
        return "embedding"
    if tokenize is not None:
        return "tokens"
    return data.text


def dataset_from_config(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int | None = None,
    text_embeddings: RandomAccessSource | None = None,
    tokenize: Tokenizer | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    records: RandomAccessSource | None = None,
    start_element: int = 0,
) -> grain.IterDataset:
    """`make_dataset` for a stage config: its `data` section (fields: configs/data_shapes.py)
    and the sizes the stage implies (prepare_from_config).

    batch_size: examples per batch on this host; default train.batch_size / process count.
    text_embeddings defaults to the cache in data.text_embedding_dir; records defaults to
    the TFDS split data.name / data.split under data.data_dir; start_element: the resume
    position (global elements consumed).
    """
    data = config.data
    if batch_size is None:
        count = jax.process_count() if process_count is None else process_count
        batch_size, rest = divmod(config.train.batch_size, count)
        if rest or not batch_size:
            raise ValueError(
                f"train.batch_size={config.train.batch_size} does not split evenly over {count} processes; "
                "pass a multiple of the process count as --config.train.batch_size."
            )
    if records is None:
        records = open_source(
            data.name,
            split=data.split,
            data_dir=data.data_dir or None,
            image_key=data.image_key,
            prepare_shapes=data.prepare_shapes,
        )
    if text_embeddings is None and data.text_embedding_dir:
        from imagen_jax.text.embedding_cache import EmbeddingCacheSource

        text_embeddings = EmbeddingCacheSource(data.text_embedding_dir)
    return make_dataset(
        records,
        prepare_from_config(config, text_mode(data, text_embeddings, tokenize)),
        batch_size=batch_size,
        seed=data.seed,
        shuffle=data.shuffle,
        num_epochs=data.num_epochs,
        text_embeddings=text_embeddings,
        tokenize=tokenize,
        process_index=process_index,
        process_count=process_count,
        num_workers=data.num_workers,
        worker_buffer_size=data.worker_buffer_size,
        read_threads=data.read_threads,
        read_buffer_size=data.read_buffer_size,
        finish_buffer_size=data.prefetch,
        start_element=start_element,
    )
