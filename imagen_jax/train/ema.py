"""Exponential moving average of the parameters, used for sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_decay_at(step, decay: float, warmup: bool = True):
    """decay, or with warmup min(decay, (1 + step) / (10 + step)) so early averages track the params."""
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params, params, decay):
    """ema <- decay * ema + (1 - decay) * params, leaf by leaf (in the EMA's dtype)."""
    return jax.tree_util.tree_map(
        lambda e, p: (decay * e.astype(jnp.float32) + (1.0 - decay) * p.astype(jnp.float32)).astype(e.dtype),
        ema_params,
        params,
    )
