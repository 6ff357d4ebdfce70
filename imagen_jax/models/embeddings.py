"""The noise-level embedding: log-SNR (design.md §3) embedded sinusoidally, then a 2-layer MLP."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.models.layers import dense


def sinusoidal_embedding(x, dim: int, *, max_period: float = 10_000.0):
    """Transformer/DDPM sinusoidal features of a scalar per example.

    x: [B] -> [B, dim] float32, [cos(x f_i), sin(x f_i)] with f_i = max_period^(-i / (dim/2)).
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = x.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class NoiseLevelEmbedding(nn.Module):
    """log-SNR [B] -> [B, features]: clip to +-logsnr_clip, scale (so that the [-20, 20]
    range spans 1000 like DDPM timesteps with the default 25), sinusoid of `sinusoid_dim`,
    Dense -> swish -> Dense (ADM's time embedding)."""

    features: int
    sinusoid_dim: int
    logsnr_scale: float = 25.0
    logsnr_clip: float = 30.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, logsnr):
        x = jnp.clip(logsnr.astype(jnp.float32), -self.logsnr_clip, self.logsnr_clip) * self.logsnr_scale
        h = sinusoidal_embedding(x, self.sinusoid_dim)
        h = dense(self.features, None, "mlp", dtype=self.dtype, param_dtype=self.param_dtype, name="dense_in")(h)
        h = nn.swish(h)
        return dense(self.features, "mlp", None, dtype=self.dtype, param_dtype=self.param_dtype, name="dense_out")(h)
