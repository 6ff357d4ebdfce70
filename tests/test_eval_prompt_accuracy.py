"""The pixel analyzer and prompt accuracy: near-perfect on true dataset images (also
slightly blurred and noisy), about chance where the image does not show the prompt."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from imagen_jax.data.shapes_render import render_scene
from imagen_jax.data.shapes_scene import COLOR_NAMES, COLORS, SHAPES, sample_scene
from imagen_jax.eval import analyze_image, prompt_accuracy
from imagen_jax.eval.dataset_check import dataset_images
from imagen_jax.images import to_uint8

_RATES = ("correct", "strict", "color", "shape", "object", "two_object", "first_object", "second_object")
_RATES += ("background", "size", "position", "relation", "count")


@pytest.fixture(scope="module")
def images_32():
    return dataset_images(500, 32, seed=0, split="test")


@pytest.mark.parametrize("resolution", [32, 64])
def test_true_dataset_images_score_at_least_99_percent(resolution, images_32):
    images, captions = images_32 if resolution == 32 else dataset_images(500, resolution, seed=0, split="test")
    result = prompt_accuracy(images, captions)
    assert result["num_images"] == 500 and result["num_two_object"] >= 200
    for rate in _RATES:
        assert result[rate] >= 0.99, (rate, result)


def test_robust_to_mild_blur_and_noise(images_32):
    """Gaussian blur of std 0.5 px, then Gaussian noise of std 3% of the range."""
    images, captions = images_32
    blurred = ndimage.gaussian_filter(images.astype(np.float32), sigma=(0, 0.5, 0.5, 0))
    noisy = blurred + np.random.default_rng(0).normal(0.0, 0.03 * 255, images.shape)
    result = prompt_accuracy(to_uint8(noisy, value_range=(0, 255)), captions)
    for rate in ("correct", "color", "shape", "background", "count"):
        assert result[rate] >= 0.95, (rate, result)


def _one_large_object_scene():
    scenes = (sample_scene(0, i, "test") for i in range(100))
    return next(s for s in scenes if len(s.objects) == 1 and s.objects[0].size == "large")


def test_other_resolutions_and_aspect_ratios():
    scene = _one_large_object_scene()
    (obj,) = scene.objects
    wide = np.pad(render_scene(scene, 64), ((0, 0), (0, 24), (0, 0)), mode="edge")  # background extended
    for image in (render_scene(scene, 16), render_scene(scene, 256), wide):
        seen = analyze_image(image)
        assert seen.background == scene.background
        assert [(o.color, o.shape) for o in seen.objects] == [(obj.color, obj.shape)], image.shape


def test_mismatched_prompts_score_about_chance(images_32):
    """Each image scored against the next image's caption. A requested shape is then
    present by chance about 1/3 of the time, a requested color about 1/9 (9 object
    colors); a full prompt about 1/27 per object in the image."""
    images, captions = images_32
    result = prompt_accuracy(images, captions[1:] + captions[:1])
    assert 0.25 <= result["shape"] <= 0.45
    assert 0.05 <= result["color"] <= 0.2
    assert result["correct"] <= 0.06 and result["strict"] <= result["correct"]


def test_strict_needs_every_stated_attribute():
    """`correct` asks for color and shape; `strict` also for the stated size, position,
    background and relation: a true image of one prompt scored against its caption with one
    stated attribute changed stays `correct` but is not `strict`."""
    scene = _one_large_object_scene()
    (obj,) = scene.objects
    image = render_scene(scene, 64)
    other_background = next(c for c in ("white", "black", "gray") if c != scene.background and c != obj.color)
    prompts = [
        f"a large {obj.color} {obj.shape} on a {scene.background} background",
        f"a small {obj.color} {obj.shape} on a {scene.background} background",
        f"a large {obj.color} {obj.shape} on a {other_background} background",
        f"a {obj.color} {obj.shape}",
    ]
    result = prompt_accuracy(np.stack([image] * 4), prompts, per_image=True)
    assert [(x["correct"], x["strict"]) for x in result["images"]] == [
        (True, True),
        (True, False),
        (True, False),
        (True, True),
    ]
    assert result["strict"] == 0.5 and result["correct"] == 1.0


def test_noise_and_solid_images_show_no_prompt(images_32):
    """Uniform noise and solid colors contain no shape: `correct` must stay at or
    below the 1/27 chance level of a blind guess; the background, a 1-in-10 pick of
    the palette for these images, is right about 1/10 of the time."""
    _, captions = images_32
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (len(captions), 32, 32, 3), dtype=np.uint8)
    palette = np.array([COLORS[name] for name in COLOR_NAMES], np.uint8)
    solid = np.broadcast_to(palette[rng.integers(0, len(palette), len(captions))][:, None, None], noise.shape)
    for images in (noise, solid):
        result = prompt_accuracy(images, captions)
        assert result["correct"] <= 1 / 27
        assert 0.04 <= result["background"] <= 0.2


def test_each_wrong_attribute_is_caught():
    """The same scene rendered with one attribute changed fails exactly that attribute."""
    scene = _one_large_object_scene()
    (obj,) = scene.objects
    other_color = next(c for c in COLOR_NAMES if c not in (obj.color, scene.background))
    other_shape = next(s for s in SHAPES if s != obj.shape)
    for change, failed in (({"color": other_color}, "color"), ({"shape": other_shape}, "shape")):
        wrong = dataclasses.replace(scene, objects=(dataclasses.replace(obj, **change),))
        result = prompt_accuracy(render_scene(wrong, 32)[None], [scene.caption], per_image=True)
        assert result["correct"] == 0.0 and result[failed] == 0.0
        assert result["color" if failed == "shape" else "shape"] == 1.0
        assert result["images"][0]["seen_objects"]


def test_bad_input_gets_one_clear_error(images_32):
    images, captions = images_32
    with pytest.raises(ValueError, match="uint8 RGB image"):
        prompt_accuracy(images[:1].astype(np.float32) / 255, captions[:1])
    with pytest.raises(ValueError, match="resize it"):
        prompt_accuracy(images[:1, :8, :8], captions[:1])
    with pytest.raises(ValueError, match="one prompt per image"):
        prompt_accuracy(images[:2], captions[:1])
