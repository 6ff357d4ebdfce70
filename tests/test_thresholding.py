"""Static and dynamic thresholding against their formulas (design.md §3)."""

import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import apply_threshold, dynamic_threshold, static_threshold


def ref_dynamic(x, p):
    s = np.quantile(np.abs(x.reshape(len(x), -1)), p, axis=1)
    s = np.maximum(s, 1.0).reshape(-1, *([1] * (x.ndim - 1)))
    return np.clip(x, -s, s) / s


def test_dynamic_threshold_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8, 8, 3)) * np.array([0.3, 1.0, 2.0, 5.0, 20.0])[:, None, None, None]
    for p in (0.9, 0.995, 1.0):
        got = np.asarray(dynamic_threshold(jnp.asarray(x, jnp.float32), p))
        np.testing.assert_allclose(got, ref_dynamic(x, p), rtol=2e-5, atol=1e-6)
    got = np.asarray(dynamic_threshold(jnp.asarray(x, jnp.float32)))
    assert np.abs(got).max() <= 1.0
    # A sample already inside [-1, 1] has s = 1: unchanged.
    np.testing.assert_allclose(got[0], x[0], rtol=1e-6)
    # A wide sample is rescaled, not just clipped: its extreme values land on +-1, its bulk shrinks by s > 1.
    assert np.abs(got[4]).max() == pytest.approx(1.0)
    s = np.quantile(np.abs(x[4]), 0.995)
    assert s > 1.0
    inside = np.abs(x[4]) < s
    np.testing.assert_allclose(got[4][inside], x[4][inside] / s, rtol=1e-5)


def test_static_and_dispatch():
    x = jnp.asarray([[-3.0, -0.5, 0.2, 4.0]])
    np.testing.assert_allclose(np.asarray(static_threshold(x)), [[-1.0, -0.5, 0.2, 1.0]], rtol=1e-7)
    np.testing.assert_array_equal(np.asarray(apply_threshold(x, "none")), np.asarray(x))
    with pytest.raises(ValueError, match="unknown thresholding 'dynamc'"):
        apply_threshold(x, "dynamc")


def test_upper_quantile_equals_numpy_quantile():
    from imagen_jax.diffusion.thresholding import upper_quantile

    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 200, 12288):
        v = np.abs(rng.normal(size=(3, n))).astype(np.float32)
        v[1, : n // 2] = v[1, 0]  # ties
        v[2, : n // 3] = 0.0
        for q in (0.5, 0.9, 0.995, 1.0):
            np.testing.assert_allclose(
                np.asarray(upper_quantile(jnp.asarray(v), q)), np.quantile(v, q, axis=1), rtol=1e-6
            )
