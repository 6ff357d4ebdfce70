"""The pure functional diffusion core: schedules, forward process, losses, samplers (design.md §3)."""

from imagen_jax.diffusion.editing import Repaint, edit, repaint_plan
from imagen_jax.diffusion.guidance import denoise, drop_text, guided_output, null_text
from imagen_jax.diffusion.losses import diffusion_loss, min_snr_weight, per_example_loss
from imagen_jax.diffusion.parameterization import (
    eps_from_v,
    eps_from_x,
    target_for,
    v_from_x_eps,
    x_from_eps,
    x_from_v,
)
from imagen_jax.diffusion.process import posterior, q_sample, transition
from imagen_jax.diffusion.samplers import (
    SamplerConfig,
    ancestral_update,
    ddim_update,
    dpm_solver_pp_2m_update,
    sample,
)
from imagen_jax.diffusion.schedules import (
    Schedule,
    alpha_bar_table,
    alpha_sigma,
    cosine_logsnr,
    discrete_logsnr,
    linear_betas,
    linear_logsnr,
    logsnr_from_alpha_bar,
    time_at_logsnr,
)
from imagen_jax.diffusion.thresholding import (
    apply_threshold,
    dynamic_threshold,
    static_threshold,
)

__all__ = [
    "Schedule",
    "Repaint",
    "SamplerConfig",
    "alpha_bar_table",
    "alpha_sigma",
    "ancestral_update",
    "apply_threshold",
    "cosine_logsnr",
    "ddim_update",
    "denoise",
    "diffusion_loss",
    "drop_text",
    "edit",
    "discrete_logsnr",
    "dpm_solver_pp_2m_update",
    "dynamic_threshold",
    "eps_from_v",
    "eps_from_x",
    "guided_output",
    "linear_betas",
    "linear_logsnr",
    "logsnr_from_alpha_bar",
    "min_snr_weight",
    "null_text",
    "per_example_loss",
    "posterior",
    "q_sample",
    "repaint_plan",
    "sample",
    "static_threshold",
    "target_for",
    "time_at_logsnr",
    "transition",
    "v_from_x_eps",
    "x_from_eps",
    "x_from_v",
]
