"""Sampling over trained stages: the per-stage pure sampler (and, later, the cascade)."""

from imagen_jax.pipeline.stage_sampler import ModelFn, sample_stage

__all__ = ["ModelFn", "sample_stage"]
