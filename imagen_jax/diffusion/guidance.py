"""Classifier-free guidance and the denoised estimate a sampler steps with (design.md §3).

A model function has the signature `model_fn(z, logsnr, cond) -> output`, with z [B, ...],
logsnr [B] and `cond` any pytree whose leaves have a leading batch axis (or None); the
output is the model's prediction of kind "eps", "x" or "v", shaped like z.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from imagen_jax.diffusion import parameterization as param
from imagen_jax.diffusion.thresholding import apply_threshold


def guided_output(model_fn, z, logsnr, cond, uncond, guidance_weight):
    """Imagen's guidance: w * f(z, c) + (1 - w) * f(z, empty); w = 1 is off (design.md §3).

    The conditional and unconditional passes run as ONE model call on a doubled batch.
    With `uncond=None` there is one pass and `guidance_weight` is ignored. Combining the
    raw outputs equals combining eps, because eps, x and v are affine in one another at
    fixed z_t. z: [B, ...], logsnr: [B]. Returns [B, ...] in z's dtype.
    """
    if uncond is None:
        return model_fn(z, logsnr, cond).astype(z.dtype)
    both = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, u], axis=0), cond, uncond)
    out = model_fn(jnp.concatenate([z, z]), jnp.concatenate([logsnr, logsnr]), both).astype(z.dtype)
    out_cond, out_uncond = jnp.split(out, 2, axis=0)
    w = jnp.asarray(guidance_weight, z.dtype)
    return w * out_cond + (1.0 - w) * out_uncond


def denoise(
    model_fn,
    z,
    logsnr,
    cond,
    uncond=None,
    guidance_weight=1.0,
    *,
    prediction: str = "eps",
    threshold: str = "dynamic",
    quantile: float = 0.995,
):
    """(x_hat, eps_hat) at z_t: guided, then x_hat thresholded (design.md §3).

    Each is read from the model output in its own parameterization (no division by a
    vanishing alpha or sigma where avoidable); after thresholding, eps_hat is recomputed
    from the thresholded x_hat so that z_t = alpha x_hat + sigma eps_hat still holds.
    """
    out = guided_output(model_fn, z, logsnr, cond, uncond, guidance_weight)
    x, eps = param.x_and_eps(prediction, z, out, logsnr)
    if threshold != "none":
        x = apply_threshold(x, threshold, quantile)
        eps = param.eps_from_x(z, x, logsnr)
    return x, eps


def null_text(text_embedding, text_mask):
    """The empty condition of classifier-free guidance (design.md §2): zeroed embeddings, no valid
    token. Used both for the 10% text dropout in training and for the unconditional pass
    in sampling, so the two always agree. [B, L, D], [B, L] -> same shapes."""
    return jnp.zeros_like(text_embedding), jnp.zeros_like(text_mask)


def drop_text(text_embedding, text_mask, drop):
    """Replace the rows where `drop` [B] bool is True by `null_text`."""
    empty_embedding, empty_mask = null_text(text_embedding, text_mask)
    embedding = jnp.where(drop[:, None, None], empty_embedding, text_embedding)
    mask = jnp.where(drop[:, None], empty_mask, text_mask)
    return embedding, mask
