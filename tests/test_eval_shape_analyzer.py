"""The analyzer's shape numbers match their closed forms (shape_analyzer docstring, step 5)."""

import numpy as np
import pytest
from scipy import ndimage

from imagen_jax.data.shapes_render import render_scene
from imagen_jax.data.shapes_scene import Scene, ShapeObject
from imagen_jax.eval import analyze_image

# Ideal fill (area / longest chords product) and taper of each shape as drawn by shapes_render.
_IDEAL = {"square": (1.0, 0.0), "circle": (np.pi / 4, 0.0), "triangle": (0.5, 1.0)}


def _single(shape: str, color: str = "blue", background: str = "yellow") -> Scene:
    obj = ShapeObject(shape, color, "large", "center", (0.5, 0.5), 0.42)
    return Scene(background, (obj,), f"a large {color} {shape}", 0)


@pytest.mark.parametrize("shape", sorted(_IDEAL))
def test_fill_and_taper_match_closed_forms(shape):
    fill, taper = _IDEAL[shape]
    image = render_scene(_single(shape), 128)
    (seen,) = analyze_image(image).objects
    assert (seen.shape, seen.color, seen.size, seen.position) == (shape, "blue", "large", "center")
    # (the longest horizontal chord of a triangle is its last full row: about a pixel short of the base)
    assert seen.fill == pytest.approx(fill, abs=0.03) and seen.taper == pytest.approx(taper, abs=0.03)
    assert seen.center == pytest.approx((0.5, 0.5 + (0.42 / 6 if shape == "triangle" else 0.0)), abs=0.01)
    # a symmetric blur leaves the third central moment and the area, hence the taper, unchanged
    blurred = ndimage.gaussian_filter(image.astype(np.float32), sigma=(2.0, 2.0, 0))
    (soft,) = analyze_image(np.rint(blurred).astype(np.uint8)).objects
    assert soft.shape == shape and soft.taper == pytest.approx(taper, abs=0.06)


def test_background_only_and_min_area():
    flat = np.full((32, 32, 3), (40, 80, 225), np.uint8)
    assert analyze_image(flat).background == "blue" and analyze_image(flat).objects == ()
    flat[10:12, 10:12] = (220, 30, 30)  # 4 pixels: below MIN_OBJECT_AREA (0.5% = 5 pixels)
    assert analyze_image(flat).objects == ()
