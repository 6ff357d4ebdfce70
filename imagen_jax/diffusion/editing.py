"""Editing samplers: image-to-image (SDEdit) and inpainting (RePaint), each one compiled loop.

Image-to-image (Meng et al. 2022, SDEdit): with strength s in (0, 1], the time grid of
`samplers.py` is scaled to start at t0 = s t_start (N model evaluations from t0 to 0), and
the loop starts from the input forward-noised to t0: z_t0 = alpha_t0 x + sigma_t0 eps.
At s = 1 it starts from pure noise, exactly as plain sampling does (alpha at t_start is
<= 5e-5 on the cosine schedule): strength 1 IS plain sampling, key for key.

Inpainting (Lugmayr et al. 2022, RePaint): `mask` is 1 where the image is generated and 0
where the input is kept. After every denoising step to level s the kept region of z_s is
replaced by the input forward-noised to s with FRESH noise, q(z_s | x) (at s = 0: the
input itself, so the kept region of the output equals the input exactly). RePaint's
resampling: after every `jump_length` steps down, the state is noised back up the same
steps with q(z_t | z_s) (fresh noise, `transition`) and denoised again, `resamples`
times in all (1: no resampling), so that the generated region has time to agree with
the kept one. Without resampling the generated region follows the kept one only
through the model's x_hat and is biased toward the unconditional marginal (the known
RePaint failure; tests/test_editing.py states the figure on a Gaussian).

The loop runs over a static plan of (grid index, direction) pairs (`repaint_plan`), so
any number of resamples is still one compiled program. Inpainting takes the ancestral
and DDIM samplers (DPM-Solver's multistep history does not survive a jump back up);
image-to-image takes all three.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.diffusion.process import q_sample, transition
from imagen_jax.diffusion.samplers import SamplerConfig, step_estimate, step_update
from imagen_jax.diffusion.schedules import time_at_logsnr

DOWN, UP = 1, -1


@dataclasses.dataclass(frozen=True)
class Repaint:
    """RePaint's resampling (Lugmayr et al. 2022, §4.2): every `jump_length` steps down,
    go back up as many and down again, `resamples` passes over each block in all.
    Repaint(1, 1) (the default) is no resampling. Static (hashable)."""

    jump_length: int = 1
    resamples: int = 1

    def __post_init__(self):
        if int(self.jump_length) < 1 or int(self.resamples) < 1:
            raise ValueError(
                f"RePaint jump_length and resamples must be >= 1 (1: no resampling), "
                f"got {self.jump_length}, {self.resamples}"
            )


def repaint_plan(num_steps: int, repaint: Repaint = Repaint()) -> np.ndarray:
    """int32 [K, 2] rows (i, direction): DOWN denoises grid point i to i + 1, UP noises grid
    point i back to i - 1. Blocks of jump_length steps, each walked down `resamples` times
    with a walk back up between passes. Repaint(1, 1): [(0, DOWN), ..., (N-1, DOWN)]."""
    rows = []
    start = 0
    while start < num_steps:
        end = min(start + repaint.jump_length, num_steps)
        for rep in range(repaint.resamples):
            rows += [(i, DOWN) for i in range(start, end)]
            if rep < repaint.resamples - 1:
                rows += [(i, UP) for i in range(end, start, -1)]
        start = end
    return np.asarray(rows, np.int32)


def edit(
    model_fn,
    key,
    image,
    *,
    mask=None,
    strength=1.0,
    config: SamplerConfig = SamplerConfig(),
    repaint: Repaint = Repaint(),
    cond=None,
    uncond=None,
    guidance_weight=1.0,
    dtype=jnp.float32,
):
    """Edit `image` [B, ...] in [-1, 1]: image-to-image from `strength` (traced, in (0, 1]),
    inpainting where `mask` (broadcastable to image, 1 = generate, 0 = keep) is given.

    model_fn, cond, uncond, guidance_weight, config: as `samplers.sample`. Returns x
    [B, ...]; with mask, x == image wherever mask == 0. Same key, same inputs -> same x;
    without mask and at strength 1, x equals `sample(model_fn, key, image.shape, ...)`.
    """
    if mask is not None and config.kind == "dpm_solver_pp_2m":
        raise ValueError(
            "inpainting needs sampler kind 'ancestral' or 'ddim' (DPM-Solver++'s history does not survive RePaint's "
            "jumps back up); imagen-jax edit: --config.STAGE.sampling.sampler=ddim"
        )
    if mask is None and repaint.resamples > 1:
        raise ValueError("RePaint resampling is for inpainting: give a mask, or Repaint() for image-to-image")
    if not isinstance(model_fn, jax.tree_util.Partial):
        model_fn = jax.tree_util.Partial(model_fn)
    image = jnp.asarray(image, dtype)
    if mask is not None:
        mask = jnp.broadcast_to(jnp.asarray(mask, dtype), image.shape)
    plan = jnp.asarray(repaint_plan(config.num_steps, repaint))
    return _edit(
        model_fn,
        key,
        image,
        mask,
        jnp.asarray(strength, dtype),
        cond,
        uncond,
        jnp.asarray(guidance_weight, dtype),
        plan,
        config,
        dtype,
    )


def plan_key_index(k, num_steps: int):
    """The fold_in index of plan row k's noise: k itself below N (without resampling row k is
    step k, so the keys are samplers.sample's and strength 1 reproduces it), k + 2 from N on,
    past N and N + 1, the indices of the starting noise: no draw is ever reused."""
    return k + 2 * (k >= num_steps)


@functools.partial(jax.jit, static_argnums=(9, 10))
def _edit(model_fn, key, image, mask, strength, cond, uncond, guidance_weight, plan, config, dtype):
    n = config.num_steps
    shape = image.shape
    batch = shape[0]
    schedule = config.schedule
    t_start = 1.0 if config.start_logsnr is None else time_at_logsnr(schedule, config.start_logsnr)
    t0 = strength * t_start

    def logsnr_at(i):  # grid point i of [t0, 0] (t = t0 (1 - i / N)), as a [B] vector
        return jnp.full((batch,), schedule(t0 * (1.0 - i / n)), dtype)

    def keep_known(z, logsnr, noise, last=False):
        """The kept region replaced by the input noised to `logsnr`; by the input itself
        after the last step (t = 0, where the schedule's sigma is small but not 0)."""
        if mask is None:
            return z
        known = jnp.where(last, image, q_sample(image, logsnr, noise))
        return mask * z + (1.0 - mask) * known

    def down(k, i, z, x_prev):
        logsnr_t, logsnr_s = logsnr_at(i), logsnr_at(i + 1)
        step_key = jax.random.fold_in(key, plan_key_index(k, n))
        x_hat, eps_hat = step_estimate(model_fn, z, logsnr_t, cond, uncond, guidance_weight, config)
        z_s = step_update(config, step_key, z, x_hat, eps_hat, x_prev, logsnr_at(i - 1), logsnr_t, logsnr_s, k == 0)
        z_s = jnp.where(i == n - 1, x_hat, z_s)  # the last step lands on t = 0: the clean estimate
        known_noise = jax.random.normal(jax.random.fold_in(step_key, 1), shape, dtype)
        return keep_known(z_s, logsnr_s, known_noise, i == n - 1), x_hat

    def up(k, i, z, x_prev):  # q(z_{i-1} | z_i): back up one grid step with fresh noise
        mean, variance = transition(z, logsnr_at(i), logsnr_at(i - 1))
        noise = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, plan_key_index(k, n)), 2), shape, dtype)
        return mean + jnp.sqrt(variance) * noise, x_prev

    def body(k, carry):
        z, x_prev = carry
        i, direction = plan[k, 0], plan[k, 1]
        return jax.lax.cond(direction == DOWN, down, up, k, i, z, x_prev)

    noise = jax.random.normal(jax.random.fold_in(key, n), shape, dtype)
    start = logsnr_at(0)
    z0 = jnp.where(strength >= 1.0, noise, q_sample(image, start, noise))
    z0 = keep_known(z0, start, jax.random.normal(jax.random.fold_in(key, n + 1), shape, dtype))
    x, _ = jax.lax.fori_loop(0, plan.shape[0], body, (z0, jnp.zeros(shape, dtype)))
    return x
