"""imagen_jax: Imagen (cascaded text-to-image pixel diffusion) in JAX/Flax.

The public API is small. The diffusion core (`imagen_jax.diffusion`) is pure functions;
a stage's model comes from its config (`build_model(config.model)`) and is sampled with
`imagen_jax.pipeline.sample(params, text_embedding, text_mask, key, config=StageConfig)`;
`Cascade.from_workdirs([...])` chains trained stages from text. Text encoders live in
`imagen_jax.text` (`load_text_encoder`), data in `imagen_jax.data`, training in
`imagen_jax.train` (`imagen-jax train`).
"""

from imagen_jax.config import apply_overrides, load_config
from imagen_jax.diffusion import (
    SamplerConfig,
    Schedule,
    diffusion_loss,
    q_sample,
    sample,
)
from imagen_jax.models import build_model
from imagen_jax.pipeline import Cascade, StageConfig, sample_stage

__version__ = "0.1.0"

__all__ = [
    "Cascade",
    "SamplerConfig",
    "Schedule",
    "StageConfig",
    "__version__",
    "apply_overrides",
    "build_model",
    "diffusion_loss",
    "load_config",
    "q_sample",
    "sample",
    "sample_stage",
]
