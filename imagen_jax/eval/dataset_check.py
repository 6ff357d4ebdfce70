"""True shapes-dataset images and their captions: the evaluator's self-test input."""

from __future__ import annotations

import numpy as np

from imagen_jax.data.shapes_render import render_scene
from imagen_jax.data.shapes_scene import sample_scene


def dataset_images(num_images: int, resolution: int, *, seed: int = 0, split: str = "test", start: int = 0):
    """Records start .. start + num_images - 1 of the shapes `split` for dataset `seed`,
    rendered at `resolution`: (uint8 [N, R, R, 3], list of N captions)."""
    if num_images < 1:
        raise ValueError(f"Need at least one dataset image to check, got {num_images}.")
    scenes = [sample_scene(seed, index, split) for index in range(start, start + num_images)]
    return np.stack([render_scene(s, resolution) for s in scenes]), [s.caption for s in scenes]
