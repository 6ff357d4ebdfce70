"""imagen_jax: Imagen (cascaded text-to-image pixel diffusion) in JAX/Flax.

The public API is small: the diffusion core lives in `imagen_jax.diffusion`; the
names most programs need are re-exported here.
"""

from imagen_jax.diffusion import (
    SamplerConfig,
    Schedule,
    diffusion_loss,
    q_sample,
    sample,
)

__version__ = "0.1.0"

__all__ = ["SamplerConfig", "Schedule", "__version__", "diffusion_loss", "q_sample", "sample"]
