"""Samplers: Imagen's ancestral sampler, DDIM and DPM-Solver++(2M), each one compiled loop.

Time grid: N model evaluations at t_i = t_start (1 - i / N) (i = 0 .. N-1), each stepping
to s = t_{i+1}; t_start = 1, or the t where the schedule reaches `start_logsnr`. The last
step lands on t = 0, where alpha = 1 and sigma = 0, so every rule reduces to the clean
estimate x_hat: the sampler returns x_hat there (no noise added).

`sample` is jitted once per (model function, shapes, SamplerConfig); the guidance weight,
the conditioning and the key are traced, so a guidance sweep or a new prompt batch
reuses the compiled program. A model function given as a plain callable is wrapped in
`jax.tree_util.Partial`; to pass traced parameters, give `Partial(apply_fn, params)`
so the params are leaves of the argument rather than constants baked into the program.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from imagen_jax.diffusion.guidance import denoise
from imagen_jax.diffusion.parameterization import PREDICTIONS
from imagen_jax.diffusion.process import broadcast_to_data, posterior
from imagen_jax.diffusion.schedules import Schedule, alpha_sigma, time_at_logsnr
from imagen_jax.diffusion.thresholding import THRESHOLDS

SAMPLERS = ("ancestral", "ddim", "dpm_solver_pp_2m")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static sampler settings (hashable: part of the compiled program's cache key).

    kind: "ancestral" (Imagen, Appendix A), "ddim" (Song et al. 2020) or
      "dpm_solver_pp_2m" (Lu et al. 2022, multistep second order, data prediction).
    gamma: ancestral variance interpolation, std = sqrt(post_var^(1-gamma) trans_var^gamma);
      0 is the posterior variance, 1 the transition variance (not fixed by the paper).
    eta: DDIM's stochasticity (0 = deterministic).
    start_logsnr: log-SNR of the first model evaluation (None: t = 1, the schedule's minimum).
      An eps model's x_hat = (z - sigma eps_hat) / alpha multiplies its error by sigma / alpha:
      ~22000 at log-SNR -20 (the cosine schedule's t = 1), ~150 at -10. Few-step grids take a
      large first step (32 steps on the cosine schedule: -20 to -6), which carries that error
      into z. DPM-Solver starts its cosine grids at T = 0.9946 (log-SNR -9.6) for this reason.
    guidance_logsnr_min / guidance_logsnr_max: guidance applies only at steps whose log-SNR
      lies in [min, max] (None: unbounded on that side); elsewhere the step takes the
      conditional prediction alone (w = 1) in one model pass instead of two. Both None (the
      default) is Imagen's guidance at every step. The guidance interval of Kynkaanniemi et
      al. 2024 ("Applying guidance in a limited interval"); not part of Imagen.
    """

    kind: str = "ancestral"
    num_steps: int = 256
    schedule: Schedule = Schedule()
    prediction: str = "eps"
    threshold: str = "dynamic"
    quantile: float = 0.995
    gamma: float = 0.0
    eta: float = 0.0
    start_logsnr: float | None = None
    guidance_logsnr_min: float | None = None
    guidance_logsnr_max: float | None = None

    def __post_init__(self):
        checks = (("kind", SAMPLERS), ("prediction", PREDICTIONS), ("threshold", THRESHOLDS))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown sampler {name} {getattr(self, name)!r}; use one of {allowed}")
        if int(self.num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"threshold quantile must be in (0, 1], got {self.quantile}")
        none_means = {
            "start_logsnr": "start at t = 1",
            "guidance_logsnr_min": "unbounded",
            "guidance_logsnr_max": "unbounded",
        }
        for name, meaning in none_means.items():
            value = getattr(self, name)
            if value is not None:  # an override "-10" arrives as an int
                object.__setattr__(self, name, float(value))
                if not math.isfinite(getattr(self, name)):
                    raise ValueError(f"{name} must be a finite log-SNR or None ({meaning}), got {value}")
        lo, hi = self.guidance_logsnr_min, self.guidance_logsnr_max
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(
                f"guidance interval is empty: guidance_logsnr_min {lo} > guidance_logsnr_max {hi}; "
                "swap them, or set guidance_weight=1 to sample without guidance"
            )

    @property
    def has_guidance_interval(self) -> bool:
        return self.guidance_logsnr_min is not None or self.guidance_logsnr_max is not None

    def guided_at(self, logsnr):
        """Whether a step at `logsnr` (scalar) is guided: inside [min, max] (bool array)."""
        inside = jnp.asarray(True)
        if self.guidance_logsnr_min is not None:
            inside = inside & (logsnr >= self.guidance_logsnr_min)
        if self.guidance_logsnr_max is not None:
            inside = inside & (logsnr <= self.guidance_logsnr_max)
        return inside


def ancestral_update(z_t, x_hat, logsnr_t, logsnr_s, noise, gamma=0.0):
    """z_s = mu(z_t, x_hat) + sqrt(var_post^(1-gamma) var_trans^gamma) * noise (design.md §3).

    `noise` must be a FRESH standard normal draw for this step.
    """
    mean, var_post = posterior(z_t, x_hat, logsnr_t, logsnr_s)
    _, sigma_t = alpha_sigma(broadcast_to_data(logsnr_t, z_t))
    var_trans = -jnp.expm1(broadcast_to_data(logsnr_t - logsnr_s, z_t)) * sigma_t**2
    std = jnp.sqrt(var_post ** (1.0 - gamma) * var_trans**gamma)
    return mean + std * noise


def ddim_update(x_hat, eps_hat, logsnr_t, logsnr_s, noise, eta=0.0):
    """z_s = alpha_s x_hat + sqrt(sigma_s^2 - c^2) eps_hat + c * noise, c^2 = eta^2 var_post."""
    alpha_s, sigma_s = alpha_sigma(broadcast_to_data(logsnr_s, x_hat))
    var_post = -jnp.expm1(broadcast_to_data(logsnr_t - logsnr_s, x_hat)) * sigma_s**2
    c2 = eta**2 * var_post
    return alpha_s * x_hat + jnp.sqrt(jnp.maximum(sigma_s**2 - c2, 0.0)) * eps_hat + jnp.sqrt(c2) * noise


def dpm_solver_pp_2m_update(z_t, x_hat, x_prev, logsnr_prev, logsnr_t, logsnr_s, first):
    """DPM-Solver++(2M) step (Lu et al. 2022, Alg. 2), with lambda = logsnr / 2 = log(alpha/sigma).

    h = lambda_s - lambda_t, r = h_prev / h, D = (1 + 1/(2r)) x_hat - 1/(2r) x_prev
    (D = x_hat on the first step), z_s = (sigma_s / sigma_t) z_t - alpha_s expm1(-h) D.
    """
    _, sigma_t = alpha_sigma(broadcast_to_data(logsnr_t, z_t))
    alpha_s, sigma_s = alpha_sigma(broadcast_to_data(logsnr_s, z_t))
    h = 0.5 * broadcast_to_data(logsnr_s - logsnr_t, z_t)
    h_prev = 0.5 * broadcast_to_data(logsnr_t - logsnr_prev, z_t)
    half_inv_r = 0.5 * h / jnp.where(first, 1.0, h_prev)
    d = jnp.where(first, x_hat, (1.0 + half_inv_r) * x_hat - half_inv_r * x_prev)
    return (sigma_s / sigma_t) * z_t - alpha_s * jnp.expm1(-h) * d


def step_estimate(model_fn, z, logsnr_t, cond, uncond, guidance_weight, config: SamplerConfig):
    """(x_hat, eps_hat) a step at log-SNR `logsnr_t` [B] moves with: guided and thresholded
    (`denoise`); outside the config's guidance interval w = 1, which is the conditional
    pass alone, so the unconditional one is skipped."""
    settings = dict(prediction=config.prediction, threshold=config.threshold, quantile=config.quantile)
    guided = lambda: denoise(model_fn, z, logsnr_t, cond, uncond, guidance_weight, **settings)  # noqa: E731
    if uncond is not None and config.has_guidance_interval:
        unguided = lambda: denoise(model_fn, z, logsnr_t, cond, None, **settings)  # noqa: E731
        return jax.lax.cond(config.guided_at(logsnr_t[0]), guided, unguided)
    return guided()


def step_update(config: SamplerConfig, key, z, x_hat, eps_hat, x_prev, logsnr_prev, logsnr_t, logsnr_s, first):
    """z_s from z_t by the config's rule (x_prev, logsnr_prev, first: DPM-Solver's history);
    `key` draws this step's FRESH noise."""
    if config.kind == "ancestral":
        noise = jax.random.normal(key, z.shape, z.dtype)
        return ancestral_update(z, x_hat, logsnr_t, logsnr_s, noise, config.gamma)
    if config.kind == "ddim":
        noise = jax.random.normal(key, z.shape, z.dtype) if config.eta > 0 else 0.0
        return ddim_update(x_hat, eps_hat, logsnr_t, logsnr_s, noise, config.eta)
    return dpm_solver_pp_2m_update(z, x_hat, x_prev, logsnr_prev, logsnr_t, logsnr_s, first)


def sample(
    model_fn,
    key,
    shape,
    *,
    config: SamplerConfig = SamplerConfig(),
    cond=None,
    uncond=None,
    guidance_weight=1.0,
    dtype=jnp.float32,
):
    """Draw samples x [*shape] from z_1 ~ N(0, I) with the sampler in `config`.

    model_fn(z [B, ...], logsnr [B], cond) -> prediction [B, ...]; cond / uncond: pytrees
    with leading batch axis B (uncond=None disables guidance); guidance_weight: scalar w,
    Imagen's convention (1 = off). Same key, same inputs -> identical samples.
    """
    if not isinstance(model_fn, jax.tree_util.Partial):
        model_fn = jax.tree_util.Partial(model_fn)
    return _sample(model_fn, key, cond, uncond, jnp.asarray(guidance_weight, dtype), tuple(shape), config, dtype)


@functools.partial(jax.jit, static_argnums=(5, 6, 7))
def _sample(model_fn, key, cond, uncond, guidance_weight, shape, config, dtype):
    n = config.num_steps
    batch = shape[0]
    schedule = config.schedule
    t_start = 1.0 if config.start_logsnr is None else time_at_logsnr(schedule, config.start_logsnr)

    def logsnr_at(i):  # log-SNR at grid point i (t = t_start (1 - i / N)), as a [B] vector
        return jnp.full((batch,), schedule(t_start * (1.0 - i / n)), dtype)

    def body(i, carry):
        z, x_prev = carry
        logsnr_t, logsnr_s = logsnr_at(i), logsnr_at(i + 1)
        x_hat, eps_hat = step_estimate(model_fn, z, logsnr_t, cond, uncond, guidance_weight, config)
        z_s = step_update(
            config, jax.random.fold_in(key, i), z, x_hat, eps_hat, x_prev, logsnr_at(i - 1), logsnr_t, logsnr_s, i == 0
        )
        return jnp.where(i == n - 1, x_hat, z_s), x_hat

    z_1 = jax.random.normal(jax.random.fold_in(key, n), shape, dtype)
    x, _ = jax.lax.fori_loop(0, n, body, (z_1, jnp.zeros(shape, dtype)))
    return x
