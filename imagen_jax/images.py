"""Image conversions and grids for people to look at: [-1, 1] floats -> uint8 -> PNG."""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image

from imagen_jax import storage


def to_uint8(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Float images [..., H, W, C] with values in `value_range` (a diffusion sample: (-1, 1))
    -> uint8 in [0, 255], rounded and clipped; out-of-range values saturate."""
    low, high = value_range
    x = (np.asarray(images, np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int | None = None, pad: int = 2, upscale_to: int = 0) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, 3] image on white.

    upscale_to: nearest-neighbour upscaling so each cell is at least this many pixels wide
    (small 32 px samples stay legible).
    """
    images = np.asarray(images)
    n, h, w, c = images.shape
    if upscale_to and w < upscale_to:
        factor = math.ceil(upscale_to / w)
        images = images.repeat(factor, axis=1).repeat(factor, axis=2)
        n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = images[
            i
        ]
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> str:
    """Write uint8 [H, W, 3] to `path` (local or gs://) whole and atomically (storage.write_bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
    return storage.write_bytes(path, buffer.getvalue())
