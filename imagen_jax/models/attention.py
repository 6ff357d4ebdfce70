"""Attention layers over NHWC image features, with padded text tokens masked (SPEC 2, 4).

- `SelfAttention`: image tokens attend to themselves and, when text is given, to the
  LayerNormed, projected text tokens concatenated to the keys and values (base, sr256).
- `CrossAttention`: image tokens attend to the text tokens only, plus one learned null
  key/value that is always valid, so a fully masked text row gives no NaN (sr1024).
Both are pre-norm (GroupNorm) residual blocks with a zero-initialised output projection,
and both go through `jax.nn.dot_product_attention`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.models.layers import GroupNorm, default_kernel_init, zeros
from imagen_jax.models.partitioning import constrain, partitioned

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")


def attention_heads(channels: int, num_heads: int | None, head_dim: int | None) -> tuple[int, int]:
    """(heads, channels per head) from exactly one of num_heads / head_dim."""
    if (num_heads is None) == (head_dim is None):
        raise ValueError("set exactly one of model.num_heads and model.head_dim (the other to None)")
    if num_heads is not None:
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into model.num_heads={num_heads} heads")
        return num_heads, channels // num_heads
    if channels % head_dim:
        raise ValueError(f"{channels} channels do not split into heads of model.head_dim={head_dim}")
    return channels // head_dim, head_dim


def dot_product_attention(query, key, value, mask, implementation: str):
    """query [B, T, N, H], key/value [B, S, N, H], mask [B, 1, 1, S] bool or None.

    "auto" uses cuDNN flash attention on GPU for 16-bit inputs and XLA otherwise (also
    when cuDNN rejects the shapes); "xla" / "cudnn" force one.
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"model.attention_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "auto":
        if jax.default_backend() == "gpu" and query.dtype in (jnp.bfloat16, jnp.float16):
            try:
                return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="cudnn")
            except (ValueError, NotImplementedError, RuntimeError):
                pass
        implementation = "xla"
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=implementation)


def heads_dense(heads, head_dim, in_axis, *, dtype, param_dtype, name, leading: int | None = None):
    """x [..., D] -> [..., (leading,) heads, head_dim] in one matmul."""
    features = (heads, head_dim) if leading is None else (leading, heads, head_dim)
    names = (in_axis, "heads", "kv") if leading is None else (in_axis, None, "heads", "kv")
    bias_names = names[1:]
    return nn.DenseGeneral(
        features,
        axis=-1,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=partitioned(default_kernel_init, *names),
        bias_init=partitioned(zeros, *bias_names),
        name=name,
    )


def _output_projection(channels, *, dtype, param_dtype):
    """[..., heads, head_dim] -> [..., channels], zero-initialised (the block starts as identity)."""
    return nn.DenseGeneral(
        channels,
        axis=(-2, -1),
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=partitioned(zeros, "heads", "kv", "embed"),
        bias_init=partitioned(zeros, "embed"),
        name="out",
    )


def _text_key_value(text, heads, head_dim, *, dtype, param_dtype):
    """LayerNorm (float32) then one projection: text [B, L, D] -> (k, v) each [B, L, N, H]."""
    normed = nn.LayerNorm(
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=partitioned(nn.initializers.ones_init(), "norm"),
        bias_init=partitioned(zeros, "norm"),
        name="text_norm",
    )(text.astype(jnp.float32))
    kv = heads_dense(heads, head_dim, "text_embed", dtype=dtype, param_dtype=param_dtype, name="text_kv", leading=2)(normed)
    return kv[:, :, 0], kv[:, :, 1]


class SelfAttention(nn.Module):
    """x [B, H, W, C] (+ text [B, L, D], text_mask [B, L] bool) -> x + attention, [B, H, W, C]."""

    num_heads: int | None = None
    head_dim: int | None = None
    norm_groups: int = 32
    implementation: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, text=None, text_mask=None):
        batch, height, width, channels = x.shape
        heads, head_dim = attention_heads(channels, self.num_heads, self.head_dim)
        h = GroupNorm(self.norm_groups, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        h = h.reshape(batch, height * width, channels)
        qkv = heads_dense(heads, head_dim, "embed", dtype=self.dtype, param_dtype=self.param_dtype, name="qkv", leading=3)(h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        mask = None
        if text is not None:
            text_k, text_v = _text_key_value(text, heads, head_dim, dtype=self.dtype, param_dtype=self.param_dtype)
            k = jnp.concatenate([k, text_k], axis=1)
            v = jnp.concatenate([v, text_v], axis=1)
            image_valid = jnp.ones((batch, height * width), bool)
            mask = jnp.concatenate([image_valid, text_mask.astype(bool)], axis=1)[:, None, None, :]
        out = dot_product_attention(q, k, v, mask, self.implementation)
        out = _output_projection(channels, dtype=self.dtype, param_dtype=self.param_dtype)(out)
        return x + out.reshape(x.shape).astype(x.dtype)


class CrossAttention(nn.Module):
    """x [B, H, W, C], text [B, L, D], text_mask [B, L] bool -> x + attention to the text."""

    num_heads: int | None = None
    head_dim: int | None = None
    norm_groups: int = 32
    implementation: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, text, text_mask):
        batch, height, width, channels = x.shape
        heads, head_dim = attention_heads(channels, self.num_heads, self.head_dim)
        h = GroupNorm(self.norm_groups, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        q = heads_dense(heads, head_dim, "embed", dtype=self.dtype, param_dtype=self.param_dtype, name="q")(h.reshape(batch, height * width, channels))
        k, v = _text_key_value(text, heads, head_dim, dtype=self.dtype, param_dtype=self.param_dtype)
        null_kv = self.param("null_kv", partitioned(nn.initializers.normal(0.02), None, "heads", "kv"), (2, heads, head_dim), self.param_dtype)
        null_kv = jnp.broadcast_to(null_kv.astype(k.dtype)[None, :, None], (batch, 2, 1, heads, head_dim))
        k = jnp.concatenate([null_kv[:, 0], k], axis=1)
        v = jnp.concatenate([null_kv[:, 1], v], axis=1)
        mask = jnp.concatenate([jnp.ones((batch, 1), bool), text_mask.astype(bool)], axis=1)[:, None, None, :]
        out = dot_product_attention(q, k, v, mask, self.implementation)
        out = _output_projection(channels, dtype=self.dtype, param_dtype=self.param_dtype)(out)
        return x + out.reshape(x.shape).astype(x.dtype)


def text_constraint(text):
    """text: [B, L, D]."""
    return constrain(text, "batch", "length", "channels")
