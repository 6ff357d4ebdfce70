"""PSNR, SSIM (Wang et al. 2004) and SR fidelity against known values and a float64 reference."""

import numpy as np
import pytest

from imagen_jax.eval import (
    bicubic_upsample,
    out_of_range_fraction,
    psnr,
    sr_fidelity,
    ssim,
)
from imagen_jax.eval.dataset_check import dataset_images
from imagen_jax.eval.image_quality import SSIM_K1, SSIM_K2, gaussian_window_1d
from imagen_jax.images import to_uint8


def _reference_ssim(a, b, data_range=255.0):
    """Direct float64 SSIM: an explicit 11x11 Gaussian window at every valid position."""
    window = np.outer(gaussian_window_1d(), gaussian_window_1d())
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    h, w, channels = a.shape
    values = []
    for c in range(channels):
        for i in range(h - 10):
            for j in range(w - 10):
                x, y = a[i : i + 11, j : j + 11, c].astype(np.float64), b[i : i + 11, j : j + 11, c].astype(np.float64)
                mx, my = (window * x).sum(), (window * y).sum()
                vx, vy = (window * (x - mx) ** 2).sum(), (window * (y - my) ** 2).sum()
                cov = (window * (x - mx) * (y - my)).sum()
                values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return np.mean(values)


def test_identical_images():
    image = np.random.default_rng(0).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    assert np.all(np.isinf(psnr(image, image))) and np.allclose(ssim(image, image), 1.0)
    assert psnr(image[0], image[0]) == np.inf and ssim(image[0], image[0]) == pytest.approx(1.0)


def test_psnr_known_value():
    a = np.zeros((16, 16, 3), np.uint8)
    assert psnr(a, a + 5) == pytest.approx(10 * np.log10(255**2 / 25))
    assert psnr(a / 255.0, (a + 5) / 255.0, data_range=1.0) == pytest.approx(10 * np.log10(255**2 / 25))


def test_ssim_of_a_constant_shift():
    """Constant images a and a + c: no variance, so SSIM is the luminance term alone,
    (2 a (a + c) + C1) / (a^2 + (a + c)^2 + C1)."""
    a, c = 100.0, 30.0
    c1 = (SSIM_K1 * 255) ** 2
    expected = (2 * a * (a + c) + c1) / (a**2 + (a + c) ** 2 + c1)
    x = np.full((20, 20, 3), a)
    assert ssim(x, x + c) == pytest.approx(expected, rel=1e-9)
    # a textured image shifted by c: structure and contrast unchanged, luminance lowers SSIM a little
    textured = np.random.default_rng(0).uniform(60, 140, (20, 20, 3))
    assert expected - 0.01 < ssim(textured, textured + c) < 1.0


def test_ssim_matches_float64_reference():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 20, 22, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    got = ssim(a, b)
    for i in range(2):
        assert got[i] == pytest.approx(_reference_ssim(a[i], b[i]), abs=1e-9)
    assert 0.5 < got.mean() < 0.99  # a real, non-trivial comparison


def test_ssim_rejects_small_or_mismatched_images():
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((16, 16, 3)), np.zeros((16, 17, 3)))


def test_sr_fidelity_against_bicubic():
    high, _ = dataset_images(8, 64)
    low, _ = dataset_images(8, 32)
    perfect = sr_fidelity(high, high, low)
    bicubic = np.stack([bicubic_upsample(image, (64, 64)) for image in low])
    assert perfect["sr"]["psnr"] == np.inf and perfect["sr"]["ssim"] == pytest.approx(1.0)
    assert perfect["bicubic"]["psnr"] == pytest.approx(float(np.mean(psnr(bicubic, high))))
    assert 20 < perfect["bicubic"]["psnr"] < 45 and 0.8 < perfect["bicubic"]["ssim"] < 1.0
    # bicubic as the "SR model": zero gain; nearest-neighbour upsampling: worse than bicubic
    assert sr_fidelity(bicubic, high, low)["psnr_gain_db"] == pytest.approx(0.0)
    nearest = low.repeat(2, axis=1).repeat(2, axis=2)
    worse = sr_fidelity(nearest, high, low)
    assert worse["psnr_gain_db"] < 0 and worse["ssim_gain"] < 0
    assert (perfect["num_images"], perfect["low_res"], perfect["high_res"]) == (8, [32, 32], [64, 64])


def test_bicubic_keeps_constants_and_sr_fidelity_checks_input():
    flat = np.full((16, 16, 3), 77, np.uint8)
    assert np.all(bicubic_upsample(flat, (64, 48)) == 77) and bicubic_upsample(flat, (64, 48)).shape == (64, 48, 3)
    high = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="imagen_jax.images.to_uint8"):
        sr_fidelity(high.astype(np.float32), high, high[:, :16, :16])
    with pytest.raises(ValueError, match="same N"):
        sr_fidelity(high, high, high[:1, :16, :16])


def test_model_output_conversion():
    x = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 255]
    assert out_of_range_fraction(x) == pytest.approx(2 / 6)
    assert out_of_range_fraction(x, value_range=(0, 1)) == pytest.approx(3 / 6)
