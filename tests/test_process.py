"""Forward process, transition, posterior and parameterizations against float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import (
    Schedule,
    alpha_bar_table,
    ancestral_update,
    eps_from_v,
    eps_from_x,
    linear_betas,
    posterior,
    q_sample,
    transition,
    v_from_x_eps,
    x_from_eps,
    x_from_v,
)

RNG = np.random.default_rng(0)


def ab_from_logsnr(lam):
    return 1.0 / (1.0 + np.exp(-lam))


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_q_sample_matches_reference(x64):
    x = RNG.normal(size=(4, 3, 3, 2))
    eps = RNG.normal(size=x.shape)
    lam = np.array([-7.0, -1.0, 2.5, 12.0])
    ab = ab_from_logsnr(lam)[:, None, None, None]
    ref = np.sqrt(ab) * x + np.sqrt(1 - ab) * eps
    np.testing.assert_allclose(
        np.asarray(q_sample(jnp.asarray(x), jnp.asarray(lam), jnp.asarray(eps))), ref, rtol=1e-12
    )


def test_posterior_matches_ddpm_form(x64):
    # DDPM's form in alpha_bar: mean = sqrt(ab_s) beta_ts / (1 - ab_t) x + sqrt(a_ts) (1 - ab_s) / (1 - ab_t) z_t,
    # var = (1 - ab_s) / (1 - ab_t) beta_ts, with a_ts = ab_t / ab_s, beta_ts = 1 - a_ts.
    lam_t = np.array([-6.0, -1.0, 0.5, 4.0])
    lam_s = lam_t + np.array([0.3, 2.0, 0.01, 5.0])
    ab_t, ab_s = ab_from_logsnr(lam_t), ab_from_logsnr(lam_s)
    a_ts = ab_t / ab_s
    beta_ts = 1 - a_ts
    x = RNG.normal(size=(4, 5))
    z = RNG.normal(size=(4, 5))
    ref_mean = (np.sqrt(ab_s) * beta_ts / (1 - ab_t))[:, None] * x + (np.sqrt(a_ts) * (1 - ab_s) / (1 - ab_t))[
        :, None
    ] * z
    ref_var = (1 - ab_s) / (1 - ab_t) * beta_ts
    mean, var = posterior(jnp.asarray(z), jnp.asarray(x), jnp.asarray(lam_t), jnp.asarray(lam_s))
    np.testing.assert_allclose(np.asarray(mean), ref_mean, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(var).ravel(), ref_var, rtol=1e-10)


def test_transition_matches_reference(x64):
    lam_s, lam_t = np.array([3.0, 0.0]), np.array([1.0, -4.0])
    ab_s, ab_t = ab_from_logsnr(lam_s), ab_from_logsnr(lam_t)
    z_s = RNG.normal(size=(2, 6))
    mean, var = transition(jnp.asarray(z_s), jnp.asarray(lam_s), jnp.asarray(lam_t))
    np.testing.assert_allclose(np.asarray(mean), np.sqrt(ab_t / ab_s)[:, None] * z_s, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(var).ravel(), 1 - ab_t / ab_s, rtol=1e-10)


def test_transition_composes_with_marginal_and_posterior_inverts_it(x64):
    """q(z_t|z_s) o q(z_s|x) = q(z_t|x), and  integral q(z_s|z_t,x) q(z_t|x) dz_t = q(z_s|x)."""
    lam_s, lam_t = jnp.asarray([2.0, -0.5]), jnp.asarray([-1.0, -3.0])
    alpha = lambda lam: np.sqrt(ab_from_logsnr(np.asarray(lam)))  # noqa: E731
    sig2 = lambda lam: 1 - ab_from_logsnr(np.asarray(lam))  # noqa: E731
    one = jnp.ones((2, 1))
    zero = jnp.zeros((2, 1))
    # transition mean is c * z_s; marginal of z_t: mean c alpha_s x, var c^2 sigma_s^2 + var_ts.
    c = np.asarray(transition(one, lam_s, lam_t)[0]).ravel()
    var_ts = np.asarray(transition(one, lam_s, lam_t)[1]).ravel()
    np.testing.assert_allclose(c * alpha(lam_s), alpha(lam_t), rtol=1e-12)
    np.testing.assert_allclose(c**2 * sig2(lam_s) + var_ts, sig2(lam_t), rtol=1e-12)
    # posterior mean is a z_t + b x; marginal over z_t ~ q(z_t|x): mean (a alpha_t + b) x, var a^2 sigma_t^2 + var.
    a = np.asarray(posterior(one, zero, lam_t, lam_s)[0]).ravel()
    b = np.asarray(posterior(zero, one, lam_t, lam_s)[0]).ravel()
    var = np.asarray(posterior(one, one, lam_t, lam_s)[1]).ravel()
    np.testing.assert_allclose(a * alpha(lam_t) + b, alpha(lam_s), rtol=1e-12)
    np.testing.assert_allclose(a**2 * sig2(lam_t) + var, sig2(lam_s), rtol=1e-12)


def test_posterior_composition_monte_carlo():
    """Sampling z_t ~ q(z_t|x) then z_s ~ q(z_s|z_t,x) gives the marginal q(z_s|x) (float32, 200k draws)."""
    n = 200_000
    x = jnp.full((n, 1), 0.7)
    lam_t, lam_s = jnp.float32(-1.0), jnp.float32(1.5)
    k1, k2 = jax.random.split(jax.random.key(1))
    z_t = q_sample(x, lam_t, jax.random.normal(k1, x.shape))
    mean, var = posterior(z_t, x, lam_t, lam_s)
    z_s = mean + jnp.sqrt(var) * jax.random.normal(k2, x.shape)
    ab_s = ab_from_logsnr(1.5)
    assert float(z_s.mean()) == pytest.approx(np.sqrt(ab_s) * 0.7, abs=5e-3)
    assert float(z_s.std()) == pytest.approx(np.sqrt(1 - ab_s), rel=5e-3)


def test_parameterizations_round_trip(x64):
    x = jnp.asarray(RNG.normal(size=(3, 4, 4, 3)))
    eps = jnp.asarray(RNG.normal(size=x.shape))
    lam = jnp.asarray([-5.0, 0.0, 7.0])
    z = q_sample(x, lam, eps)
    v = v_from_x_eps(x, eps, lam)
    ab = ab_from_logsnr(np.asarray(lam))[:, None, None, None]
    np.testing.assert_allclose(np.asarray(v), np.sqrt(ab) * eps - np.sqrt(1 - ab) * x, rtol=1e-12)
    for got, want in [
        (x_from_eps(z, eps, lam), x),
        (eps_from_x(z, x, lam), eps),
        (x_from_v(z, v, lam), x),
        (eps_from_v(z, v, lam), eps),
    ]:
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_ancestral_step_is_ddpm_on_the_discrete_schedule(gamma, x64):
    """x_{t-1} = (x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t) + sigma_t z (design.md §3), with
    sigma_t^2 = beta~_t (gamma = 0) or beta_t (gamma = 1), and z FRESH noise."""
    betas = linear_betas(1000)
    ab = alpha_bar_table(betas)
    sched = Schedule("discrete_linear")
    steps = np.array([2, 10, 500, 1000])  # DDPM's t (1-based)
    lam_t = sched(jnp.asarray(steps / 1000.0, jnp.float64))
    lam_s = sched(jnp.asarray((steps - 1) / 1000.0, jnp.float64))
    x_t = RNG.normal(size=(4, 8))
    eps = RNG.normal(size=(4, 8))
    z = RNG.normal(size=(4, 8))
    b, a_bar_t, a_bar_s = betas[steps - 1], ab[steps - 1], ab[steps - 2]
    beta_tilde = (1 - a_bar_s) / (1 - a_bar_t) * b
    sig = np.sqrt(b if gamma == 1.0 else beta_tilde)[:, None]
    ref = (x_t - (b / np.sqrt(1 - a_bar_t))[:, None] * eps) / np.sqrt(1 - b)[:, None] + sig * z
    x_hat = x_from_eps(jnp.asarray(x_t), jnp.asarray(eps), lam_t)
    got = ancestral_update(jnp.asarray(x_t), x_hat, lam_t, lam_s, jnp.asarray(z), gamma)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6, atol=1e-8)
