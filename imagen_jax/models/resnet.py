"""The ResNet block (design.md §4): GN -> swish -> conv3x3 -> GN [-> scale-shift] -> swish ->
[dropout ->] conv3x3, plus the skip (1x1 conv when the width changes).

With `resample` it is ADM/BigGAN's up/down block: both paths are resampled (nearest 2x up,
2x2 average down) after the first activation. With an embedding it is ADM's scale-shift
norm: (scale, shift) = Dense(swish(emb)) and the second GroupNorm gives y (1 + scale) + shift.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.models.layers import GroupNorm, conv, dense, downsample_2x, upsample_2x
from imagen_jax.models.partitioning import image_constraint


class ResNetBlock(nn.Module):
    """x [B, H, W, C_in] (+ emb_act [B, E] = swish(embedding)) -> [B, H', W', out_channels]."""

    out_channels: int
    resample: str | None = None  # None | "up" | "down"
    norm_groups: int = 32
    dropout: float = 0.0
    deterministic: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, emb_act=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = GroupNorm(self.norm_groups, name="norm_in", **kw)(x, swish=True)
        if self.resample is not None:
            if self.resample not in ("up", "down"):
                raise ValueError(f"ResNetBlock.resample must be None, 'up' or 'down', got {self.resample!r}")
            resample = upsample_2x if self.resample == "up" else downsample_2x
            h, x = resample(h), resample(x)
        h = conv(self.out_channels, 3, name="conv_in", **kw)(h)
        scale_shift = None
        if emb_act is not None:
            film = dense(2 * self.out_channels, "mlp", "embed", name="emb_proj", **kw)(emb_act)
            scale_shift = jnp.split(film, 2, axis=-1)
        h = GroupNorm(self.norm_groups, name="norm_out", **kw)(h, scale_shift, swish=True)
        if self.dropout > 0.0:
            h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
        h = conv(self.out_channels, 3, zero_init=True, name="conv_out", **kw)(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, name="skip", **kw)(x)
        return image_constraint(x.astype(self.dtype) + h)
