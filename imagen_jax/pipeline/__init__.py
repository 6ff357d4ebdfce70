"""Sampling over trained stages: the per-stage pure sampler and the cascade."""

from imagen_jax.pipeline.cascade import Cascade, CascadeOutput, SampledBatch
from imagen_jax.pipeline.stage_params import WorkdirError, load_ema_params, read_stage_config
from imagen_jax.pipeline.stage_sampler import ModelFn, StageConfig, edit_stage, sample_stage

__all__ = [
    "Cascade",
    "CascadeOutput",
    "ModelFn",
    "SampledBatch",
    "StageConfig",
    "WorkdirError",
    "edit_stage",
    "load_ema_params",
    "read_stage_config",
    "sample_stage",
]
