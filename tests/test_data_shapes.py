"""Shapes dataset: determinism, pixels that match the labels, TFDS ArrayRecord round trip."""

import io

import numpy as np
import pytest
from PIL import Image

from imagen_jax.data import shapes_scene
from imagen_jax.data.shapes_builder import (
    ImagenShapes,
    parse_shapes_config_name,
    prepare_shapes,
    shapes_config_name,
    shapes_example,
)
from imagen_jax.data.shapes_render import render_scene, signed_distance
from imagen_jax.data.shapes_scene import COLORS, SHAPES, sample_scene
from imagen_jax.data.sources import open_source


def test_scene_is_a_function_of_seed_split_and_index_only():
    in_order = [sample_scene(3, i) for i in range(20)]
    assert sample_scene(3, 17) == in_order[17]  # generated alone, out of order
    assert [sample_scene(3, i) for i in range(20)] == in_order
    assert [sample_scene(4, i) for i in range(20)] != in_order
    assert [sample_scene(3, i, "test") for i in range(20)] != in_order
    np.testing.assert_array_equal(render_scene(in_order[5], 32), render_scene(sample_scene(3, 5), 32))


def test_scenes_cover_the_vocabulary_and_captions_name_their_objects():
    scenes = [sample_scene(0, i) for i in range(400)]
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {o.color for s in scenes for o in s.objects} == set(COLORS)
    assert {s.background for s in scenes} == set(COLORS)
    assert {len(s.objects) for s in scenes} == {1, 2}
    assert len({s.caption for s in scenes}) > 300
    for scene in scenes:
        for obj in scene.objects:
            assert obj.shape in scene.caption and obj.color in scene.caption
            assert obj.color != scene.background
        if "background" in scene.caption:
            assert f"{scene.background} background" in scene.caption
        for size in shapes_scene.SIZE_NAMES:
            if f"{size} " in scene.caption:
                assert size in [o.size for o in scene.objects]
        for position, phrase in shapes_scene.POSITION_PHRASES.items():
            if phrase in scene.caption:
                assert position in [o.position for o in scene.objects]


def test_relations_in_captions_hold():
    for i in range(300):
        scene = sample_scene(1, i)
        if len(scene.objects) != 2:
            continue
        (x1, y1), (x2, y2) = scene.objects[0].center, scene.objects[1].center
        if "to the left of" in scene.caption:
            assert x1 < x2
        if "to the right of" in scene.caption:
            assert x1 > x2
        if " above " in scene.caption:
            assert y1 < y2
        if " below " in scene.caption:
            assert y1 > y2


def test_rendered_pixels_match_labels_and_edges_are_antialiased():
    resolution = 64
    for i in range(30):
        scene = sample_scene(0, i)
        image = render_scene(scene, resolution)
        assert image.shape == (resolution, resolution, 3) and image.dtype == np.uint8
        for obj in scene.objects:
            x, y = (int(c * resolution) for c in obj.center)
            np.testing.assert_array_equal(image[y, x], COLORS[obj.color])  # the center has its color
        # A pixel far outside every object shows the background.
        coords = (np.arange(resolution) + 0.5) / resolution
        inside = np.zeros((resolution, resolution), bool)
        for obj in scene.objects:
            inside |= signed_distance(obj, coords[None, :], coords[:, None]) < 2.0 / resolution
        ys, xs = np.nonzero(~inside)
        np.testing.assert_array_equal(image[ys, xs], np.broadcast_to(COLORS[scene.background], (len(ys), 3)))
    # Anti-aliasing: a circle's edge has pixels between its color and the background.
    circle = shapes_scene.ShapeObject("circle", "white", "large", "center", (0.5, 0.5), 0.42)
    image = render_scene(shapes_scene.Scene("black", (circle,), "", 0), 64)
    edge = (image[..., 0] > 0) & (image[..., 0] < 255)
    assert edge.sum() > 2 * np.pi * 0.21 * 64 * 0.8  # about one partial pixel per pixel of perimeter


def test_config_names_round_trip():
    assert shapes_config_name(64, 0, 50_000, 1_000) == "64px"
    assert parse_shapes_config_name("64px") is ImagenShapes.builder_configs["64px"]
    config = parse_shapes_config_name("256px_seed2_train300_test7")
    assert (config.resolution, config.seed, config.num_train, config.num_test) == (256, 2, 300, 7)
    assert config.name == "256px_seed2_train300_test7"
    with pytest.raises(ValueError, match="Bad shapes config name"):
        parse_shapes_config_name("64")


def test_tfds_array_record_round_trip(tmp_path):
    builder = prepare_shapes(24, num_train=10, num_test=3, seed=5, data_dir=tmp_path, num_workers=1)
    assert builder.info.file_format.value == "array_record"
    assert list((tmp_path / "imagen_shapes" / "24px_seed5_train10_test3" / "1.0.0").glob("*.array_record-*"))
    assert builder.info.splits["train"].num_examples == 10 and builder.info.splits["test"].num_examples == 3
    for split, count in (("train", 10), ("test", 3)):
        records = open_source("imagen_shapes/24px_seed5_train10_test3", split=split, data_dir=tmp_path)
        assert len(records) == count
        for index in (0, count - 1):
            record, expected = records[index], shapes_example(5, index, split, 24)
            scene = sample_scene(5, index, split)
            pixels = np.asarray(Image.open(io.BytesIO(record["image"])))
            np.testing.assert_array_equal(pixels, render_scene(scene, 24))
            assert record["caption"].decode() == expected["caption"] == scene.caption
            assert record["template"] == scene.template
            assert shapes_scene.COLOR_NAMES[record["background"]] == scene.background
            objects = record["objects"]
            assert [SHAPES[k] for k in objects["shape"]] == [o.shape for o in scene.objects]
            assert [shapes_scene.COLOR_NAMES[k] for k in objects["color"]] == [o.color for o in scene.objects]
            assert [shapes_scene.POSITION_NAMES[k] for k in objects["position"]] == [o.position for o in scene.objects]
            np.testing.assert_allclose(np.reshape(objects["center"], (-1, 2)), [o.center for o in scene.objects])
    # Preparing again reuses the files; a different seed is a different dataset.
    assert prepare_shapes(24, num_train=10, num_test=3, seed=5, data_dir=tmp_path).data_dir == builder.data_dir


def test_builder_accepts_a_copy_of_a_standard_config(tmp_path):
    """Grain workers unpickle builders with a COPY of their config; for a standard config
    name TFDS would refuse it as a custom config with a taken name."""
    import copy

    from imagen_jax.data.shapes_builder import ImagenShapes

    registered = ImagenShapes.builder_configs["32px"]
    builder = ImagenShapes(config=copy.deepcopy(registered), data_dir=str(tmp_path))
    assert builder.builder_config is registered
