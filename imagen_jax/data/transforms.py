"""Per-record and per-batch transforms of the Grain pipeline.

Batches stay compact while they travel between processes and become the model's
float32 inputs only at the end, in the consumer process (`FinishBatch`): padded T5
embeddings are ~2 MB per example in float32, and moving that through shared memory
costs more than everything else in the pipeline.

Per record (`PrepareExample`, a Grain RandomMap, so crops are seeded by record position):
  image bytes/array -> RGB -> resize shorter side to image_size -> center or random
  crop_size square -> "image" uint8 [C, C, 3]
  (SR) that crop, antialiased down to low_res_size -> "low_res" uint8 [c, c, 3]
  (cache) the cached "text_embedding" [n, D]
  (tokens) the caption string.
Per batch, in the workers (`BatchExamples`, then `TokenizeCaptions` for tokens):
  stacked images; "text_embedding" concatenated [sum n_i, D] + "text_length" int32 [b];
  or "text_tokens" int32 [b, L] + "text_mask" bool [b, L].
Per batch, in the consumer (`FinishBatch`):
  "image"/"low_res" float32 in [-1, 1]; "text_embedding" float32 [b, L, D] zero-padded
  + "text_mask" bool [b, L].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

from imagen_jax.data import image_ops
from imagen_jax.data.sources import get_path

TEXT_MODES = ("embedding", "tokens", "none")

Tokenizer = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


def check_text_embedding(embedding: np.ndarray, max_length: int) -> np.ndarray:
    """A cached [n, D] embedding of the unmasked tokens, checked to fit max_length."""
    embedding = np.asarray(embedding)
    if embedding.ndim != 2:
        raise ValueError(f"A cached text embedding must be [tokens, dim], got shape {embedding.shape}.")
    if embedding.shape[0] > max_length:
        raise ValueError(
            f"A cached text embedding has {embedding.shape[0]} tokens, more than data.max_text_length={max_length}; "
            "raise data.max_text_length or rebuild the cache with a shorter maximum length."
        )
    return embedding


def pad_text_embeddings(embeddings: Sequence[np.ndarray], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """[n_i, D] embeddings -> (float32 [b, L, D], zero past n_i; bool [b, L] mask, True for
    the first n_i). Padding a whole batch at once writes only the real tokens into a
    zero-initialised array, several times faster than padding each example."""
    dim = embeddings[0].shape[1]
    padded = np.zeros((len(embeddings), max_length, dim), np.float32)
    mask = np.zeros((len(embeddings), max_length), bool)
    for row, embedding in enumerate(embeddings):
        padded[row, : len(embedding)] = embedding
        mask[row, : len(embedding)] = True
    return padded, mask


def caption_text(value: Any) -> str:
    """The caption string of a record's text feature: bytes/str, or the first of several."""
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim > 0):
        if len(value) == 0:
            raise ValueError("A record has an empty list of captions.")
        value = value[0]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


def shapes_labels(record: dict, max_objects: int = 2) -> dict[str, np.ndarray]:
    """Fixed-shape labels of an `imagen_shapes` record (objects padded with -1 / 0):
    background int32 [], num_objects int32 [], shape/color/size/position int32 [M],
    center float32 [M, 2], extent float32 [M]; class ids index the tables of shapes_scene."""
    objects = record["objects"]
    count = len(objects["shape"])
    labels = {"background": np.int32(record["background"]), "num_objects": np.int32(count)}
    for key in ("shape", "color", "size", "position"):
        padded = np.full((max_objects,), -1, np.int32)
        padded[:count] = np.asarray(objects[key], np.int32)
        labels[key] = padded
    center = np.zeros((max_objects, 2), np.float32)
    center[:count] = np.asarray(objects["center"], np.float32).reshape(count, 2)
    extent = np.zeros((max_objects,), np.float32)
    extent[:count] = np.asarray(objects["extent"], np.float32)
    labels["center"], labels["extent"] = center, extent
    return labels


@dataclasses.dataclass(frozen=True)
class PrepareExample(grain.transforms.RandomMap):
    """One record -> one training example (see module docstring for the keys).

    image_size: shorter side after resizing; crop_size: side of the square crop (0: image_size);
    random_crop: random crop position (SR training) instead of center; low_res_size: 0 for
    the base stage, else the side of "low_res"; text: one of TEXT_MODES; keep_caption adds
    "caption" (str); with_shapes_labels adds "labels" (see `shapes_labels`).
    """

    image_size: int
    crop_size: int = 0
    random_crop: bool = False
    low_res_size: int = 0
    resize_method: str = "bicubic"
    low_res_method: str = "bicubic"
    image_key: str = "image"
    text_key: str = "caption"
    text: str = "embedding"
    max_text_length: int = 128
    keep_caption: bool = False
    with_shapes_labels: bool = False

    def __post_init__(self):
        crop = self.crop_size or self.image_size
        if self.image_size <= 0 or crop > self.image_size:
            raise ValueError(
                f"Need 0 < crop_size <= image_size, got image_size={self.image_size}, crop_size={self.crop_size}."
            )
        if self.low_res_size < 0 or self.low_res_size > crop:
            raise ValueError(f"low_res_size ({self.low_res_size}) must be in [0, crop size {crop}].")
        if self.text not in TEXT_MODES:
            raise ValueError(f"Unknown text mode {self.text!r}; use one of {TEXT_MODES}.")
        image_ops.resampling(self.resize_method)
        image_ops.resampling(self.low_res_method)

    def random_map(self, record: dict, rng: np.random.Generator) -> dict:
        crop = self.crop_size or self.image_size
        raw = get_path(record, self.image_key)
        if isinstance(raw, (bytes, np.bytes_)):
            # JPEG draft only reduces while the shorter side stays >= image_size.
            image = image_ops.open_image(bytes(raw), min_size=self.image_size)
        else:
            image = image_ops.array_to_image(raw)
        pixels = image_ops.resize_and_crop(
            image,
            image_size=self.image_size,
            crop_size=crop,
            rng=rng if self.random_crop else None,
            method=self.resize_method,
        )
        example = {"image": pixels}
        if self.low_res_size:
            example["low_res"] = image_ops.downsample(pixels, self.low_res_size, method=self.low_res_method)
        if self.text == "embedding":
            if "text_embedding" not in record:
                raise KeyError("Records carry no 'text_embedding'; pass the embedding cache as `text_embeddings`.")
            example["text_embedding"] = check_text_embedding(record["text_embedding"], self.max_text_length)
        if self.text == "tokens" or self.keep_caption:
            example["caption"] = np.str_(caption_text(get_path(record, self.text_key)))
        if self.with_shapes_labels:
            example["labels"] = shapes_labels(record)
        return example


@dataclasses.dataclass(frozen=True)
class TokenizeCaptions(grain.transforms.Map):
    """Per batch: "caption" str [b] -> "text_tokens" int32 [b, L] + "text_mask" bool [b, L].

    tokenize(list[str]) -> (ids [n, L] int32, mask [n, L] bool), L == max_text_length
    (a fixed L keeps the train step's shapes static). The caption stays only if keep_caption.
    """

    tokenize: Tokenizer
    max_text_length: int = 128
    keep_caption: bool = False

    def map(self, batch: dict) -> dict:
        batch = dict(batch)
        captions = batch["caption"] if self.keep_caption else batch.pop("caption")
        ids, mask = self.tokenize([str(c) for c in captions])
        ids, mask = np.asarray(ids), np.asarray(mask)
        expected = (len(captions), self.max_text_length)
        if ids.shape != expected or mask.shape != expected:
            raise ValueError(
                f"tokenize returned ids {ids.shape} and mask {mask.shape}, expected {expected}: make the "
                f"tokenizer pad/truncate to data.max_text_length={self.max_text_length}."
            )
        batch["text_tokens"] = ids.astype(np.int32)
        batch["text_mask"] = mask.astype(bool)
        return batch


@dataclasses.dataclass(frozen=True)
class BatchExamples:
    """Grain batch function: stacks every leaf along a new axis 0 (strings become a str
    array), except "text_embedding" [n_i, D], concatenated to [sum n_i, D] with the
    lengths in "text_length" int32 [b] (bfloat16 travels as float32, exactly)."""

    def __call__(self, examples: Sequence[dict]) -> dict:
        batch = {}
        for key, value in examples[0].items():
            values = [example[key] for example in examples]
            if key == "text_embedding":
                packed = np.concatenate(values)
                if packed.dtype not in (np.float16, np.float32):
                    packed = packed.astype(np.float32)
                batch["text_embedding"] = packed
                batch["text_length"] = np.asarray([len(v) for v in values], np.int32)
            elif isinstance(value, dict):
                batch[key] = self(values)
            elif isinstance(value, str):
                batch[key] = np.asarray(values)
            else:
                batch[key] = np.stack(values)
        return batch


@dataclasses.dataclass(frozen=True)
class FinishBatch(grain.transforms.Map):
    """Compact batch -> the model's inputs (module docstring): images to float32 [-1, 1],
    packed text embeddings to float32 [b, L, D] zero-padded + "text_mask" bool [b, L]."""

    max_text_length: int = 128

    def map(self, batch: dict) -> dict:
        batch = dict(batch)
        for key in ("image", "low_res"):
            if key in batch:
                batch[key] = image_ops.to_signed_unit(batch[key])
        if "text_length" in batch:
            lengths = batch.pop("text_length")
            packed = batch["text_embedding"]
            starts = np.concatenate([[0], np.cumsum(lengths)])
            batch["text_embedding"], batch["text_mask"] = pad_text_embeddings(
                [packed[start:stop] for start, stop in zip(starts[:-1], starts[1:])], self.max_text_length
            )
        return batch
