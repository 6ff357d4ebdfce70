"""Conversions between the eps, x (x0) and v parameterizations (design.md §3).

With alpha_t^2 + sigma_t^2 = 1 and z_t = alpha_t x + sigma_t eps:
  x = (z_t - sigma_t eps) / alpha_t       eps = (z_t - alpha_t x) / sigma_t
  v = alpha_t eps - sigma_t x             x = alpha_t z_t - sigma_t v,  eps = sigma_t z_t + alpha_t v
Log-SNR may be a scalar or a [B] array; data are [B, ...].
"""

from __future__ import annotations

from imagen_jax.diffusion.process import broadcast_to_data
from imagen_jax.diffusion.schedules import alpha_sigma

PREDICTIONS = ("eps", "x", "v")


def _alpha_sigma(logsnr, z):
    return alpha_sigma(broadcast_to_data(logsnr, z))


def x_from_eps(z, eps, logsnr):
    alpha, sigma = _alpha_sigma(logsnr, z)
    return (z - sigma * eps) / alpha


def eps_from_x(z, x, logsnr):
    alpha, sigma = _alpha_sigma(logsnr, z)
    return (z - alpha * x) / sigma


def v_from_x_eps(x, eps, logsnr):
    alpha, sigma = _alpha_sigma(logsnr, x)
    return alpha * eps - sigma * x


def x_from_v(z, v, logsnr):
    alpha, sigma = _alpha_sigma(logsnr, z)
    return alpha * z - sigma * v


def eps_from_v(z, v, logsnr):
    alpha, sigma = _alpha_sigma(logsnr, z)
    return sigma * z + alpha * v


def x_and_eps(prediction: str, z, output, logsnr):
    """(x, eps) implied by a model `output` of kind `prediction` at z_t, each read in the
    output's own parameterization (no division by a vanishing alpha or sigma where avoidable)."""
    if prediction == "eps":
        return x_from_eps(z, output, logsnr), output
    if prediction == "x":
        return output, eps_from_x(z, output, logsnr)
    if prediction == "v":
        return x_from_v(z, output, logsnr), eps_from_v(z, output, logsnr)
    raise ValueError(f"unknown prediction {prediction!r}; use one of {PREDICTIONS}")


def target_for(prediction: str, x, eps, logsnr):
    """The regression target for a model of kind `prediction`, given clean x and noise eps."""
    if prediction == "eps":
        return eps
    if prediction == "x":
        return x
    if prediction == "v":
        return v_from_x_eps(x, eps, logsnr)
    raise ValueError(f"unknown prediction {prediction!r}; use one of {PREDICTIONS}")
