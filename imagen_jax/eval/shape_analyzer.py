"""Deterministic pixel analyzer: image -> background color and the colored shapes on it.

No learning; every step is a fixed rule a reader can check by hand:
 1. Name every pixel's color: nearest palette entry (shapes_scene.COLORS) in CIELAB.
 2. Background = the most common color name on the image border.
 3. Objects = 4-connected regions of non-background pixels covering at least
    `min_area` of the image. A region's color is read from its core (the half of its
    pixels farthest from the background in Lab): the nearest non-background palette
    entry to their median RGB. A region whose core mostly names other colors (noise, a
    smear of several colors) is not an object.
 4. Coverage: the renderer (and any blur) mixes object and background linearly in RGB,
    so each pixel's coverage is alpha = <p - bg, c - bg> / |c - bg|^2 clipped to [0, 1],
    over the region grown by RING pixels (not into other regions). Geometry uses
    this soft mask, which keeps sub-pixel accuracy at 32 px.
 5. Shape, from two numbers of the soft mask that blur and pixel noise barely move:
    taper = the larger |third central moment| of the mass along x or y over
      area^1.5, scaled so the dataset's triangle reads 1 (its mass grows linearly
      toward its base); circles and squares are mirror-symmetric (0). A symmetric
      blur changes neither the third central moment nor the area;
    fill = area / (longest horizontal chord * longest vertical chord), chords being
      the largest row and column sums of coverage: square 1, circle pi/4, triangle
      (base = height, as drawn by shapes_render) 1/2.
    triangle if taper > TRIANGLE_MIN_TAPER or fill < TRIANGLE_MAX_FILL, else square if
    fill > SQUARE_MIN_FILL, else circle (thresholds midway between the ideal values).
 6. Size = nearest of shapes_scene.SIZES to the longest chord; position = nearest
    grid cell of shapes_scene.POSITIONS to the coverage-weighted centroid.

Measured on 500 test-split scenes (tests/test_eval_prompt_accuracy.py): every
attribute exact at 32 and 64 px, and after a 0.5 px Gaussian blur plus 3% noise;
benchmarks/eval_robustness.py tabulates heavier blur and noise. Known limits at 32 px:
under a 1 px blur the small (6 px) shapes lose their corners (squares and triangles
start to read as circles), and two objects closer than about a pixel merge into one
region, read as one object.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from imagen_jax.data.shapes_scene import (
    COLOR_NAMES,
    POSITION_NAMES,
    POSITIONS,
    SIZE_NAMES,
    SIZES,
)
from imagen_jax.eval.color_space import PALETTE_LAB, nearest_color_index, srgb_to_lab

MIN_RESOLUTION, MAX_RESOLUTION = 16, 1024
TRIANGLE_MIN_TAPER = 0.5  # between 0 (circle, square) and 1 (triangle)
TRIANGLE_MAX_FILL = 0.64  # between 1/2 (triangle) and pi/4 = 0.785 (circle)
SQUARE_MIN_FILL = 0.89  # between pi/4 (circle) and 1 (square)
MIN_OBJECT_AREA = 0.005  # fraction of the image; a quarter of the smallest dataset shape
MIN_CORE_PURITY = 0.5  # fraction of a region's core pixels that must name its color
RING = 2  # pixels added around a region for its coverage: catches edges softened by blur

_POSITION_CENTERS = np.array([POSITIONS[name] for name in POSITION_NAMES])  # [9, 2]
_SIZE_EXTENTS = np.array([SIZES[name] for name in SIZE_NAMES])


@dataclasses.dataclass(frozen=True)
class DetectedObject:
    """One shape found in an image. Geometry in relative units (x right, y down)."""

    color: str
    shape: str
    size: str
    position: str
    center: tuple[float, float]  # coverage-weighted centroid
    extent: float  # longest horizontal or vertical chord
    area: float  # summed coverage / image area
    fill: float  # area / (longest horizontal chord * longest vertical chord)
    taper: float  # 1 for the dataset's triangle, 0 for mirror-symmetric shapes (_taper)
    color_error: float  # Delta E (Lab) between the region's core color and its palette color


@dataclasses.dataclass(frozen=True)
class ImageAnalysis:
    """An image's background color name and its objects, largest first."""

    background: str
    objects: tuple[DetectedObject, ...]


def check_image(image: np.ndarray) -> None:
    """Raises one ValueError naming the fix unless `image` is uint8 [H, W, 3], 16 <= H, W <= 1024."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"Expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}; convert model "
            f"output with imagen_jax.images.to_uint8(x, value_range=(-1, 1)) and drop any alpha channel."
        )
    if not all(MIN_RESOLUTION <= side <= MAX_RESOLUTION for side in image.shape[:2]):
        raise ValueError(
            f"Image size {image.shape[:2]} is outside [{MIN_RESOLUTION}, {MAX_RESOLUTION}] pixels per side; "
            f"resize it into that range before evaluating."
        )


def classify_shape(fill: float, taper: float) -> str:
    """Shape name from the soft mask's taper and chord fill (module docstring, step 5)."""
    if taper > TRIANGLE_MIN_TAPER or fill < TRIANGLE_MAX_FILL:
        return "triangle"
    return "square" if fill > SQUARE_MIN_FILL else "circle"


def _border(labels: np.ndarray) -> np.ndarray:
    return np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])


def _measure(alpha: np.ndarray, top: int, left: int, height: int, width: int):
    """Soft-mask geometry in relative units: (area, fill, extent, center, taper)."""
    area = float(alpha.sum())
    chord_x, chord_y = float(alpha.sum(axis=1).max()), float(alpha.sum(axis=0).max())
    ys, xs = np.indices(alpha.shape)
    cx = (float((alpha * xs).sum()) / area + left + 0.5) / width
    cy = (float((alpha * ys).sum()) / area + top + 0.5) / height
    fill = area / max(chord_x * chord_y, 1e-6)
    extent = max(chord_x / width, chord_y / height)
    return area / (height * width), fill, extent, (cx, cy), _taper(alpha)


def _taper(alpha: np.ndarray) -> float:
    """How much the mass piles up toward one side, along x or y, scaled so that the
    dataset's triangle (base = height h, area A = h^2 / 2) reads 1 and anything
    mirror-symmetric reads 0: |third central moment| / A^1.5 * 135 / (2 sqrt 2).

    The third central moment of a triangle's mass along its axis is -h^3 / 135
    (density 2t / h^2 on [0, h]). Blurring with a symmetric kernel changes neither the
    third central moment nor the area (cumulants add), so blur leaves this unchanged.
    """
    area = float(alpha.sum())
    weights = alpha / area
    tapers = []
    for axis in (0, 1):
        profile = weights.sum(axis=1 - axis)
        t = np.arange(len(profile), dtype=np.float64)
        mean = (profile * t).sum()
        tapers.append(abs((profile * (t - mean) ** 3).sum()) / area**1.5 * 135 / (2 * np.sqrt(2)))
    return float(max(tapers))


def analyze_image(image: np.ndarray, *, min_area: float = MIN_OBJECT_AREA) -> ImageAnalysis:
    """uint8 [H, W, 3] -> ImageAnalysis (background color name, detected objects).

    Deterministic; see the module docstring for every rule. `min_area` is the smallest
    object, as a fraction of the image area.
    """
    check_image(image)
    image = np.asarray(image)
    height, width = image.shape[:2]
    lab = srgb_to_lab(image)
    labels = nearest_color_index(lab)
    background = int(np.argmax(np.bincount(_border(labels), minlength=len(COLOR_NAMES))))
    background_pixels = image[labels == background]
    background_rgb = np.median(background_pixels, axis=0) if len(background_pixels) else image.reshape(-1, 3)[0]
    background_rgb = background_rgb.astype(np.float32)
    distance_to_background = np.linalg.norm(lab - PALETTE_LAB[background], axis=-1)

    regions, count = ndimage.label(labels != background)
    areas = np.bincount(regions.ravel(), minlength=count + 1)
    objects = []
    for region, box in enumerate(ndimage.find_objects(regions), start=1):
        if box is None or areas[region] < min_area * height * width:
            continue
        # Grow the region by RING pixels so that soft edge pixels named "background" count too.
        box = tuple(slice(max(s.start - RING, 0), min(s.stop + RING, n)) for s, n in zip(box, (height, width)))
        inside = regions[box] == region
        distances = distance_to_background[box][inside]
        core = distances >= np.median(distances)
        core_rgb = np.median(image[box][inside][core].astype(np.float32), axis=0)
        color = int(nearest_color_index(srgb_to_lab(core_rgb), exclude=background))
        if np.mean(labels[box][inside][core] == color) < MIN_CORE_PURITY:
            continue
        grown = ndimage.binary_dilation(inside, structure=np.ones((3, 3), bool), iterations=RING)
        grown &= (regions[box] == 0) | inside  # never take another region's pixels
        direction = core_rgb - background_rgb
        offset = image[box].astype(np.float32) - background_rgb
        alpha = np.clip(offset @ direction / max(float(direction @ direction), 1e-6), 0.0, 1.0) * grown
        if alpha.sum() < 1.0:  # less than one pixel's worth of coverage: nothing to measure
            continue
        area, fill, extent, center, taper = _measure(alpha, box[0].start, box[1].start, height, width)
        objects.append(
            DetectedObject(
                color=COLOR_NAMES[color],
                shape=classify_shape(fill, taper),
                size=SIZE_NAMES[int(np.argmin(np.abs(_SIZE_EXTENTS - extent)))],
                position=POSITION_NAMES[int(np.argmin(np.linalg.norm(_POSITION_CENTERS - center, axis=-1)))],
                center=center,
                extent=extent,
                area=area,
                fill=fill,
                taper=taper,
                color_error=float(np.linalg.norm(srgb_to_lab(core_rgb) - PALETTE_LAB[color])),
            )
        )
    objects.sort(key=lambda o: -o.area)
    return ImageAnalysis(background=COLOR_NAMES[background], objects=tuple(objects))
