"""Small super-resolution stage for the built-in shapes dataset: 32 -> 64, a ~2M-parameter
Efficient U-Net sized to train on 2 CPU cores (same code path as sr256_600m): about
59 GFLOP per forward+backward at batch 32 (benchmarks/unet_step.py)."""

import data_shapes
import ml_collections
import stage_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.resolution = 64
    config.low_res_resolution = 32
    config.model = ml_collections.ConfigDict(
        dict(
            family="efficient_unet",
            channels=(32, 64, 128),
            num_res_blocks=(1, 2, 2),
            strides=(2, 2, 2),
            attention=("none", "none", "self"),
            attention_every_block=False,
            num_heads=4,
            head_dim=None,
            embed_dim=128,
            noise_sinusoid_dim=64,
            text_dim=256,  # must equal the text encoder's output width
            text_pool_heads=4,
            text_context_dim=None,
            norm_groups=8,
            dropout=0.0,
            out_channels=3,
            low_res_resize="bilinear",
            dtype="float32",
            param_dtype="float32",
            remat=False,
            attention_implementation="auto",
        )
    )
    config.data = data_shapes.data_config("sr64")
    stage_defaults.add_training_sections(
        config,
        optimizer="adam",
        steps=3000,
        batch_size=32,
        peak_lr=1e-3,
        warmup_steps=100,
        ema_decay=0.999,
        checkpoint_every=500,
        sample_every=500,
        log_every=25,
    )
    return config
