"""sRGB -> CIELAB and nearest palette color, for naming the colors of pixels.

CIELAB (D65 white) is close to perceptually uniform, so Euclidean distance in it
(CIE76 Delta E) ranks "which color word is this" the way a viewer would, much better
than distance in RGB (where e.g. dark colors crowd together). Formulas: IEC 61966-2-1
(sRGB transfer curve) and CIE 15 (XYZ -> Lab).
"""

from __future__ import annotations

import numpy as np

from imagen_jax.data.shapes_scene import COLOR_NAMES, COLORS

_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """rgb [..., 3] in [0, 255] (any dtype) -> float32 Lab [..., 3] (L in [0, 100])."""
    c = np.asarray(rgb, np.float32) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _SRGB_TO_XYZ.T.astype(np.float32)) / _WHITE_D65.astype(np.float32)
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


PALETTE_RGB: np.ndarray = np.array([COLORS[name] for name in COLOR_NAMES], np.float32)  # [K, 3]
PALETTE_LAB: np.ndarray = srgb_to_lab(PALETTE_RGB)  # [K, 3], row k is COLOR_NAMES[k]


def palette_distances(lab: np.ndarray) -> np.ndarray:
    """Lab [..., 3] -> Delta E to every palette color, float32 [..., K].

    |x - p|^2 = |x|^2 - 2 x.p + |p|^2, one matmul instead of a [..., K, 3] difference.
    """
    lab = np.asarray(lab, np.float32)
    squared = (lab * lab).sum(-1, keepdims=True) - 2 * lab @ PALETTE_LAB.T + (PALETTE_LAB**2).sum(-1)
    return np.sqrt(np.maximum(squared, 0.0))


def nearest_color_index(lab: np.ndarray, exclude: int | None = None) -> np.ndarray:
    """Lab [..., 3] -> int [...] index into COLOR_NAMES of the nearest palette color
    (never `exclude`, when given)."""
    distances = palette_distances(lab)
    if exclude is not None:
        distances[..., exclude] = np.inf
    return np.argmin(distances, axis=-1)
