"""Attention pooling of the text sequence into one vector (design.md §2, path (a)).

CLIP-style: after a LayerNorm, the masked mean of the tokens is the query; it attends over
itself and the valid tokens (it is always a valid key, so an all-padding row gives the
pooled value of zeros' LayerNorm, never NaN); the result is projected to the embedding width.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.models.attention import dot_product_attention, heads_dense, merge_heads
from imagen_jax.models.layers import zeros
from imagen_jax.models.partitioning import partitioned


class TextAttentionPooling(nn.Module):
    """text [B, L, D], text_mask [B, L] bool -> [B, features]."""

    features: int
    num_heads: int = 8
    implementation: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text, text_mask):
        batch = text.shape[0]
        if self.features % self.num_heads:
            raise ValueError(f"model.text_pool_heads={self.num_heads} must divide the embedding width {self.features}")
        head_dim = self.features // self.num_heads
        tokens = nn.LayerNorm(
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            scale_init=partitioned(nn.initializers.ones_init(), "norm"),
            bias_init=partitioned(zeros, "norm"),
            name="norm",
        )(text.astype(jnp.float32))
        valid = text_mask.astype(bool)
        count = jnp.maximum(jnp.sum(valid, axis=1, keepdims=True), 1).astype(jnp.float32)
        mean = jnp.sum(jnp.where(valid[..., None], tokens, 0.0), axis=1, keepdims=True) / count[..., None]
        sequence = jnp.concatenate([mean, tokens], axis=1).astype(self.dtype)  # [B, 1 + L, D]
        mask = jnp.concatenate([jnp.ones((batch, 1), bool), valid], axis=1)[:, None, None, :]
        q = heads_dense(
            self.num_heads, head_dim, "text_embed", dtype=self.dtype, param_dtype=self.param_dtype, name="q"
        )(sequence[:, :1])
        kv = heads_dense(
            self.num_heads, head_dim, "text_embed", dtype=self.dtype, param_dtype=self.param_dtype, name="kv", leading=2
        )(sequence)
        pooled = dot_product_attention(q, kv[:, :, 0], kv[:, :, 1], mask, self.implementation)  # [B, 1, N, H]
        pooled = merge_heads(self.features, "mlp", zero_init=False, dtype=self.dtype, param_dtype=self.param_dtype)(
            pooled
        )[:, 0]
        return pooled
