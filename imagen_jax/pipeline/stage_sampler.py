"""One cascade stage's sampler as a pure function of (params, text, key): the library API
for import use (design.md §3: guidance, thresholding; SR: noise conditioning augmentation).

    stage = StageConfig.from_config(train_config)          # static, hashable
    images = sample_stage(params, text_embedding, text_mask, key, config=stage, low_res=...)
    edited = edit_stage(params, text_embedding, text_mask, key, config=stage, image=..., mask=...)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from imagen_jax.config import is_super_resolution, upgrade_saved_config
from imagen_jax.diffusion import SamplerConfig, Schedule, null_text, q_sample
from imagen_jax.diffusion import sample as diffusion_sample
from imagen_jax.diffusion.editing import Repaint
from imagen_jax.diffusion.editing import edit as diffusion_edit


def _sampler(config: dict) -> SamplerConfig:
    """The `sampling` section of an upgraded stage config dict (upgrade_saved_config) as a
    SamplerConfig."""
    sampling = config["sampling"]
    return SamplerConfig(
        kind=sampling["sampler"],
        num_steps=int(sampling["num_steps"]),
        schedule=Schedule.from_config(config["diffusion"]["schedule"]),
        prediction=config["diffusion"]["prediction"],
        threshold=sampling["threshold"],
        quantile=float(sampling["quantile"]),
        gamma=float(sampling["gamma"]),
        eta=float(sampling["eta"]),
        start_logsnr=sampling["start_logsnr"],
        guidance_logsnr_min=sampling["guidance_logsnr_min"],
        guidance_logsnr_max=sampling["guidance_logsnr_max"],
    )


@dataclasses.dataclass(frozen=True)
class ModelFn:
    """model_fn(params, z, logsnr, cond) -> prediction for a flax module; hashable, so a
    `jax.tree_util.Partial(ModelFn(model), params)` keeps params traced and the compiled
    sampler cached across calls."""

    model: Any

    def __call__(self, params, z, logsnr, cond):
        return self.model.apply({"params": params}, z, logsnr, **cond)


def sampling_sizes(config: dict) -> tuple[int, int]:
    """(output side, low-res input side; 0 for a base stage) a stage samples at: its
    sampling.image_size (0: the training resolution), and for an SR stage the input that
    keeps the training ratio resolution / low_res_resolution (sr1024: trained 64 -> 256
    crops, samples 256 -> 1024; design.md §1)."""
    resolution = int(config["resolution"])
    image_size = int(config["sampling"]["image_size"] or resolution)
    if not is_super_resolution(config):
        return image_size, 0
    trained_low_res = int(config["low_res_resolution"])
    low_res, rest = divmod(image_size * trained_low_res, resolution)
    if rest:
        step = resolution // math.gcd(resolution, trained_low_res)
        raise ValueError(
            f"sampling.image_size={image_size} does not keep the stage's upsampling factor "
            f"{resolution} / {trained_low_res}; use a multiple of {step}."
        )
    return image_size, low_res


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Everything static about sampling one stage (hashable: a compile-cache key).

    model: the stage's flax module. image_size: output side (an SR stage may sample at a
    larger size than it trained on: its UNet is convolutional, design.md §4, sr1024).
    low_res_size: the side of the conditioning image it expects (0: a base stage).
    guidance_weight: Imagen's w (1 = no guidance, design.md §3). aug_level: SR noise-conditioning
    level in [0, 1] of `aug_schedule` (0 = clean input; design.md §3: 0 best FID, 0.1-0.3 best looking).
    """

    model: Any
    image_size: int
    low_res_size: int = 0
    sampler: SamplerConfig = SamplerConfig()
    guidance_weight: float = 1.0
    aug_level: float = 0.0
    aug_schedule: Schedule = Schedule("cosine")
    channels: int = 3

    def __post_init__(self):
        if self.image_size < 1 or self.low_res_size < 0:
            raise ValueError(
                f"image_size must be >= 1 and low_res_size >= 0, got {self.image_size}, {self.low_res_size}."
            )
        if not 0.0 <= self.aug_level <= 1.0:
            raise ValueError(f"aug_level is a time in [0, 1], got {self.aug_level}.")

    @property
    def is_super_resolution(self) -> bool:
        return self.low_res_size > 0

    @classmethod
    def from_config(cls, config, **changes) -> StageConfig:
        """From a stage's training config (ConfigDict or the dict in a workdir's config.json):
        the model, its `sampling` section (sampler, num_steps, threshold, guidance_weight,
        aug_level; image_size defaults to the training resolution) and its diffusion schedule.
        `changes` replace fields: sampler=..., guidance_weight=..., ..."""
        from imagen_jax.models import build_model

        config = upgrade_saved_config(config)
        sampling = config["sampling"]
        image_size, low_res_size = sampling_sizes(config)
        fields = dict(
            model=build_model(config),
            image_size=image_size,
            low_res_size=low_res_size,
            sampler=_sampler(config),
            guidance_weight=float(sampling["guidance_weight"]),
            aug_level=float(sampling["aug_level"]),
            aug_schedule=Schedule.from_config(config["diffusion"]["aug_schedule"]),
            channels=int(config["model"].get("out_channels", 3)),
        )
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise ValueError(f"Unknown stage setting(s) {unknown}; valid: {sorted(fields)}.")
        return cls(**{**fields, **changes})


def sample_stage(params, text_embedding, text_mask, key, *, config: StageConfig, low_res=None):
    """One stage: images [B, S, S, C] float32 in [-1, 1] (the last thresholded x_hat), S = config.image_size.

    text_embedding [B, L, D] float, text_mask [B, L] bool (from TextEncoder.encode); key a
    jax PRNG key; low_res [B, h, w, C] in [-1, 1] for an SR stage (the previous stage's
    output; the UNet resizes it to S). Guidance (w = config.guidance_weight; 1: no
    unconditional pass) uses `null_text` as the empty condition. An SR stage's low_res is
    corrupted to config.aug_level (a time in [0, 1] of config.aug_schedule; 0 = clean,
    design.md §3) with its own noise and passed with its log-SNR to both guidance passes
    alike. Pure: same inputs, same images.
    """
    cond, uncond, sample_key = _conditions(text_embedding, text_mask, key, config, low_res)
    batch = text_embedding.shape[0]
    return diffusion_sample(
        jax.tree_util.Partial(ModelFn(config.model), params),
        sample_key,
        (batch, config.image_size, config.image_size, config.channels),
        config=config.sampler,
        cond=cond,
        uncond=uncond,
        guidance_weight=config.guidance_weight,
    )


def edit_stage(
    params,
    text_embedding,
    text_mask,
    key,
    *,
    config: StageConfig,
    image,
    mask=None,
    strength=1.0,
    repaint: Repaint = Repaint(),
    low_res=None,
):
    """One stage editing `image` [B, S, S, C] in [-1, 1] (S = config.image_size; diffusion/editing.py):
    image-to-image from `strength` in (0, 1], inpainting where `mask` [B, S, S, 1] is 1
    (0: kept, and equal to `image` in the output), with RePaint resampling `repaint`.
    Otherwise as `sample_stage` (guidance, SR conditioning). At strength 1 without a mask
    it returns sample_stage's images for the same key."""
    expected = (text_embedding.shape[0], config.image_size, config.image_size, config.channels)
    if tuple(image.shape) != expected:
        raise ValueError(f"image has shape {tuple(image.shape)}; this stage edits {expected} images.")
    if mask is not None and tuple(mask.shape) != expected[:3] + (1,):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; this stage needs {expected[:3] + (1,)}.")
    cond, uncond, sample_key = _conditions(text_embedding, text_mask, key, config, low_res)
    return diffusion_edit(
        jax.tree_util.Partial(ModelFn(config.model), params),
        sample_key,
        image,
        mask=mask,
        strength=strength,
        config=config.sampler,
        repaint=repaint,
        cond=cond,
        uncond=uncond,
        guidance_weight=config.guidance_weight,
    )


def _conditions(text_embedding, text_mask, key, config: StageConfig, low_res):
    """(cond, uncond or None without guidance, the sampler's key) of a stage: the text,
    and for an SR stage the noise-augmented low-res image with its log-SNR (design.md §3)."""
    if config.is_super_resolution and low_res is None:
        raise ValueError("This is a super-resolution stage: pass low_res=[B, h, w, 3] (the previous stage's images).")
    if not config.is_super_resolution and low_res is not None:
        raise ValueError("This is a base stage: it takes no low_res input.")
    batch = text_embedding.shape[0]
    if low_res is not None and low_res.shape[0] != batch:
        raise ValueError(f"low_res has {low_res.shape[0]} images for {batch} text embeddings.")
    cond = {"text_embedding": text_embedding, "text_mask": text_mask}
    empty_embedding, empty_mask = null_text(text_embedding, text_mask)
    uncond = {"text_embedding": empty_embedding, "text_mask": empty_mask}
    sample_key, aug_key = jax.random.split(key)
    if low_res is not None:
        aug_logsnr = jnp.full((batch,), config.aug_schedule(jnp.float32(config.aug_level)), jnp.float32)
        noisy = q_sample(low_res, aug_logsnr, jax.random.normal(aug_key, low_res.shape, low_res.dtype))
        cond = dict(cond, low_res=noisy, aug_logsnr=aug_logsnr)
        uncond = dict(uncond, low_res=noisy, aug_logsnr=aug_logsnr)
    return cond, None if config.guidance_weight == 1.0 else uncond, sample_key
