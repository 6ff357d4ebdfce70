"""One cascade stage's sampler as a pure function of (params, text, key): the library API
for import use (SPEC 3: guidance, thresholding; SR: noise conditioning augmentation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from imagen_jax.diffusion import SamplerConfig, Schedule, null_text, q_sample, sample


@dataclasses.dataclass(frozen=True)
class ModelFn:
    """model_fn(params, z, logsnr, cond) -> prediction for a flax module; hashable, so a
    `jax.tree_util.Partial(ModelFn(model), params)` keeps params traced and the compiled
    sampler cached across calls."""

    model: Any

    def __call__(self, params, z, logsnr, cond):
        return self.model.apply({"params": params}, z, logsnr, **cond)


def sample_stage(
    model,
    params,
    text_embedding,
    text_mask,
    key,
    *,
    image_size: int,
    sampler: SamplerConfig = SamplerConfig(),
    guidance_weight=1.0,
    low_res=None,
    aug_level: float = 0.0,
    aug_schedule: Schedule = Schedule("cosine"),
    channels: int = 3,
):
    """Images [B, image_size, image_size, channels] float32 in [-1, 1] (thresholded x_hat).

    text_embedding [B, L, D], text_mask [B, L] bool; guidance uses `null_text` as the empty
    condition (w = 1: no unconditional pass). SR stages: low_res [B, h, w, 3] in [-1, 1] is
    corrupted to `aug_level` (a time in [0, 1] of `aug_schedule`; 0 = clean, SPEC 3) with
    its own noise and passed with its log-SNR, to both guidance passes alike.
    """
    batch = text_embedding.shape[0]
    cond = {"text_embedding": text_embedding, "text_mask": text_mask}
    empty_embedding, empty_mask = null_text(text_embedding, text_mask)
    uncond = {"text_embedding": empty_embedding, "text_mask": empty_mask}
    sample_key, aug_key = jax.random.split(key)
    if low_res is not None:
        aug_logsnr = jnp.full((batch,), aug_schedule(jnp.float32(aug_level)), jnp.float32)
        noisy = q_sample(low_res, aug_logsnr, jax.random.normal(aug_key, low_res.shape, low_res.dtype))
        cond = dict(cond, low_res=noisy, aug_logsnr=aug_logsnr)
        uncond = dict(uncond, low_res=noisy, aug_logsnr=aug_logsnr)
    use_guidance = not (isinstance(guidance_weight, (int, float)) and guidance_weight == 1.0)
    return sample(
        jax.tree_util.Partial(ModelFn(model), params),
        sample_key,
        (batch, image_size, image_size, channels),
        config=sampler,
        cond=cond,
        uncond=uncond if use_guidance else None,
        guidance_weight=guidance_weight,
    )
