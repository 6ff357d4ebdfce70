"""Filters applied while web data is imported, and the reasons a record is dropped.

Each record is checked in the order of DROP_REASONS and counted once, under the first
reason that applies. Duplicates are exact: the same encoded image bytes (BLAKE2b-128 of
the file as stored in the shard); of several copies that pass every other filter, the
first in input order (shard, then position) is kept. Byte-identical copies share every
image verdict, so which copy wins depends only on the captions and the order.

The minimum side is checked against the smaller of the stored size and the
`original_width` / `original_height` img2dataset records in its json: img2dataset
upsamples small images to its --image_size by default, and a 1024 px stage should not
train on upsampled 256 px images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io

from PIL import Image

from imagen_jax.data.importer import encode_loaded
from imagen_jax.data.web_shards import RawRecord

DROP_REASONS = (
    "missing_image",  # a caption/json without an image (img2dataset parquet: failed download)
    "missing_caption",  # an image without a caption
    "caption_too_short",
    "caption_too_long",
    "corrupt_image",  # not decodable
    "image_too_small",  # shorter side (stored or original) below min_image_side
    "aspect_ratio",  # longer / shorter side above max_aspect_ratio
    "duplicate",  # the same image bytes as an earlier kept record
)


@dataclasses.dataclass(frozen=True)
class ImportFilters:
    """What a web import keeps (the CLI's --min-image-side etc.; recorded in the report).

    min_image_side: pixels of the shorter side, stored and original (0: no minimum).
    max_aspect_ratio: longer / shorter side (0: no maximum).
    min_caption_length / max_caption_length: characters after stripping whitespace
      (max 0: no maximum).
    dedup: drop exact duplicate images within the dataset.
    max_size: images are stored with the shorter side reduced to this (None: as is).
    """

    min_image_side: int = 64
    max_aspect_ratio: float = 3.0
    min_caption_length: int = 1
    max_caption_length: int = 1000
    dedup: bool = True
    max_size: int | None = None

    def __post_init__(self):
        if self.min_image_side < 0 or self.min_caption_length < 0 or self.max_caption_length < 0:
            raise ValueError(f"Import filters must not be negative: {self}.")
        if self.max_aspect_ratio and self.max_aspect_ratio < 1:
            raise ValueError(
                f"--max-aspect-ratio is longer/shorter side, >= 1 (or 0 for none); got {self.max_aspect_ratio}."
            )
        if self.max_caption_length and self.max_caption_length < self.min_caption_length:
            raise ValueError("--max-caption-length must be >= --min-caption-length (or 0 for no maximum).")
        if self.max_size is not None and self.max_size < max(1, self.min_image_side):
            raise ValueError(f"--max-size ({self.max_size}) must be at least --min-image-side ({self.min_image_side}).")


@dataclasses.dataclass
class Verdict:
    """A checked record: `reason` (one of DROP_REASONS) if dropped; else the bytes to
    store, the cleaned caption and the image digest (duplicates are decided by the caller)."""

    reason: str | None
    image: bytes | None = None
    caption: str | None = None
    digest: bytes | None = None


def image_digest(data: bytes) -> bytes:
    """16-byte BLAKE2b digest of an encoded image (exact-duplicate key)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _original_side(meta: dict) -> int | None:
    sides = [meta.get("original_width"), meta.get("original_height")]
    sides = [int(s) for s in sides if isinstance(s, int | float) and s > 0]
    return min(sides) if len(sides) == 2 else None


def check_record(record: RawRecord, filters: ImportFilters) -> Verdict:
    """Every filter but duplicates, in DROP_REASONS order; decodes the image fully."""
    if record.image is None:
        return Verdict("missing_image")
    if record.caption is None:
        return Verdict("missing_caption")
    caption = record.caption.strip()
    if len(caption) < filters.min_caption_length:
        return Verdict("caption_too_short")
    if filters.max_caption_length and len(caption) > filters.max_caption_length:
        return Verdict("caption_too_long")
    try:
        image = Image.open(io.BytesIO(record.image))
        width, height = image.size
    except Exception:  # any decoder error: count it, never crash
        return Verdict("corrupt_image")
    shorter, longer = min(width, height), max(width, height)
    original = _original_side(record.meta)
    if shorter == 0 or min(shorter, original or shorter) < filters.min_image_side:
        return Verdict("image_too_small") if shorter else Verdict("corrupt_image")
    if filters.max_aspect_ratio and longer / shorter > filters.max_aspect_ratio:
        return Verdict("aspect_ratio")
    try:
        image.load()
        stored = encode_loaded(record.image, image, filters.max_size)
    except Exception:
        return Verdict("corrupt_image")
    return Verdict(None, image=stored, caption=caption, digest=image_digest(record.image))
