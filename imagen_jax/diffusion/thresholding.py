"""Thresholding of the predicted clean image x_hat at each sampling step (SPEC 3)."""

from __future__ import annotations

import jax.numpy as jnp

THRESHOLDS = ("none", "static", "dynamic")


def static_threshold(x):
    """clip(x_hat, -1, 1)."""
    return jnp.clip(x, -1.0, 1.0)


def dynamic_threshold(x, quantile: float = 0.995):
    """Imagen's dynamic thresholding (SPEC 3), per sample over all non-batch axes.

    s = max(quantile(|x_hat|, p), 1); x_hat = clip(x_hat, -s, s) / s.  x: [B, ...].
    """
    flat = jnp.abs(x.reshape(x.shape[0], -1)).astype(jnp.promote_types(x.dtype, jnp.float32))
    s = jnp.maximum(jnp.quantile(flat, quantile, axis=1), 1.0).astype(x.dtype)
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
