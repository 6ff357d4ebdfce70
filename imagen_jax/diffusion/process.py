"""The variance-preserving forward process, its transitions and its posterior (design.md §3).

All functions take log-SNR values (scalars or arrays broadcastable against the data's
leading batch axis, e.g. shape [B]) and data arrays of shape [B, ...]. Log-SNR arrays
of shape [B] are broadcast over the trailing axes of the data.
"""

from __future__ import annotations

import jax.numpy as jnp

from imagen_jax.diffusion.schedules import alpha_sigma


def broadcast_to_data(value, data):
    """Reshape a scalar or [B] array to [B, 1, ..., 1] so it broadcasts against `data` [B, ...]."""
    value = jnp.asarray(value)
    if value.ndim == 0:
        return value
    return value.reshape(value.shape + (1,) * (data.ndim - value.ndim))


def q_sample(x, logsnr, noise):
    """Forward marginal q(z_t | x): z_t = alpha_t x + sigma_t eps (design.md §3, forward)."""
    alpha, sigma = alpha_sigma(broadcast_to_data(logsnr, x))
    return alpha * x + sigma * noise


def transition(z_s, logsnr_s, logsnr_t):
    """q(z_t | z_s) for s < t (logsnr_t < logsnr_s): returns (mean, variance).

    mean = (alpha_t / alpha_s) z_s ; variance = (1 - e^{lambda_t - lambda_s}) sigma_t^2 (design.md §3).
    """
    logsnr_s = broadcast_to_data(logsnr_s, z_s)
    logsnr_t = broadcast_to_data(logsnr_t, z_s)
    alpha_s, _ = alpha_sigma(logsnr_s)
    alpha_t, sigma_t = alpha_sigma(logsnr_t)
    variance = -jnp.expm1(logsnr_t - logsnr_s) * sigma_t**2
    return (alpha_t / alpha_s) * z_s, variance


def posterior(z_t, x, logsnr_t, logsnr_s):
    """q(z_s | z_t, x) for s < t: returns (mean, variance) (design.md §3, posterior).

    r = e^{lambda_t - lambda_s}
    mean = r (alpha_s / alpha_t) z_t + (1 - r) alpha_s x ; variance = (1 - r) sigma_s^2.
    """
    logsnr_t = broadcast_to_data(logsnr_t, z_t)
    logsnr_s = broadcast_to_data(logsnr_s, z_t)
    alpha_t, _ = alpha_sigma(logsnr_t)
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    r = jnp.exp(logsnr_t - logsnr_s)
    one_minus_r = -jnp.expm1(logsnr_t - logsnr_s)
    mean = r * (alpha_s / alpha_t) * z_t + one_minus_r * alpha_s * x
    return mean, one_minus_r * sigma_s**2
