"""Images in and out of the evaluator: model outputs -> uint8, PNG folders -> arrays."""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

from imagen_jax import storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def out_of_range_fraction(x, value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Fraction of values of float images `x` outside `value_range` (they saturate
    when converted to pixels; large with strong guidance and no thresholding)."""
    x = np.asarray(x)
    return float(np.mean((x < value_range[0]) | (x > value_range[1])))


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_images(folder: str) -> list[str]:
    """Image files in `folder` (local or gs://) in natural order (img2 before img10)."""
    directory = storage.path(folder)
    if not directory.is_dir():
        raise FileNotFoundError(f"Image folder {folder!r} does not exist; pass a folder of PNG images.")
    names = sorted((p.name for p in directory.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)), key=_natural_key)
    if not names:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {folder!r}.")
    return [os.fspath(directory / n) for n in names]


def read_image(path: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB (alpha dropped, grayscale expanded)."""
    try:
        with storage.path(path).open("rb") as f, Image.open(f) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise ValueError(f"Cannot read image {path!r} ({error}); pass PNG or JPEG files.") from error
