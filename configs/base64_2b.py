"""Imagen's base stage: text -> 64x64, the ~2B-parameter ADM-style UNet (design.md §1, §4):
512 channels, channel_mult (1, 2, 3, 4), 3 ResNet blocks per level, 64 channels per head,
self-attention with the text in its keys/values at 32, 16 and 8 px.

Training as the paper (design.md §1): Adafactor, batch 2048, peak lr 1e-4 with 10k warmup steps and
cosine decay over 2.5M steps, frozen T5-XXL embeddings; the data section defaults to the
built-in 64px shapes dataset (point data.name at a TFDS image-text dataset for real runs).
The mesh and rematerialization are the settings `imagen-jax compile-check --topology v4-256`
found to fit 128 TPU v4 chips (README; benchmarks/results/compile_check_base64_2b_v4-256.json).
"""

import data_shapes
import ml_collections
import stage_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.resolution = 64
    config.low_res_resolution = 0  # a base stage (an SR stage: the side of its low-res input)
    config.model = ml_collections.ConfigDict(
        dict(
            family="unet",
            channels=512,
            channel_mult=(1, 2, 3, 4),
            num_res_blocks=3,
            attention_resolutions=(32, 16, 8),
            head_dim=64,
            num_heads=None,
            resblock_updown=True,
            patch_size=1,
            embed_dim=2048,  # ADM: 4 x channels
            noise_sinusoid_dim=512,
            text_dim=4096,  # T5-XXL
            text_pool_heads=32,
            text_context_dim=512,  # T5 projected once (LayerNorm + Dense), then LayerNorm + k/v per attention layer
            norm_groups=32,
            dropout=0.0,
            out_channels=3,
            dtype="bfloat16",
            param_dtype="float32",
            remat=True,
            attention_implementation="auto",
        )
    )
    config.data = data_shapes.data_config("base64")
    stage_defaults.add_training_sections(config, optimizer="adafactor", steps=2_500_000, batch_size=2048)
    config.text.encoder = "google/t5-v1_1-xxl"
    config.mesh.data, config.mesh.fsdp = 1, -1
    return config
