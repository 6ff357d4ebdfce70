"""Full-reference image quality: PSNR and SSIM.

Both take two images of the same shape, [H, W, C] or a batch [N, H, W, C], with values
on a scale whose full range is `data_range` (255 for uint8, the default), compute in
float64, and return one number per image (a float, or float64 [N]).

SSIM is the Gaussian-window SSIM of Wang, Bovik, Sheikh, Simoncelli, "Image quality
assessment: from error visibility to structural similarity" (IEEE TIP 2004), with that
paper's constants: an 11 x 11 Gaussian window of std 1.5 pixels, K1 = 0.01, K2 = 0.03,
C1 = (K1 L)^2, C2 = (K2 L)^2 with L = data_range. Local statistics use only windows
lying fully inside the image ('valid'); the SSIM map is averaged over the image, then
over channels (each RGB channel on its own, not luminance).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim not in (3, 4):
        raise ValueError(
            f"Expected two images of the same shape [H, W, C] or [N, H, W, C], got {a.shape} and {b.shape}; "
            f"resize one to the other's size first."
        )
    return a.astype(np.float64), b.astype(np.float64)


def _per_image(values: np.ndarray, batched: bool):
    return values if batched else float(values[0])


def psnr(a, b, data_range: float = 255.0):
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE) per image; inf when equal."""
    batched = np.ndim(a) == 4
    a, b = _pair(a, b)
    if not batched:
        a, b = a[None], b[None]
    mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 10 * np.log10(data_range**2 / mse)
    return _per_image(values, batched)


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalized float64 [size] Gaussian; the 2-D SSIM window is its outer product."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-(t**2) / (2 * sigma**2))
    return w / w.sum()


def _local_mean(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """'valid' Gaussian filtering over axes 1, 2 of [N, H, W, C]."""
    r = len(window) // 2
    for axis in (1, 2):
        x = ndimage.correlate1d(x, window, axis=axis, mode="constant")
    return x[:, r:-r, r:-r, :]


def ssim(a, b, data_range: float = 255.0):
    """Mean SSIM (Wang et al. 2004, module docstring) per image, averaged over channels."""
    batched = np.ndim(a) == 4
    a, b = _pair(a, b)
    if not batched:
        a, b = a[None], b[None]
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {a.shape[1:3]}.")
    window = gaussian_window_1d()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = _local_mean(a, window), _local_mean(b, window)
    var_a = _local_mean(a * a, window) - mu_a**2
    var_b = _local_mean(b * b, window) - mu_b**2
    cov = _local_mean(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return _per_image(ssim_map.mean(axis=(1, 2, 3)), batched)
