"""Imagen's second super-resolution stage: 256 -> 1024, the ~400M-parameter Efficient U-Net
without self-attention, with text cross-attention at the lowest level (SPEC 1, 4). It trains
on 64 -> 256 crops and runs fully convolutionally at 1024 (set resolution / low_res_resolution
in the training config accordingly)."""

import ml_collections
import sr256_600m


def get_config() -> ml_collections.ConfigDict:
    """SPEC 4: the sr256 configuration without self-attention, with text cross-attention kept."""
    config = sr256_600m.get_config()
    config.resolution = 1024
    config.low_res_resolution = 256
    config.model.attention = ("none", "none", "none", "cross")
    config.model.attention_every_block = False
    config.model.text_context_dim = 1024  # one shared projection of the T5 output
    return config
