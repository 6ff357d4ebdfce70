"""Imagen's second super-resolution stage: 256 -> 1024, the ~400M-parameter Efficient U-Net
without self-attention, with text cross-attention at the lowest level (SPEC 1, 4). It trains
on 64 -> 256 crops and runs fully convolutionally at 1024 (set resolution / low_res_resolution
in the training config accordingly)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = "sr"
    config.resolution = 1024
    config.low_res_resolution = 256
    config.model = ml_collections.ConfigDict(
        dict(
            family="efficient_unet",
            channels=(128, 256, 512, 1024),
            num_res_blocks=(2, 4, 8, 8),
            strides=(2, 2, 2, 2),
            attention=("none", "none", "none", "cross"),
            attention_every_block=False,
            num_heads=8,
            head_dim=None,
            embed_dim=1024,
            noise_sinusoid_dim=256,
            text_dim=4096,  # T5-XXL
            text_pool_heads=16,
            text_context_dim=1024,
            norm_groups=32,
            dropout=0.0,
            out_channels=3,
            low_res_conditioning=True,
            low_res_resize="bilinear",
            dtype="bfloat16",
            param_dtype="float32",
            remat=True,
            attention_implementation="auto",
        )
    )
    return config
