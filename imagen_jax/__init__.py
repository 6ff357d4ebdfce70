"""imagen_jax: Imagen (cascaded text-to-image pixel diffusion) in JAX/Flax.

The public API (docs/api.md), one name per level of sampling:
  `imagen_jax.diffusion.sample(model_fn, key, shape, config=SamplerConfig(...), ...)`: the
      diffusion sampler, one compiled loop;
  `sample_stage(params, text_embedding, text_mask, key, config=StageConfig, low_res=None)`:
      one trained stage, a pure function (`StageConfig.from_config(stage_config)`);
  `Cascade.from_workdirs([...]).sample(prompts)`: text -> trained stages -> images.
The diffusion core (`q_sample`, `diffusion_loss`, `Schedule`) is pure functions; a stage's
model comes from its config (`build_model(config)`); configs load with `load_config`
and `apply_overrides`. Text encoders: `imagen_jax.text.load_text_encoder`.
"""

from imagen_jax.config import apply_overrides, load_config
from imagen_jax.diffusion import (
    SamplerConfig,
    Schedule,
    diffusion_loss,
    q_sample,
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
    "sample_stage",
]
