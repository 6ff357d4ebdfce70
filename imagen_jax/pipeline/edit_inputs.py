"""The user's images and masks for editing (`imagen-jax edit`, `imagen-jax sample --images`):
read, center-cropped to a square and resized to the size a stage needs, each change said once.

Masks are grayscale images: white (>= 128) marks what is generated, black what is kept.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from imagen_jax import storage
from imagen_jax.data.image_ops import RESAMPLING

MASK_THRESHOLD = 128


def _open(path: str, what: str) -> Image.Image:
    if not storage.path(path).exists():
        raise FileNotFoundError(f"{what} {path!r} does not exist.")
    try:
        with storage.path(path).open("rb") as f:
            image = Image.open(f)
            image.load()
            return image
    except OSError as error:
        raise ValueError(f"Cannot read {what} {path!r} ({error}); pass a PNG or JPEG file.") from error


def _square(image: Image.Image) -> Image.Image:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def read_images(paths: list[str], size: int, *, purpose: str, log=print) -> np.ndarray:
    """uint8 [N, size, size, 3]: each image converted to RGB, center-cropped to a square and
    resized (bicubic, antialiased) to `size`, with one line per change saying so."""
    out = []
    for path in paths:
        image = _open(path, "image")
        width, height = image.size
        changes = []
        if width != height:
            image = _square(image)
            changes.append(f"center-cropped to {image.size[0]}x{image.size[1]}")
        if image.size[0] != size:
            image = image.resize((size, size), RESAMPLING["bicubic"], reducing_gap=None)
            changes.append(f"resized to {size}x{size}")
        if changes:
            log(f"{path}: {width}x{height}, {' and '.join(changes)} ({purpose})")
        out.append(np.asarray(image.convert("RGB"), np.uint8))
    return np.stack(out)


def read_masks(paths: list[str], image_paths: list[str], size: int, *, log=print) -> np.ndarray:
    """bool [N, size, size], True = generate: each mask as its image is cropped and resized
    (nearest, so it stays binary). A mask must have its image's size or at least its aspect
    ratio; gray levels are thresholded at 128 (said once); a mask with no white pixel is refused."""
    out = []
    for path, image_path in zip(paths, image_paths):
        mask = _open(path, "mask").convert("L")
        with storage.path(image_path).open("rb") as f, Image.open(f) as image:
            image_size = image.size
        if mask.size != image_size:
            if mask.size[0] * image_size[1] != mask.size[1] * image_size[0]:
                raise ValueError(
                    f"mask {path!r} is {mask.size[0]}x{mask.size[1]} but image {image_path!r} is "
                    f"{image_size[0]}x{image_size[1]}: give a mask of the image's size (white = generate)."
                )
            log(f"{path}: {mask.size[0]}x{mask.size[1]}, scaled like its image {image_size[0]}x{image_size[1]}")
        values = np.asarray(mask)
        gray = int(np.count_nonzero((values > 0) & (values < 255)))
        if gray:
            log(f"{path}: {gray} gray pixels; white (>= {MASK_THRESHOLD}) is generated, darker is kept")
        binary = Image.fromarray(np.where(values >= MASK_THRESHOLD, 255, 0).astype(np.uint8))
        binary = binary.resize(image_size, Image.Resampling.NEAREST)
        binary = _square(binary).resize((size, size), Image.Resampling.NEAREST)
        generate = np.asarray(binary) >= MASK_THRESHOLD
        if not generate.any():
            raise ValueError(f"mask {path!r} has no white pixel: nothing to inpaint (white = generate, black = keep).")
        out.append(generate)
    return np.stack(out)


def pair(items: list[str], count: int, name: str) -> list[str]:
    """One item per image: `items` as they are when there are `count`, or one repeated."""
    if len(items) == count:
        return items
    if len(items) == 1:
        return items * count
    raise ValueError(f"give one {name} for all images or one per image ({count}), got {len(items)}.")
