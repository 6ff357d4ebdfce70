"""Evaluation on the shapes dataset: prompt accuracy (a deterministic pixel analyzer
checks each image against its prompt) and SR fidelity (PSNR / SSIM vs bicubic)."""

from imagen_jax.eval.image_io import out_of_range_fraction
from imagen_jax.eval.image_quality import psnr, ssim
from imagen_jax.eval.prompt_accuracy import prompt_accuracy
from imagen_jax.eval.prompt_parser import PromptRequest, RequestedObject, parse_prompt
from imagen_jax.eval.shape_analyzer import DetectedObject, ImageAnalysis, analyze_image
from imagen_jax.eval.sr_fidelity import bicubic_upsample, sr_fidelity

__all__ = [
    "DetectedObject",
    "ImageAnalysis",
    "PromptRequest",
    "RequestedObject",
    "analyze_image",
    "bicubic_upsample",
    "out_of_range_fraction",
    "parse_prompt",
    "prompt_accuracy",
    "psnr",
    "sr_fidelity",
    "ssim",
]
