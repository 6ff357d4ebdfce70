"""Sampling over trained stages: the per-stage pure sampler and the cascade."""

from imagen_jax.pipeline.cascade import (
    Cascade,
    CascadeOutput,
    WorkdirError,
    load_ema_params,
    read_stage_config,
)
from imagen_jax.pipeline.stage_sampler import ModelFn, StageConfig, sample_stage

__all__ = [
    "Cascade",
    "CascadeOutput",
    "ModelFn",
    "StageConfig",
    "WorkdirError",
    "load_ema_params",
    "read_stage_config",
    "sample_stage",
]
