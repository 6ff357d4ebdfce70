"""TFDS builder of the shapes dataset, written as ArrayRecord without TensorFlow.

Dataset name `imagen_shapes`; one builder config per (resolution, seed, sizes), named
`{R}px` for the defaults and `{R}px_seed{S}_train{N}_test{M}`-style otherwise (only the
non-default parts appear), e.g. `imagen_shapes/64px`, `imagen_shapes/256px_train2000`.
Record i of a split is `render_scene(sample_scene(seed, i, split), R)` with its labels;
shuffling is disabled at write time so the record index is the scene index (Grain
shuffles at read time).

Features (per record):
  image       uint8 [R, R, 3] (PNG)
  caption     text
  template    int32, caption template index
  background  ClassLabel(COLOR_NAMES)
  objects     Sequence, 1 or 2 entries, in caption order:
                shape ClassLabel(SHAPES), color ClassLabel(COLOR_NAMES),
                size ClassLabel(SIZE_NAMES), position ClassLabel(POSITION_NAMES),
                center float32 [2] (x, y relative, y down), extent float32 (relative)

TensorFlow-free: images are handed to TFDS already encoded as PNG bytes (TFDS would
otherwise call tf.image.encode_png), and the example serializer TFDS uses for
ArrayRecord is its own protobuf code.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from imagen_jax.data.shapes_render import render_scene
from imagen_jax.data.shapes_scene import (
    COLOR_NAMES,
    POSITION_NAMES,
    SHAPES,
    SIZE_NAMES,
    SPLIT_IDS,
    sample_scene,
)
from imagen_jax.data.sources import prepare_builder, resolve_data_dir
from imagen_jax.data.worker_pool import ordered_map

DATASET_NAME = "imagen_shapes"
DEFAULT_NUM_TRAIN = 50_000
DEFAULT_NUM_TEST = 1_000
DEFAULT_SEED = 0
STANDARD_RESOLUTIONS = (32, 64, 256, 1024)
_NAME_PATTERN = re.compile(r"^(\d+)px(?:_seed(\d+))?(?:_train(\d+))?(?:_test(\d+))?$")


@dataclasses.dataclass(kw_only=True)
class ShapesConfig(tfds.core.BuilderConfig):
    """Resolution, seed and split sizes of one shapes dataset."""

    resolution: int = 64
    seed: int = DEFAULT_SEED
    num_train: int = DEFAULT_NUM_TRAIN
    num_test: int = DEFAULT_NUM_TEST


def shapes_config_name(resolution: int, seed: int, num_train: int, num_test: int) -> str:
    """Canonical config name: '64px', '64px_seed3', '256px_train2000_test100', ..."""
    name = f"{resolution}px"
    if seed != DEFAULT_SEED:
        name += f"_seed{seed}"
    if num_train != DEFAULT_NUM_TRAIN:
        name += f"_train{num_train}"
    if num_test != DEFAULT_NUM_TEST:
        name += f"_test{num_test}"
    return name


def _make_config(resolution: int, seed: int, num_train: int, num_test: int) -> ShapesConfig:
    if resolution < 8 or num_train < 0 or num_test < 0 or seed < 0:
        raise ValueError(
            f"Shapes dataset needs resolution >= 8 and non-negative seed and sizes; got "
            f"resolution={resolution}, seed={seed}, num_train={num_train}, num_test={num_test}."
        )
    return ShapesConfig(
        name=shapes_config_name(resolution, seed, num_train, num_test),
        description=f"{resolution}x{resolution} shapes, seed {seed}, {num_train} train / {num_test} test records.",
        resolution=resolution,
        seed=seed,
        num_train=num_train,
        num_test=num_test,
    )


def shapes_config(
    resolution: int, *, seed: int = DEFAULT_SEED, num_train: int = DEFAULT_NUM_TRAIN, num_test: int = DEFAULT_NUM_TEST
) -> ShapesConfig | str:
    """The builder config for these settings: the class's own object for standard ones
    (TFDS refuses a second object of the same name), else a new custom config."""
    name = shapes_config_name(resolution, seed, num_train, num_test)
    if name in ImagenShapes.builder_configs:
        return ImagenShapes.builder_configs[name]
    return _make_config(resolution, seed, num_train, num_test)


def parse_shapes_config_name(name: str) -> ShapesConfig:
    """Inverse of `shapes_config_name`."""
    match = _NAME_PATTERN.match(name)
    if match is None:
        raise ValueError(f"Bad shapes config name {name!r}: expected e.g. '64px' or '64px_seed1_train2000_test100'.")
    resolution, seed, num_train, num_test = match.groups()
    return shapes_config(
        int(resolution),
        seed=int(seed) if seed else DEFAULT_SEED,
        num_train=int(num_train) if num_train else DEFAULT_NUM_TRAIN,
        num_test=int(num_test) if num_test else DEFAULT_NUM_TEST,
    )


def shapes_example(seed: int, index: int, split: str, resolution: int) -> dict:
    """One record of the dataset as TFDS features (image as PNG bytes)."""
    scene = sample_scene(seed, index, split)
    buffer = io.BytesIO()
    Image.fromarray(render_scene(scene, resolution)).save(buffer, format="PNG")
    return {
        "image": buffer.getvalue(),
        "caption": scene.caption,
        "template": scene.template,
        "background": scene.background,
        "objects": {
            "shape": [o.shape for o in scene.objects],
            "color": [o.color for o in scene.objects],
            "size": [o.size for o in scene.objects],
            "position": [o.position for o in scene.objects],
            "center": np.asarray([o.center for o in scene.objects], np.float32).reshape(-1, 2),
            "extent": np.asarray([o.extent for o in scene.objects], np.float32),
        },
    }


def _example_chunk(args: tuple[int, str, int, int, int]) -> list[dict]:
    seed, split, resolution, start, stop = args
    return [shapes_example(seed, i, split, resolution) for i in range(start, stop)]


class ImagenShapes(tfds.core.GeneratorBasedBuilder):
    """Procedural colored shapes with captions (see module docstring).

    `num_workers` processes render and PNG-encode records; the output does not depend on it.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [_make_config(r, DEFAULT_SEED, DEFAULT_NUM_TRAIN, DEFAULT_NUM_TEST) for r in STANDARD_RESOLUTIONS]
    DEFAULT_CONFIG_NAME = "64px"

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's default probes `importlib_resources`, a package it only requires on
        # Python < 3.9; without it every packaged builder fails. This file is the code path.
        return epath.Path(__file__)

    def __init__(self, *, num_workers: int = 1, config=None, **kwargs):
        self._num_workers = max(1, int(num_workers))
        # A builder rebuilt from a pickle (e.g. in a Grain worker process) carries a COPY of
        # its standard config, which TFDS refuses as a custom config with a taken name: map an
        # equal copy back to the registered instance.
        if isinstance(config, tfds.core.BuilderConfig) and self.builder_configs.get(config.name) == config:
            config = self.builder_configs[config.name]
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        resolution = self.builder_config.resolution
        label = tfds.features.ClassLabel
        return tfds.core.DatasetInfo(
            builder=self,
            description="Procedurally generated colored shapes with template captions and labels.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(resolution, resolution, 3), encoding_format="png"),
                    "caption": tfds.features.Text(),
                    "template": np.int32,
                    "background": label(names=COLOR_NAMES),
                    "objects": tfds.features.Sequence(
                        {
                            "shape": label(names=SHAPES),
                            "color": label(names=COLOR_NAMES),
                            "size": label(names=SIZE_NAMES),
                            "position": label(names=POSITION_NAMES),
                            "center": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                            "extent": np.float32,
                        }
                    ),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        config = self.builder_config
        sizes = {"train": config.num_train, "test": config.num_test}
        assert set(sizes) == set(SPLIT_IDS)
        return {split: self._generate_examples(split, n) for split, n in sizes.items() if n > 0}

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
        config = self.builder_config
        chunk = 256
        tasks = [
            (config.seed, split, config.resolution, start, min(start + chunk, num_examples))
            for start in range(0, num_examples, chunk)
        ]
        with ordered_map(_example_chunk, tasks, num_workers=self._num_workers) as chunks:
            yield from _enumerate_chunks(chunks)


def _enumerate_chunks(chunks) -> Iterator[tuple[int, dict]]:
    index = 0
    for examples in chunks:
        for example in examples:
            yield index, example
            index += 1


def prepare_shapes(
    resolution: int = 64,
    *,
    seed: int = DEFAULT_SEED,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_test: int = DEFAULT_NUM_TEST,
    data_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
) -> ImagenShapes:
    """Generates the shapes dataset (if not there yet) and returns its builder.

    Output: data_dir/imagen_shapes/<config name>/1.0.0/*.array_record. `num_workers`
    defaults to the number of CPUs.
    """
    config = shapes_config(resolution, seed=seed, num_train=num_train, num_test=num_test)

    def make_builder(directory: str) -> ImagenShapes:
        return ImagenShapes(
            config=config,
            data_dir=directory,
            file_format="array_record",
            num_workers=num_workers or os.cpu_count() or 1,
        )

    data_dir = resolve_data_dir(data_dir)
    builder = make_builder(data_dir)
    return builder if builder.is_prepared() else prepare_builder(make_builder, data_dir)
