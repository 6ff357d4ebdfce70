"""`config.data` sections for small experiments on the built-in shapes dataset.

Use as a whole config (`--config=configs/data_shapes.py:sr256`) or from a model preset:
`config.data = data_shapes.data_config("base64")`. Every field is read by
`imagen_jax.data.pipeline.dataset_from_config`:

  name               TFDS dataset 'name[/config]'; imagen_shapes/<R>px is generated on first use
  data_dir           TFDS data dir; '' = $IMAGEN_JAX_DATA_DIR or ~/imagen_jax_data
  split              TFDS split string ('train', 'test', 'train[:90%]', ...)
  prepare_shapes     generate a missing imagen_shapes dataset instead of failing
  image_key          record key of the image (nested keys as 'a/b')
  text_key           record key of the caption (str/bytes, or a list: the first is used)
  image_size         shorter image side after the antialiased resize
  crop_size          side of the square crop; 0 = image_size
  random_crop        random crop position (SR training); False = center crop
  low_res_size       side of the SR conditioning image "low_res"; 0 = base stage (none)
  resize_method      box | bilinear | bicubic | lanczos, for the image
  low_res_method     same choices, for the low-res image (always antialiased)
  text               'embedding' | 'tokens' | 'none'; overridden by what is given: a cache
                     (text_embedding_dir or an argument) means 'embedding', a tokenizer 'tokens'
  text_embedding_dir directory of imagen_jax.text.embedding_cache for this dataset and split
  max_text_length    L, the padded text length
  batch_size_per_host  examples per batch on each host (the trainer may override)
  seed, shuffle      shuffling and random-crop seed; shuffle each epoch
  num_epochs         0 = repeat forever
  num_workers        Grain worker processes (0 = in the main process)
  worker_buffer_size batches buffered per worker
  read_threads, read_buffer_size  threads (and their buffer) preparing batches in each process
  prefetch           batches made ready (float32) ahead of the trainer, in a background thread
  keep_caption       also put the caption strings in the batch ("caption")
  shapes_labels      also put the shapes labels in the batch ("labels")
"""

import ml_collections

PRESETS = {
    # name: (dataset resolution, image_size, low_res_size, random_crop)
    "base32": (32, 32, 0, False),
    "base64": (64, 64, 0, False),
    "sr64": (64, 64, 32, False),
    "sr128": (128, 128, 32, True),
    "sr256": (256, 256, 64, True),
}


def data_config(preset: str = "base64") -> ml_collections.ConfigDict:
    """The data section of a shapes experiment (presets: PRESETS)."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown data preset {preset!r}; use one of {sorted(PRESETS)}.")
    resolution, image_size, low_res_size, random_crop = PRESETS[preset]
    data = ml_collections.ConfigDict()
    data.name = f"imagen_shapes/{resolution}px"
    data.data_dir = ""
    data.split = "train"
    data.prepare_shapes = True
    data.image_key = "image"
    data.text_key = "caption"
    data.image_size = image_size
    data.crop_size = 0
    data.random_crop = random_crop
    data.low_res_size = low_res_size
    data.resize_method = "bicubic"
    data.low_res_method = "bicubic"
    data.text = "embedding"
    data.text_embedding_dir = ""
    data.max_text_length = 128
    data.batch_size_per_host = 32
    data.seed = 0
    data.shuffle = True
    data.num_epochs = 0
    data.num_workers = 2
    data.worker_buffer_size = 2
    data.read_threads = 4
    data.read_buffer_size = 4
    data.prefetch = 2
    data.keep_caption = False
    data.shapes_labels = False
    return data


def get_config(preset: str = "base64") -> ml_collections.ConfigDict:
    """A config holding only `data` (for `imagen-jax data` commands and tests)."""
    config = ml_collections.ConfigDict()
    config.data = data_config(preset or "base64")
    return config
