"""The denoising training loss (design.md §3): MSE on eps by default; x or v targets and
min-SNR weighting (Hang et al. 2023) with an optional floor as options, off by default."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from imagen_jax.diffusion.parameterization import target_for
from imagen_jax.diffusion.process import q_sample


def min_snr_weight(logsnr, prediction: str, gamma=None, floor=None):
    """Per-example weight giving every target the x-space weight clip(SNR, floor, gamma).

    gamma: min-SNR-gamma (Hang et al. 2023), caps the weight of the clean end. floor: the
    truncated-SNR floor (Salimans & Ho 2022, max(SNR, 1) at floor 1), keeps the noisy end,
    where layout, background and text use are decided, from getting ~SNR -> 0 weight.
    Either may be None. Divided by the target's own x-space weight (eps SNR, x 1,
    v SNR + 1): eps -> w / snr, x -> w, v -> w / (snr + 1). logsnr: [B] -> [B].
    With eps a floor multiplies the loss by floor / SNR at the noisy end (floor * e^20 at
    the schedules' -20 clamp): pair it with v or x targets.
    """
    snr = jnp.exp(logsnr)
    weight = snr
    if gamma is not None:
        weight = jnp.minimum(weight, gamma)
    if floor is not None:
        weight = jnp.maximum(weight, floor)
    if prediction == "eps":
        return weight / snr
    if prediction == "x":
        return weight
    if prediction == "v":
        return weight / (snr + 1.0)
    raise ValueError(f"unknown prediction {prediction!r}")


def per_example_loss(output, x, noise, logsnr, *, prediction: str = "eps", min_snr_gamma=None, snr_floor=None):
    """Mean squared error of `output` against the target, per example: [B, ...] -> [B] float32,
    weighted by min_snr_weight when min_snr_gamma or snr_floor is set."""
    target = target_for(prediction, x, noise, logsnr)
    err = jnp.square(output.astype(jnp.float32) - target.astype(jnp.float32))
    loss = jnp.mean(err.reshape(err.shape[0], -1), axis=1)
    if min_snr_gamma is not None or snr_floor is not None:
        loss = loss * min_snr_weight(logsnr.astype(jnp.float32), prediction, min_snr_gamma, snr_floor)
    return loss


def offset_noise_term(key, shape, logsnr, scale: float, profile: str = "constant", logsnr_max=None):
    """s_t m: m ~ N(0, 1) one value per example and channel, [B, 1, ..., 1, C] float32, with
    s_t = scale ("constant") or scale * sigma_t^2 ("sigma2") from logsnr [B], and s_t = 0 above
    `logsnr_max` when it is set (docs/design.md §3)."""
    if profile == "constant":
        s_t = jnp.full(logsnr.shape, scale, jnp.float32)
    elif profile == "sigma2":
        s_t = scale * jax.nn.sigmoid(-logsnr.astype(jnp.float32))
    else:
        raise ValueError(f"diffusion.offset_profile must be 'constant' or 'sigma2', not {profile!r}")
    if logsnr_max is not None:
        s_t = jnp.where(logsnr.astype(jnp.float32) <= logsnr_max, s_t, 0.0)
    m = jax.random.normal(key, (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],), jnp.float32)
    return s_t.reshape((shape[0],) + (1,) * (len(shape) - 1)) * m


def diffusion_loss(
    model_fn,
    x,
    cond,
    key,
    *,
    schedule,
    prediction: str = "eps",
    min_snr_gamma=None,
    snr_floor=None,
    offset_noise=None,
    offset_profile: str = "constant",
    offset_logsnr_max=None,
    weights=None,
):
    """One Monte Carlo estimate of the training loss for a batch of clean images.

    t ~ U(0, 1) and eps ~ N(0, I) are drawn per example from `key`; z_t = alpha_t x + sigma_t eps;
    model_fn(z_t [B, ...], logsnr [B], cond) -> prediction. `weights` [B] (optional) are
    per-example weights: the loss is sum(w_i l_i) / sum(w_i) (w = 0 drops an example).
    `offset_noise` s (optional): eps = n + s_t m with n ~ N(0, I) per pixel and m ~ N(0, I) one
    value per example and channel [B, 1, 1, C] (offset noise, Guttenberg 2023; docs/design.md §3);
    s_t = s (`offset_profile` "constant") or s * sigma_t^2 ("sigma2"), and 0 at log-SNR above
    `offset_logsnr_max` when it is set.
    Returns (scalar loss, aux dict with per-example "loss" [B] and "logsnr" [B]).
    """
    t_key, noise_key = jax.random.split(key)
    batch = x.shape[0]
    t = jax.random.uniform(t_key, (batch,), jnp.float32)
    logsnr = schedule(t)
    if offset_noise:
        noise_key, offset_key = jax.random.split(noise_key)
    noise = jax.random.normal(noise_key, x.shape, x.dtype)
    if offset_noise:
        noise = noise + offset_noise_term(
            offset_key, x.shape, logsnr, offset_noise, offset_profile, offset_logsnr_max
        ).astype(x.dtype)
    z_t = q_sample(x, logsnr.astype(x.dtype), noise)
    output = model_fn(z_t, logsnr, cond)
    losses = per_example_loss(
        output, x, noise, logsnr, prediction=prediction, min_snr_gamma=min_snr_gamma, snr_floor=snr_floor
    )
    if weights is None:
        loss = jnp.mean(losses)
    else:
        weights = jnp.asarray(weights, jnp.float32)
        loss = jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1e-12)
    return loss, {"loss": losses, "logsnr": logsnr}
