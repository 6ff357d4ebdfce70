"""Schedules against float64 numpy references written here (design.md §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import (
    Schedule,
    alpha_bar_table,
    alpha_sigma,
    cosine_logsnr,
    linear_betas,
    linear_logsnr,
    logsnr_from_alpha_bar,
    time_at_logsnr,
)

T_INTERIOR = np.linspace(0.002, 0.998, 499)


def ref_cosine_alpha_bar(t, s=0.008):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    return f(t) / f(0.0)


def test_cosine_matches_improved_ddpm_alpha_bar():
    ab = ref_cosine_alpha_bar(T_INTERIOR)
    ref = np.log(ab / (1 - ab))
    with jax.enable_x64(True):
        got = np.asarray(cosine_logsnr(jnp.asarray(T_INTERIOR, jnp.float64)))
    np.testing.assert_allclose(got, np.clip(ref, -20, 20), rtol=1e-9, atol=1e-9)
    got32 = np.asarray(cosine_logsnr(jnp.asarray(T_INTERIOR, jnp.float32)))
    np.testing.assert_allclose(got32, np.clip(ref, -20, 20), atol=2e-4)


def test_cosine_without_f0_term_is_the_spec_closed_form_away_from_zero():
    # design.md §3: lambda(t) = -2 log tan(pi/2 (t+s)/(1+s)) up to the f(0) correction, which only
    # matters near t = 0 (f(0) = cos^2(pi/2 s/(1+s)) ~ 1 - 1.6e-4).
    t = np.linspace(0.3, 0.95, 14)
    closed = -2 * np.log(np.tan(np.pi / 2 * (t + 0.008) / 1.008))
    got = np.asarray(cosine_logsnr(jnp.asarray(t, jnp.float32)))
    np.testing.assert_allclose(got, closed, atol=2e-3)


def test_linear_is_ddpm_betas_in_continuous_time():
    t = T_INTERIOR
    ref = -np.log(np.expm1(0.1 * t + 9.95 * t**2))
    with jax.enable_x64(True):
        got = np.asarray(linear_logsnr(jnp.asarray(t, jnp.float64)))
    np.testing.assert_allclose(got, np.clip(ref, -20, 20), rtol=1e-10)
    # ... and close to the 1000-step discrete table alpha_bar_i = prod (1 - beta) at t = i/1000.
    table = logsnr_from_alpha_bar(alpha_bar_table(linear_betas()))
    i = np.arange(20, 1001, 20)
    np.testing.assert_allclose(np.asarray(linear_logsnr(jnp.asarray(i / 1000.0))), table[i - 1], atol=0.1)


def test_alpha_bar_is_product_of_one_minus_beta_not_of_beta():
    betas = linear_betas(1000)
    expected = np.empty(1000)
    running = 1.0
    for k, b in enumerate(betas):
        running *= 1.0 - b
        expected[k] = running
    np.testing.assert_allclose(alpha_bar_table(betas), expected, rtol=1e-12)
    assert alpha_bar_table(betas)[0] == pytest.approx(1 - 1e-4)
    assert alpha_bar_table(betas)[-1] == pytest.approx(4.036e-5, rel=1e-3)  # DDPM's alpha_bar_T


def test_discrete_schedule_reads_the_table():
    table = logsnr_from_alpha_bar(alpha_bar_table(linear_betas()))
    i = np.array([1, 2, 500, 999, 1000])
    got = np.asarray(Schedule("discrete_linear")(jnp.asarray(i / 1000.0)))
    np.testing.assert_allclose(got, table[i - 1], rtol=1e-5)
    assert float(Schedule("discrete_linear")(0.0)) == 20.0  # the clean end, clamped


@pytest.mark.parametrize("kind", ["cosine", "linear", "discrete_linear"])
def test_schedule_ends_are_finite_and_monotone(kind):
    sched = Schedule(kind)
    t = jnp.linspace(0.0, 1.0, 1001)
    lam = np.asarray(sched(t))
    assert np.all(np.isfinite(lam))
    assert lam[0] == 20.0 and lam[-1] >= -20.0
    assert np.all(np.diff(lam) <= 0)
    assert lam[-1] < -9  # nearly pure noise at t = 1


def test_alpha_sigma_identities():
    with jax.enable_x64(True):
        lam = jnp.linspace(-20.0, 20.0, 81, dtype=jnp.float64)
        a, s = alpha_sigma(lam)
        np.testing.assert_allclose(np.asarray(a**2 + s**2), 1.0, rtol=1e-14)
        np.testing.assert_allclose(np.asarray(jnp.log(a**2 / s**2)), np.asarray(lam), atol=1e-9)
    a32, s32 = alpha_sigma(jnp.float32(20.0))
    assert float(s32) > 0  # sigma does not underflow to 0 at the clamped end in float32


def test_schedule_rejects_bad_config():
    with pytest.raises(ValueError, match="unknown schedule kind 'cosin'"):
        Schedule("cosin")
    with pytest.raises(ValueError, match="logsnr_min"):
        Schedule("cosine", logsnr_min=5.0, logsnr_max=-5.0)
    with pytest.raises(ValueError, match="unknown schedule fields \\['bogus'\\]"):
        Schedule.from_config({"kind": "linear", "bogus": 1})
    assert Schedule.from_config({"kind": "linear"}) == Schedule("linear")


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_time_at_logsnr_inverts_the_schedule(kind):
    schedule = Schedule(kind)
    for logsnr in (-9.5, -3.0, 0.0, 4.0, 12.0):  # the linear schedule reaches only -10.05
        t = time_at_logsnr(schedule, logsnr)
        assert 0.0 < t < 1.0
        assert float(schedule(t)) == pytest.approx(logsnr, abs=1e-3)
    assert time_at_logsnr(schedule, -25.0) == 1.0 and time_at_logsnr(schedule, 25.0) == 0.0
    # DPM-Solver (Lu et al. 2022) starts its cosine-schedule grid at T = 0.9946: log-SNR -9.56 here.
    if kind == "cosine":
        assert time_at_logsnr(schedule, float(schedule(0.9946))) == pytest.approx(0.9946, abs=1e-5)
