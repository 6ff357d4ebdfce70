"""Sample grids during training: fixed preview inputs, sampled with the EMA params through
the stage sampler (`sample_stage`) and saved as PNGs and TensorBoard images."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from imagen_jax import storage
from imagen_jax.config import is_super_resolution
from imagen_jax.images import make_grid, save_png, to_uint8
from imagen_jax.pipeline.stage_sampler import StageConfig, sample_stage
from imagen_jax.train.metrics import MetricsWriter


def preview_inputs(config, encoder, cache_dir: str | None) -> dict:
    """Fixed inputs for the sample grids: the configured prompts encoded; for SR stages the
    first examples of the (unshuffled) data split as low-res inputs and ground truth
    (`first_examples`)."""
    prompts = list(config.train.sample_prompts)
    embedding, mask = encoder.encode(prompts)
    inputs = {"prompts": prompts, "text_embedding": _on_host(embedding), "text_mask": _on_host(mask)}
    if is_super_resolution(config):
        batch = first_examples(config, encoder, cache_dir, len(prompts))
        inputs.update({k: batch[k] for k in ("text_embedding", "text_mask", "low_res")}, truth=batch["image"])
    return inputs


def first_examples(config, encoder, cache_dir: str | None, count: int, *, captions: bool = False) -> dict:
    """The first `count` examples of the data split, unshuffled and center-cropped, as one
    host batch: image, low_res (SR), text_embedding and text_mask (their captions' embeddings
    from the cache in `cache_dir`, or with cache_dir None (text mode 'tokens') encoded by
    `encoder`), and with `captions` the caption strings."""
    from imagen_jax.data.pipeline import dataset_from_config
    from imagen_jax.text.embedding_cache import EmbeddingCacheSource
    from imagen_jax.train.inputs import caption_tokenizer

    config = config.copy_and_resolve_references()
    config.data.shuffle, config.data.num_workers, config.data.random_crop = False, 0, False
    config.data.keep_caption = config.data.keep_caption or captions
    if cache_dir is None:
        text = dict(tokenize=caption_tokenizer(encoder, config.data.max_text_length))
    else:
        text = dict(text_embeddings=EmbeddingCacheSource(cache_dir))
    batch = next(iter(dataset_from_config(config, batch_size=count, process_index=0, process_count=1, **text)))
    if cache_dir is None:
        embedding, _ = encoder.encode_ids(batch["text_tokens"], batch["text_mask"])
        batch["text_embedding"] = _on_host(embedding)
    return batch


def _on_host(array: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-process) global array, on every host."""
    if array.is_fully_addressable:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def write_sample_grid(
    config, stage: StageConfig, params, preview, step: int, workdir: str, writer: MetricsWriter, mesh
) -> str | None:
    """Sample the preview prompts with `params` (the EMA) through the stage sampler (`stage`:
    the config's model and `sampling` section) and save a PNG grid; returns its path. Every
    process runs it (the params are global arrays); the inputs are replicated on `mesh`."""
    replicated = NamedSharding(mesh, PartitionSpec())
    put = lambda name: jax.device_put(np.asarray(preview[name]), replicated)  # noqa: E731
    images = sample_stage(
        params,
        put("text_embedding"),
        put("text_mask"),
        jax.random.key(config.seed),
        config=stage,
        low_res=put("low_res") if "low_res" in preview else None,
    )
    cells = to_uint8(multihost_utils.process_allgather(images, tiled=True))
    columns = None
    if "low_res" in preview:  # rows of (low-res, sample, truth)
        factor = config.resolution // preview["low_res"].shape[1]
        low = to_uint8(preview["low_res"]).repeat(factor, axis=1).repeat(factor, axis=2)
        cells = np.stack([low, cells, to_uint8(preview["truth"])], axis=1).reshape((-1,) + cells.shape[1:])
        columns = 3
    grid = make_grid(cells, columns=columns, upscale_to=96)
    if jax.process_index() != 0:
        return None
    path = save_png(grid, storage.join(workdir, "samples", f"step_{step:07d}.png"))
    writer.image(step, "samples", grid)
    return path
