"""The dataset side of FID and CLIP score: a dataset of this project's images at the
evaluated resolution (resized and center-cropped as training does), its captions drawn with
a fixed seed, and its FID reference statistics, computed once and saved beside the dataset:
<dataset version dir>/fid_statistics/<split>_<resolution>px_<count>_<weights fingerprint>.npz.
"""

from __future__ import annotations

import re

import numpy as np

from imagen_jax import storage
from imagen_jax.data import image_ops
from imagen_jax.data.sources import get_path, open_builder, open_source
from imagen_jax.data.transforms import caption_text
from imagen_jax.eval.features import ShardedFeatures
from imagen_jax.eval.frechet import FeatureStatistics, StatisticsAccumulator


def record_image(record: dict, image_key: str, resolution: int) -> np.ndarray:
    """uint8 [resolution, resolution, 3]: shorter side resized to `resolution` (bicubic), center crop."""
    raw = get_path(record, image_key)
    if isinstance(raw, (bytes, np.bytes_)):
        image = image_ops.open_image(bytes(raw), min_size=resolution)
    else:
        image = image_ops.array_to_image(raw)
    return image_ops.resize_and_crop(image, image_size=resolution, crop_size=resolution)


def draw_indices(total: int, count: int | None, seed: int) -> np.ndarray:
    """`count` distinct record indices of `total`, drawn with numpy's PCG64 seeded by `seed`,
    sorted (all of them, in order, when count is None or >= total)."""
    if count is None or count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


def draw_captions(records, indices: np.ndarray, text_key: str = "caption") -> list[str]:
    """The captions of `records` at `indices`, one line each (newlines folded to spaces)."""
    return [" ".join(caption_text(get_path(records[int(i)], text_key)).split()) for i in indices]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def reference_statistics(
    extractor: ShardedFeatures,
    weights_fingerprint: str,
    *,
    dataset: str,
    data_dir: str | None = None,
    split: str = "train",
    resolution: int,
    max_images: int | None = None,
    seed: int = 0,
    image_key: str = "image",
    progress: bool = True,
) -> tuple[FeatureStatistics, str]:
    """(statistics, their file) of `max_images` images (all when None; drawn with `seed`) of
    `dataset`'s `split` at `resolution`: read from the file when it exists, else computed
    with `extractor` (the FID Inception) and saved there."""
    import jax

    builder = open_builder(dataset, data_dir=data_dir)
    records = open_source(dataset, split=split, data_dir=data_dir, image_key=image_key)
    indices = draw_indices(len(records), max_images, seed)
    name = f"{_slug(split)}_{resolution}px_{len(indices)}" + (f"_seed{seed}" if len(indices) < len(records) else "")
    path = storage.join(str(builder.data_dir), "fid_statistics", f"{name}_{weights_fingerprint}.npz")
    if storage.path(path).exists():
        return FeatureStatistics.load(path), path
    accumulator = StatisticsAccumulator(2048)
    stream = extractor.stream(
        list(indices),
        lambda i: record_image(records[int(i)], image_key, resolution),
        description=f"reference {dataset} {split}",
        progress=progress,
    )
    for _, features in stream:
        accumulator.add(features)
    metadata = {
        "dataset": dataset,
        "split": split,
        "resolution": resolution,
        "images": len(indices),
        "seed": seed if len(indices) < len(records) else None,
        "weights": weights_fingerprint,
    }
    statistics = accumulator.statistics(metadata)
    if jax.process_index() == 0:
        statistics.save(path)
    return statistics, path
