"""Thresholding of the predicted clean image x_hat at each sampling step (design.md §3)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

THRESHOLDS = ("none", "static", "dynamic")


def static_threshold(x):
    """clip(x_hat, -1, 1)."""
    return jnp.clip(x, -1.0, 1.0)


def order_statistic(values, k: int):
    """Per-row k-th smallest (0-based) of NON-NEGATIVE values [B, N], exactly, without sorting.

    Non-negative IEEE floats order like their bit patterns read as integers, so a bisection
    over the bit pattern (31 halvings for float32) finds the smallest v with
    count(values <= v) >= k + 1. Each halving is one compare-and-count pass: on CPU and TPU
    this is several times cheaper than a per-row sort or lax.top_k.
    """
    int_dtype = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[values.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(values, int_dtype)
    num_bits = 8 * values.dtype.itemsize - 1
    lo = jnp.zeros(values.shape[:1], int_dtype)
    hi = jnp.full(values.shape[:1], jnp.iinfo(int_dtype).max, int_dtype)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits <= mid[:, None], axis=1) >= k + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.fori_loop(0, num_bits, halve, (lo, hi))
    return jax.lax.bitcast_convert_type(lo, values.dtype)


def upper_quantile(values, q: float):
    """Per-row q-quantile of NON-NEGATIVE values [B, N] with numpy's default (linear) interpolation."""
    n = values.shape[1]
    h = q * (n - 1)
    lo = int(math.floor(h))
    v_lo = order_statistic(values, lo)
    if lo + 1 >= n or h == lo:
        return v_lo
    # The next order statistic: v_lo again if tied, else the smallest value above v_lo.
    tied = jnp.sum(values <= v_lo[:, None], axis=1) >= lo + 2
    above = jnp.min(jnp.where(values > v_lo[:, None], values, jnp.inf), axis=1)
    v_hi = jnp.where(tied, v_lo, above)
    return v_lo + (h - lo) * (v_hi - v_lo)


def dynamic_threshold(x, quantile: float = 0.995):
    """Imagen's dynamic thresholding (design.md §3), per sample over all non-batch axes.

    s = max(quantile(|x_hat|, p), 1); x_hat = clip(x_hat, -s, s) / s.  x: [B, ...].
    """
    flat = jnp.abs(x.reshape(x.shape[0], -1)).astype(jnp.promote_types(x.dtype, jnp.float32))
    s = jnp.maximum(upper_quantile(flat, quantile), 1.0).astype(x.dtype)
    s = s.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.clip(x, -s, s) / s


def apply_threshold(x, kind: str, quantile: float = 0.995):
    """Dispatch on `kind`: "none", "static" or "dynamic"."""
    if kind == "none":
        return x
    if kind == "static":
        return static_threshold(x)
    if kind == "dynamic":
        return dynamic_threshold(x, quantile)
    raise ValueError(f"unknown thresholding {kind!r}; use one of {THRESHOLDS}")
