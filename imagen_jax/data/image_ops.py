"""Image decoding, cropping and resizing with Pillow (numpy in, numpy out at the edges).

Every resize is antialiased: Pillow's filters widen their support by the reduction
factor when downsampling. Crops are taken as a source-space box handed to
`Image.resize(..., box=...)`, so decode -> crop -> resize resamples only once.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

RESAMPLING: dict[str, Image.Resampling] = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# Transparent pixels are composited over this color (white, as image viewers show them).
MATTE = (255, 255, 255)


def resampling(name: str) -> Image.Resampling:
    """Pillow filter for a resize method name (RESAMPLING keys)."""
    try:
        return RESAMPLING[name]
    except KeyError:
        raise ValueError(f"Unknown resize method {name!r}; use one of {sorted(RESAMPLING)}.") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of any Pillow image: alpha (RGBA, LA, PA, P with transparency) is
    composited over MATTE; grayscale, palette, CMYK, 16-bit, ... are converted."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        matte = Image.new("RGBA", rgba.size, MATTE + (255,))
        return Image.alpha_composite(matte, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grayscale: scale to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def open_image(data: bytes, *, min_size: int | None = None) -> Image.Image:
    """Decodes encoded image bytes fully (raising on corrupt data) to an RGB image.

    min_size: lets the JPEG decoder reduce by a power of two while both sides stay
    >= min_size (JPEG draft mode), which is several times faster for large photos.
    """
    image = Image.open(io.BytesIO(data))
    if min_size is not None and image.format == "JPEG":
        image.draft("RGB", (min_size, min_size))
    image.load()
    return to_rgb(image)


def array_to_image(array: np.ndarray) -> Image.Image:
    """RGB Pillow image from uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 image array, got {array.dtype}.")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return to_rgb(Image.fromarray(array, "RGB" if array.shape[-1] == 3 else "RGBA"))
    raise ValueError(f"Expected an image array [H, W] or [H, W, 1|3|4], got shape {array.shape}.")


def crop_box(width: int, height: int, image_size: int, crop_size: int, offset: tuple[int, int] | None):
    """Source-space box of a crop_size square of the image resized to shorter side image_size.

    offset: (x, y) of the crop's top-left corner in resized pixels; None centers it.
    Returns (box, resized_width, resized_height).
    """
    scale = image_size / min(width, height)
    # Floor, not round: every crop box must stay inside the source image (a rounded-up
    # resized side let a random crop reach past the right or bottom edge).
    resized_w = max(image_size, math.floor(width * scale + 1e-6))
    resized_h = max(image_size, math.floor(height * scale + 1e-6))
    if offset is None:
        offset = ((resized_w - crop_size) // 2, (resized_h - crop_size) // 2)
    x, y = offset
    box = (x / scale, y / scale, min((x + crop_size) / scale, width), min((y + crop_size) / scale, height))
    return box, resized_w, resized_h


def resize_and_crop(
    image: Image.Image,
    *,
    image_size: int,
    crop_size: int,
    rng: np.random.Generator | None = None,
    method: str = "bicubic",
) -> np.ndarray:
    """uint8 [crop_size, crop_size, 3]: the image resized so its shorter side is
    image_size, then a crop_size square taken at the center (rng None) or at a uniformly
    random position drawn from rng."""
    if crop_size > image_size:
        raise ValueError(f"crop_size ({crop_size}) must not exceed image_size ({image_size}).")
    width, height = image.size
    offset = None
    if rng is not None:
        _, resized_w, resized_h = crop_box(width, height, image_size, crop_size, (0, 0))
        offset = (int(rng.integers(resized_w - crop_size + 1)), int(rng.integers(resized_h - crop_size + 1)))
    box, _, _ = crop_box(width, height, image_size, crop_size, offset)
    if box == (0, 0, width, height) and (width, height) == (crop_size, crop_size):
        return np.asarray(image, dtype=np.uint8)
    resized = image.resize((crop_size, crop_size), resampling(method), box=box, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


def downsample(image: np.ndarray, size: int, *, method: str = "bicubic") -> np.ndarray:
    """Antialiased resize of uint8 [H, W, 3] to [size, size, 3] (SR low-res conditioning)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    resized = Image.fromarray(image).resize((size, size), resampling(method), reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


def to_signed_unit(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] (x / 127.5 - 1), in two passes without temporaries."""
    out = np.empty(image.shape, np.float32)
    np.multiply(image, np.float32(1 / 127.5), out=out, dtype=np.float32)
    return np.subtract(out, np.float32(1.0), out=out)
