"""Pure numpy renderer for shapes scenes, anti-aliased by signed distance.

Each shape is a signed distance d(p) (negative inside) evaluated at pixel centers in
pixel units; its coverage of a pixel is clip(0.5 - d, 0, 1), a one-pixel linear ramp
across the edge. Shapes are composited over the background in caption order.
"""

from __future__ import annotations

import numpy as np

from imagen_jax.data.shapes_scene import COLORS, Scene, ShapeObject


def _pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-center coordinates in relative units: x [1, R], y [R, 1]."""
    coords = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    return coords[None, :], coords[:, None]


def signed_distance(obj: ShapeObject, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to `obj`'s outline (relative units, < 0 inside), broadcast over x, y.

    circle: diameter = extent; square: side = extent (axis aligned); triangle: isosceles,
    pointing up, base = height = extent. Polygons use the max over edges of the distance
    to each edge's line, exact inside and near edges, which is all anti-aliasing needs.
    """
    cx, cy = obj.center
    half = obj.extent / 2
    dx, dy = x - cx, y - cy
    if obj.shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - half
    if obj.shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - half
    if obj.shape == "triangle":
        # Apex (0, -half), base corners (+-half, +half). Side lines have outward normals
        # (+-2, -1)/sqrt(5) and pass through the apex; the base line is dy = half.
        side = (2 * np.abs(dx) - dy - half) / np.sqrt(5.0)
        return np.maximum(side, dy - half)
    raise ValueError(f"Unknown shape {obj.shape!r}.")


def render_scene(scene: Scene, resolution: int) -> np.ndarray:
    """uint8 [R, R, 3] image of `scene` at `resolution` pixels per side."""
    if resolution < 8:
        raise ValueError(f"Shapes resolution must be at least 8 pixels, got {resolution}.")
    x, y = _pixel_grid(resolution)
    image = np.empty((resolution, resolution, 3), np.float32)
    image[...] = np.asarray(COLORS[scene.background], np.float32)
    for obj in scene.objects:
        coverage = np.clip(0.5 - signed_distance(obj, x, y) * resolution, 0.0, 1.0)[..., None]
        image += coverage * (np.asarray(COLORS[obj.color], np.float32) - image)
    return np.rint(image).astype(np.uint8)
