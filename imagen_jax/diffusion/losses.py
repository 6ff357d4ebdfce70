"""The denoising training loss (SPEC 3): MSE on eps by default; x or v targets and
min-SNR weighting (Hang et al. 2023) as options, off by default."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from imagen_jax.diffusion.parameterization import target_for
from imagen_jax.diffusion.process import q_sample


def min_snr_weight(logsnr, prediction: str, gamma: float):
    """Per-example weight of min-SNR-gamma so that every target gets the weight
    min(SNR, gamma) on the x-space error: eps -> min(snr, g) / snr, x -> min(snr, g),
    v -> min(snr, g) / (snr + 1). logsnr: [B] -> [B]."""
    snr = jnp.exp(logsnr)
    clipped = jnp.minimum(snr, gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "x":
        return clipped
    if prediction == "v":
        return clipped / (snr + 1.0)
    raise ValueError(f"unknown prediction {prediction!r}")


def per_example_loss(output, x, noise, logsnr, *, prediction: str = "eps", min_snr_gamma=None):
    """Mean squared error of `output` against the target, per example: [B, ...] -> [B] float32."""
    target = target_for(prediction, x, noise, logsnr)
    err = jnp.square(output.astype(jnp.float32) - target.astype(jnp.float32))
    loss = jnp.mean(err.reshape(err.shape[0], -1), axis=1)
    if min_snr_gamma is not None:
        loss = loss * min_snr_weight(logsnr.astype(jnp.float32), prediction, min_snr_gamma)
    return loss


def diffusion_loss(
    model_fn,
    x,
    cond,
    key,
    *,
    schedule,
    prediction: str = "eps",
    min_snr_gamma=None,
    weights=None,
):
    """One Monte Carlo estimate of the training loss for a batch of clean images.

    t ~ U(0, 1) and eps ~ N(0, I) are drawn per example from `key`; z_t = alpha_t x + sigma_t eps;
    model_fn(z_t [B, ...], logsnr [B], cond) -> prediction. `weights` [B] (optional) are
    per-example weights: the loss is sum(w_i l_i) / sum(w_i) (w = 0 drops an example).
    Returns (scalar loss, aux dict with per-example "loss" [B] and "logsnr" [B]).
    """
    t_key, noise_key = jax.random.split(key)
    batch = x.shape[0]
    t = jax.random.uniform(t_key, (batch,), jnp.float32)
    logsnr = schedule(t)
    noise = jax.random.normal(noise_key, x.shape, x.dtype)
    z_t = q_sample(x, logsnr.astype(x.dtype), noise)
    output = model_fn(z_t, logsnr, cond)
    losses = per_example_loss(output, x, noise, logsnr, prediction=prediction, min_snr_gamma=min_snr_gamma)
    if weights is None:
        loss = jnp.mean(losses)
    else:
        weights = jnp.asarray(weights, jnp.float32)
        loss = jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1e-12)
    return loss, {"loss": losses, "logsnr": logsnr}
