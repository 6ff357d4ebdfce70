"""Small base stage for the built-in shapes dataset: text -> 32x32, ~2M parameters, sized
to train on 2 CPU cores (ADM-style UNet, same code path as base64_2b): about
48 GFLOP per forward+backward at batch 32 (benchmarks/unet_step.py)."""

import data_shapes
import ml_collections
import stage_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.resolution = 32
    config.low_res_resolution = 0  # a base stage (an SR stage: the side of its low-res input)
    config.model = ml_collections.ConfigDict(
        dict(
            family="unet",
            channels=24,
            channel_mult=(1, 2, 4),
            num_res_blocks=1,
            attention_resolutions=(8,),
            head_dim=24,
            num_heads=None,
            resblock_updown=True,
            patch_size=1,
            embed_dim=128,
            noise_sinusoid_dim=64,
            text_dim=256,  # must equal the text encoder's output width
            text_pool_heads=4,
            text_context_dim=None,
            norm_groups=8,
            dropout=0.0,
            out_channels=3,
            dtype="float32",
            param_dtype="float32",
            remat=False,
            attention_implementation="auto",
        )
    )
    config.data = data_shapes.data_config("base32")
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
