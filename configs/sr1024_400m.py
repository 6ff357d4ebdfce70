"""Imagen's second super-resolution stage: 256 -> 1024, the ~400M-parameter Efficient U-Net
without self-attention, with text cross-attention at the lowest level (design.md §1, §4).

It trains on 64 -> 256 crops (design.md §1), so this training config's resolution is 256 with 64px
low-res inputs: random 256px crops of 1024px images, each crop downsampled to 64px. Being
fully convolutional, the trained model samples at 1024 from 256px inputs (sampling.image_size
= 1024; the input size keeps the 4x factor), so it follows sr256 in a cascade. Noise schedule:
linear (design.md §1). Training otherwise as sr256: Adam, batch 2048, peak lr 1e-4, 10k
warmup, cosine decay over 2.5M steps, and the same settings for 64 TPU v4 chips (v4-128):
full FSDP, remat, 2 accumulated micro-batches of 16 per chip. compile-check refuses 32 per
chip (35.3 GiB of temporaries; README,
benchmarks/results/compile_check_sr1024_400m_v4-128_accum1.json); at 2 x 16 it fits:
19.4 of 32 GiB per chip (temporaries 18.4 GiB; compile_check_sr1024_400m_v4-128.json).
"""

import ml_collections
import sr256_600m


def get_config() -> ml_collections.ConfigDict:
    """design.md §4: the sr256 configuration without self-attention, with text cross-attention kept."""
    config = sr256_600m.get_config()
    config.resolution = 256  # training crops; sampling runs at 1024
    config.low_res_resolution = 64
    config.model.attention = ("none", "none", "none", "cross")
    config.model.attention_every_block = False
    config.model.text_context_dim = 1024  # one shared projection of the T5 output
    config.diffusion.schedule.kind = "linear"
    data = config.data
    data.name = "imagen_shapes/1024px"
    data.resize_to, data.random_crop = 1024, True  # random 256 px crops of the 1024 px images
    config.sampling.image_size = 1024  # from 256 px inputs
    return config
