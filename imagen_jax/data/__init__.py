"""Data: the built-in shapes dataset, user-image import, and the Grain input pipeline.

Datasets are TFDS ArrayRecord datasets (no TensorFlow needed) under a data dir
($IMAGEN_JAX_DATA_DIR or ~/imagen_jax_data). The pipeline turns one into per-host
batches: "image" float32 [b, H, W, 3] in [-1, 1], for SR stages "low_res", and text as
cached embeddings ("text_embedding" + "text_mask") or tokens ("text_tokens" + "text_mask").
"""

from imagen_jax.data.importer import import_dataset
from imagen_jax.data.pipeline import dataset_from_config, make_dataset
from imagen_jax.data.shapes_builder import ImagenShapes, prepare_shapes
from imagen_jax.data.shapes_render import render_scene
from imagen_jax.data.shapes_scene import COLORS, POSITIONS, SHAPES, SIZES, sample_scene
from imagen_jax.data.sources import open_builder, open_source
from imagen_jax.data.transforms import PrepareExample

__all__ = [
    "COLORS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "ImagenShapes",
    "PrepareExample",
    "dataset_from_config",
    "import_dataset",
    "make_dataset",
    "open_builder",
    "open_source",
    "prepare_shapes",
    "render_scene",
    "sample_scene",
]
