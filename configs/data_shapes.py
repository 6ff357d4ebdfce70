"""`config.data` sections for small experiments on the built-in shapes dataset, used by the
stage presets: `config.data = data_shapes.data_config("base64")`. Every field is read by
`imagen_jax.data.pipeline.dataset_from_config`. The sizes of the examples are the stage's own:
the crop is `resolution`, the low-res image `low_res_resolution` (0: none), the per-host batch
train.batch_size / process count; the data section says only how to get there:

  name               TFDS dataset 'name[/config]'; imagen_shapes/<R>px is generated on first use
  data_dir           TFDS data dir; '' = $IMAGEN_JAX_DATA_DIR or ~/imagen_jax_data
  split              TFDS split string ('train', 'test', 'train[:90%]', ...)
  prepare_shapes     generate a missing imagen_shapes dataset instead of failing
  image_key          record key of the image (nested keys as 'a/b')
  text_key           record key of the caption (str/bytes, or a list: the first is used)
  resize_to          shorter image side after the antialiased resize, before the square crop
                     of side `resolution`; 0 = the resolution (the center square, no cropping)
  random_crop        random crop position (SR training); False = center crop
  resize_method      box | bilinear | bicubic | lanczos, for the image
  low_res_method     same choices, for the low-res image (always antialiased)
  text               'embedding' | 'tokens' | 'none'; overridden by what is given: a cache
                     (text_embedding_dir or an argument) means 'embedding', a tokenizer 'tokens'
  text_embedding_dir directory of imagen_jax.text.embedding_cache for this dataset and split
  max_text_length    L, the padded text length
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
    # name: (dataset resolution, random_crop)
    "base32": (32, False),
    "base64": (64, False),
    "sr64": (64, False),
    "sr128": (128, True),
    "sr256": (256, True),
}


def data_config(preset: str = "base64") -> ml_collections.ConfigDict:
    """The data section of a shapes experiment (presets: PRESETS)."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown data preset {preset!r}; use one of {sorted(PRESETS)}.")
    resolution, random_crop = PRESETS[preset]
    data = ml_collections.ConfigDict()
    data.name = f"imagen_shapes/{resolution}px"
    data.data_dir = ""
    data.split = "train"
    data.prepare_shapes = True
    data.image_key = "image"
    data.text_key = "caption"
    data.resize_to = 0
    data.random_crop = random_crop
    data.resize_method = "bicubic"
    data.low_res_method = "bicubic"
    data.text = "embedding"
    data.text_embedding_dir = ""
    data.max_text_length = 128
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
