"""Attention layers over NHWC image features, with padded text tokens masked (design.md §2, §4).

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

from imagen_jax.models.layers import GroupNorm, zeros
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
        raise ValueError(
            f"model.attention_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}"
        )
    if implementation == "auto":
        if jax.default_backend() == "gpu" and query.dtype in (jnp.bfloat16, jnp.float16):
            try:
                return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="cudnn")
            except (ValueError, NotImplementedError, RuntimeError):
                pass
        implementation = "xla"
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=implementation)


class Projection(nn.Module):
    """A dense map contracting the last `in_ndim` axes of x into `features`:
    x [..., *in_dims] -> [..., *features], kernel [*in_dims, *features] with logical axes
    `names` (one per kernel dim; the bias gets the feature names). Unlike nn.DenseGeneral
    the kernel is created in its true shape, so its logical axes hold during init."""

    features: tuple[int, ...]
    names: tuple[str | None, ...]
    in_ndim: int = 1
    zero_init: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_dims = x.shape[x.ndim - self.in_ndim :]
        n_in, n_out = self.in_ndim, len(self.features)
        init = (
            zeros
            if self.zero_init
            else nn.initializers.lecun_normal(in_axis=tuple(range(n_in)), out_axis=tuple(range(n_in, n_in + n_out)))
        )
        kernel = self.param("kernel", partitioned(init, *self.names), (*in_dims, *self.features), self.param_dtype)
        bias = self.param("bias", partitioned(zeros, *self.names[n_in:]), tuple(self.features), self.param_dtype)
        y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=n_in)
        return y + bias.astype(self.dtype)


def heads_dense(heads, head_dim, in_axis, *, dtype, param_dtype, name, leading: int | None = None):
    """x [..., D] -> [..., (leading,) heads, head_dim] in one matmul."""
    if leading is None:
        return Projection((heads, head_dim), (in_axis, "heads", "kv"), dtype=dtype, param_dtype=param_dtype, name=name)
    return Projection(
        (leading, heads, head_dim), (in_axis, None, "heads", "kv"), dtype=dtype, param_dtype=param_dtype, name=name
    )


def merge_heads(channels, out_axis="embed", *, zero_init=True, dtype, param_dtype, name="out"):
    """[..., heads, head_dim] -> [..., channels]; zero-initialised by default (the residual
    block starts as the identity)."""
    return Projection(
        (channels,),
        ("heads", "kv", out_axis),
        in_ndim=2,
        zero_init=zero_init,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
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
    kv = heads_dense(heads, head_dim, "text_embed", dtype=dtype, param_dtype=param_dtype, name="text_kv", leading=2)(
        normed
    )
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
        qkv = heads_dense(
            heads, head_dim, "embed", dtype=self.dtype, param_dtype=self.param_dtype, name="qkv", leading=3
        )(h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        mask = None
        if text is not None:
            text_k, text_v = _text_key_value(text, heads, head_dim, dtype=self.dtype, param_dtype=self.param_dtype)
            k = jnp.concatenate([k, text_k], axis=1)
            v = jnp.concatenate([v, text_v], axis=1)
            image_valid = jnp.ones((batch, height * width), bool)
            mask = jnp.concatenate([image_valid, text_mask.astype(bool)], axis=1)[:, None, None, :]
        out = dot_product_attention(q, k, v, mask, self.implementation)
        out = merge_heads(channels, dtype=self.dtype, param_dtype=self.param_dtype)(out)
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
        q = heads_dense(heads, head_dim, "embed", dtype=self.dtype, param_dtype=self.param_dtype, name="q")(
            h.reshape(batch, height * width, channels)
        )
        k, v = _text_key_value(text, heads, head_dim, dtype=self.dtype, param_dtype=self.param_dtype)
        null_kv = self.param(
            "null_kv",
            partitioned(nn.initializers.normal(0.02), None, "heads", "kv"),
            (2, heads, head_dim),
            self.param_dtype,
        )
        null_kv = jnp.broadcast_to(null_kv.astype(k.dtype)[None, :, None], (batch, 2, 1, heads, head_dim))
        k = jnp.concatenate([null_kv[:, 0], k], axis=1)
        v = jnp.concatenate([null_kv[:, 1], v], axis=1)
        mask = jnp.concatenate([jnp.ones((batch, 1), bool), text_mask.astype(bool)], axis=1)[:, None, None, :]
        out = dot_product_attention(q, k, v, mask, self.implementation)
        out = merge_heads(channels, dtype=self.dtype, param_dtype=self.param_dtype)(out)
        return x + out.reshape(x.shape).astype(x.dtype)


def text_constraint(text):
    """text: [B, L, D]."""
    return constrain(text, "batch", "length", "channels")
