"""Super-resolution fidelity: PSNR / SSIM of SR outputs against the true high-res
images, next to the same scores for bicubic upsampling of the low-res inputs."""

from __future__ import annotations

import numpy as np
from PIL import Image

from imagen_jax.eval.image_quality import psnr, ssim


def bicubic_upsample(low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [H, W, 3] by PIL bicubic (Keys cubic, a = -0.5); size = (H, W)."""
    return np.asarray(Image.fromarray(low_res).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def _check_batch(name: str, images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"{name} must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}; convert model output "
            f"with imagen_jax.images.to_uint8(x, value_range=(-1, 1))."
        )
    return images


def sr_fidelity(sr_images, true_high_res, low_res) -> dict:
    """Scores of uint8 SR outputs [N, H, W, 3] against the true images [N, H, W, 3],
    beside bicubic upsampling of the SR inputs `low_res` [N, h, w, 3].

    Returns {"sr": {"psnr", "ssim"}, "bicubic": {"psnr", "ssim"}, "psnr_gain_db",
    "ssim_gain", "num_images", "low_res", "high_res"}: the means over images of per-image
    PSNR (dB, data range 255) and SSIM (image_quality.ssim, on [0, 255]); gains are SR
    minus bicubic.
    """
    sr_images, true_high_res = _check_batch("sr_images", sr_images), _check_batch("true_high_res", true_high_res)
    low_res = _check_batch("low_res", low_res)
    if sr_images.shape != true_high_res.shape or len(low_res) != len(sr_images):
        raise ValueError(
            f"sr_images {sr_images.shape}, true_high_res {true_high_res.shape} and low_res {low_res.shape} must "
            f"hold the same images: same N, and SR output the size of the true images."
        )
    size = sr_images.shape[1:3]
    bicubic = np.stack([bicubic_upsample(image, size) for image in low_res])
    scores = {}
    for name, images in (("sr", sr_images), ("bicubic", bicubic)):
        scores[name] = {
            "psnr": float(np.mean(psnr(images, true_high_res))),
            "ssim": float(np.mean(ssim(images, true_high_res))),
        }
    return {
        **scores,
        "psnr_gain_db": scores["sr"]["psnr"] - scores["bicubic"]["psnr"],
        "ssim_gain": scores["sr"]["ssim"] - scores["bicubic"]["ssim"],
        "num_images": len(sr_images),
        "low_res": list(low_res.shape[1:3]),
        "high_res": list(size),
    }
