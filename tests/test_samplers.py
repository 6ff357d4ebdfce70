"""Samplers: exactness on Gaussian data, guidance, determinism, one compiled program (design.md §3).

For data x ~ N(m, sd^2) per dimension the optimal denoiser is closed form,
E[x | z_t] = m + alpha sd^2 / (alpha^2 sd^2 + sigma^2) (z_t - alpha m), so every sampler is a
linear-Gaussian recursion whose output moments can be computed exactly in float64 here.
Stated tolerances (65536 draws, data std 0.3..1.0): mean within 0.01 for all; std within
2.5% for ancestral (256 steps), 5% for DDIM (50 steps; its exact deficit is checked), 3.5%
for DPM-Solver++(2M) at 20 steps and 1.5% at 50.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import (
    SamplerConfig,
    Schedule,
    alpha_sigma,
    guided_output,
    sample,
    time_at_logsnr,
)
from imagen_jax.diffusion.samplers import _sample

DIM = 8
N_SAMPLES = 65536
MEAN = np.linspace(-0.5, 0.5, DIM)
STD = np.linspace(0.3, 1.0, DIM)


def optimal_x(z, logsnr):
    a, s = alpha_sigma(logsnr[:, None])
    return MEAN + a * STD**2 / (a**2 * STD**2 + s**2) * (z - a * MEAN)


def optimal_eps(z, logsnr, cond):
    a, s = alpha_sigma(logsnr[:, None])
    return (z - a * optimal_x(z, logsnr)) / s


def optimal_v(z, logsnr, cond):
    a, s = alpha_sigma(logsnr[:, None])
    return a * optimal_eps(z, logsnr, cond) - s * optimal_x(z, logsnr)


def optimal_x_model(z, logsnr, cond):
    return optimal_x(z, logsnr)


def grid_logsnr(num_steps, schedule=Schedule(), start_logsnr=None):
    t_start = 1.0 if start_logsnr is None else time_at_logsnr(schedule, start_logsnr)
    t = t_start * (1.0 - np.arange(num_steps + 1) / num_steps)
    return np.asarray(schedule(jnp.asarray(t, jnp.float32)), np.float64)


def predicted_moments(kind, num_steps, start_logsnr=None):
    """Exact output mean/std of the ancestral (gamma=0) or DDIM (eta=0) sampler with the
    optimal denoiser, started from z ~ N(0, I) at the grid's first log-SNR."""
    lam = grid_logsnr(num_steps, start_logsnr=start_logsnr)
    mu, var = np.zeros(DIM), np.ones(DIM)
    for i in range(num_steps):
        a_t, s_t = np.sqrt(1 / (1 + np.exp(-lam[i]))), np.sqrt(1 / (1 + np.exp(lam[i])))
        k = a_t * STD**2 / (a_t**2 * STD**2 + s_t**2)  # x_hat = m + k (z - a_t m)
        if i == num_steps - 1:
            return MEAN + k * (mu - a_t * MEAN), np.sqrt(k**2 * var)
        a_s, s_s = np.sqrt(1 / (1 + np.exp(-lam[i + 1]))), np.sqrt(1 / (1 + np.exp(lam[i + 1])))
        if kind == "ancestral":
            r = np.exp(lam[i] - lam[i + 1])
            coef_z, coef_x, noise_var = r * a_s / a_t, (1 - r) * a_s, (1 - r) * s_s**2
        else:
            coef_z, coef_x, noise_var = s_s / s_t, a_s - s_s * a_t / s_t, 0.0
        gain = coef_z + coef_x * k
        mu = gain * mu + coef_x * (MEAN - k * a_t * MEAN)
        var = gain**2 * var + noise_var


def draw(model, kind, num_steps, key=0, start_logsnr=None):
    config = SamplerConfig(kind=kind, num_steps=num_steps, threshold="none", start_logsnr=start_logsnr)
    x = np.asarray(sample(model, jax.random.key(key), (N_SAMPLES, DIM), config=config), np.float64)
    assert np.all(np.isfinite(x))
    return x.mean(0), x.std(0)


@pytest.mark.parametrize(
    "kind,num_steps,data_tol,start_logsnr",
    [("ancestral", 256, 0.025, None), ("ddim", 50, 0.05, None), ("ddim", 50, 0.05, -10.0)],
)
def test_linear_samplers_match_their_exact_recursion_and_the_data(kind, num_steps, data_tol, start_logsnr):
    mean, std = draw(optimal_eps, kind, num_steps, start_logsnr=start_logsnr)
    pred_mean, pred_std = predicted_moments(kind, num_steps, start_logsnr)
    # The implementation is exactly the sampler (up to Monte Carlo error, 65536 draws) ...
    np.testing.assert_allclose(mean, pred_mean, atol=0.01)
    np.testing.assert_allclose(std / pred_std, 1.0, atol=0.012)
    # ... and the sampler reproduces the data within its stated tolerance.
    np.testing.assert_allclose(mean, MEAN, atol=0.01)
    np.testing.assert_allclose(std / STD, 1.0, atol=data_tol)


def test_ddim_variance_deficit_is_the_known_discretization_error():
    # DDIM shrinks the std by prod_i cos(angle step) ~ 1 - pi^2 / (8 N) on Gaussian data (plus the
    # final x_hat's shrink for low-variance dims): the exact recursion predicts a 2.5-4.5% deficit at
    # 50 steps, and the sampler shows it (previous test); it halves with twice the steps.
    _, pred50 = predicted_moments("ddim", 50)
    _, pred100 = predicted_moments("ddim", 100)
    assert np.all(pred50 / STD < 0.98) and np.all(pred50 / STD > 0.95)
    np.testing.assert_allclose((1 - pred100 / STD) / (1 - pred50 / STD), 0.5, atol=0.05)


@pytest.mark.parametrize("num_steps,std_tol", [(20, 0.035), (50, 0.015)])
def test_dpm_solver_pp_2m_reproduces_the_data(num_steps, std_tol):
    mean, std = draw(optimal_eps, "dpm_solver_pp_2m", num_steps)
    np.testing.assert_allclose(mean, MEAN, atol=0.01)
    np.testing.assert_allclose(std / STD, 1.0, atol=std_tol)


def test_start_logsnr_keeps_an_eps_models_error_at_pure_noise_out_of_the_samples():
    # An eps model with a small relative error, 1e-3 z. Its x_hat = (z - sigma eps_hat) / alpha
    # carries that error times sigma / alpha: about 22000x at log-SNR -20 (t = 1), about 150x at
    # -10. A 32-step grid from t = 1 jumps to log-SNR -6 in its first step and takes alpha_s
    # (0.05) times that x_hat into z: the samples are ruined (here z's variance collapses and
    # the samples' std is 2% of the data's). From -10 the error stays small.
    def slightly_off(z, logsnr, cond):
        return optimal_eps(z, logsnr, cond) + 1e-3 * z

    assert grid_logsnr(32)[1] > -6.1 and grid_logsnr(32, start_logsnr=-10.0)[0] == pytest.approx(-10.0, abs=1e-3)
    _, std_from_t1 = draw(slightly_off, "dpm_solver_pp_2m", 32)
    mean, std = draw(slightly_off, "dpm_solver_pp_2m", 32, start_logsnr=-10.0)
    assert np.all(std_from_t1 / STD < 0.1)
    np.testing.assert_allclose(mean, MEAN, atol=0.01)
    np.testing.assert_allclose(std / STD, 1.0, atol=0.03)


@pytest.mark.parametrize("kind", ["ddim", "dpm_solver_pp_2m"])
def test_x_and_v_predictions_give_the_same_samples_as_eps(kind):
    config = SamplerConfig(kind=kind, num_steps=20, threshold="none")
    key, shape = jax.random.key(5), (512, DIM)
    ref = sample(optimal_eps, key, shape, config=config)
    for model, pred in [(optimal_x_model, "x"), (optimal_v, "v")]:
        got = sample(
            model, key, shape, config=SamplerConfig(kind=kind, num_steps=20, threshold="none", prediction=pred)
        )
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-3)


def conditional_model(z, logsnr, cond):
    """eps depends on the condition: a shift by cond["c"] [B, 1]."""
    return optimal_eps(z, logsnr, None) + cond["c"]


def test_guidance_is_one_batched_call_and_w1_is_the_conditional_model():
    batch_sizes = []

    def counting_model(z, logsnr, cond):
        batch_sizes.append(z.shape[0])
        return conditional_model(z, logsnr, cond)

    z = jnp.ones((4, DIM))
    lam = jnp.zeros((4,))
    cond, uncond = {"c": jnp.full((4, 1), 0.5)}, {"c": jnp.zeros((4, 1))}
    out = guided_output(counting_model, z, lam, cond, uncond, 3.0)
    assert batch_sizes == [8]  # conditional and unconditional in ONE call
    c, u = conditional_model(z, lam, cond), conditional_model(z, lam, uncond)
    np.testing.assert_allclose(np.asarray(out), np.asarray(3.0 * c - 2.0 * u), rtol=1e-6)

    config = SamplerConfig(kind="ancestral", num_steps=16, threshold="dynamic")
    key, shape = jax.random.key(2), (4, DIM)
    plain = sample(conditional_model, key, shape, config=config, cond=cond)
    w1 = sample(conditional_model, key, shape, config=config, cond=cond, uncond=uncond, guidance_weight=1.0)
    w5 = sample(conditional_model, key, shape, config=config, cond=cond, uncond=uncond, guidance_weight=5.0)
    np.testing.assert_allclose(np.asarray(w1), np.asarray(plain), atol=1e-6)
    assert np.abs(np.asarray(w5) - np.asarray(plain)).max() > 1e-2


@pytest.mark.parametrize("kind", ["ancestral", "dpm_solver_pp_2m"])
def test_guidance_interval_guides_exactly_the_steps_inside_and_skips_the_other_pass(kind):
    lo, hi, w, n = -6.0, 2.0, 4.0, 16
    lam_grid = grid_logsnr(n, start_logsnr=-8.0)[:n]  # the log-SNR of each model evaluation
    inside = (lam_grid >= lo) & (lam_grid <= hi)
    assert 0 < inside.sum() < n  # the interval splits this grid
    cond, uncond = {"c": jnp.full((4, 1), 0.5)}, {"c": jnp.full((4, 1), -0.2)}
    batch_sizes = []

    def counting_model(z, logsnr, c):
        jax.debug.callback(lambda b: batch_sizes.append(int(b)), jnp.int32(z.shape[0]))
        return conditional_model(z, logsnr, c)

    def hand_guided(z, logsnr, c):  # guidance applied by hand where the log-SNR is inside
        guide = ((logsnr >= lo) & (logsnr <= hi))[:, None]
        return optimal_eps(z, logsnr, None) + jnp.where(guide, w * 0.5 + (1 - w) * -0.2, 0.5)

    key, shape = jax.random.key(3), (4, DIM)
    base = dict(kind=kind, num_steps=n, threshold="none", start_logsnr=-8.0)
    config = SamplerConfig(**base, guidance_logsnr_min=lo, guidance_logsnr_max=hi)
    got = sample(counting_model, key, shape, config=config, cond=cond, uncond=uncond, guidance_weight=w)
    jax.effects_barrier()
    assert sorted(batch_sizes) == sorted([8] * int(inside.sum()) + [4] * int((~inside).sum()))
    unbounded = SamplerConfig(**base)
    want = sample(hand_guided, key, shape, config=unbounded, cond=cond)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)

    # An interval holding every step is plain guidance; one holding none is w = 1.
    everywhere = SamplerConfig(**base, guidance_logsnr_min=-50, guidance_logsnr_max=50)
    nowhere = SamplerConfig(**base, guidance_logsnr_min=30, guidance_logsnr_max=40)
    run = lambda c, weight: np.asarray(  # noqa: E731
        sample(
            conditional_model,
            key,
            shape,
            config=c,
            cond=cond,
            uncond=uncond,  # noqa: E731
            guidance_weight=weight,
        )
    )
    np.testing.assert_allclose(run(everywhere, w), run(unbounded, w), atol=1e-6)
    np.testing.assert_allclose(run(nowhere, w), run(unbounded, 1.0), atol=1e-6)
    assert np.abs(run(unbounded, w) - run(unbounded, 1.0)).max() > 1e-2


@pytest.mark.parametrize("kind", ["ancestral", "ddim", "dpm_solver_pp_2m"])
def test_same_key_same_samples_and_thresholding_keeps_range(kind):
    def wild(z, logsnr, cond):  # predicts x far outside [-1, 1]
        return optimal_eps(z, logsnr, None) - 5.0

    config = SamplerConfig(kind=kind, num_steps=12, threshold="dynamic", eta=1.0)
    a = sample(wild, jax.random.key(7), (16, DIM), config=config)
    b = sample(wild, jax.random.key(7), (16, DIM), config=config)
    c = sample(wild, jax.random.key(8), (16, DIM), config=config)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a)).max() <= 1.0 + 1e-6
    if kind != "dpm_solver_pp_2m":  # deterministic from z_1 given the key; all differ with the key
        assert not np.allclose(np.asarray(a), np.asarray(c))
    static = sample(
        wild, jax.random.key(7), (16, DIM), config=SamplerConfig(kind=kind, num_steps=12, threshold="static")
    )
    assert np.abs(np.asarray(static)).max() <= 1.0


def shifted_model(z, logsnr, cond):
    return optimal_eps(z, logsnr, None) + cond["c"]


def test_second_call_with_same_shapes_does_not_recompile():
    config = SamplerConfig(kind="ancestral", num_steps=8)
    shape = (4, DIM)
    cond = lambda v: {"c": jnp.full((4, 1), v)}  # noqa: E731
    sample(
        shifted_model, jax.random.key(0), shape, config=config, cond=cond(0.1), uncond=cond(0.0), guidance_weight=2.0
    )
    before = _sample._cache_size()
    for seed, w, v in [(1, 5.0, 0.3), (2, 1.0, -0.2)]:
        sample(
            shifted_model, jax.random.key(seed), shape, config=config, cond=cond(v), uncond=cond(0.0), guidance_weight=w
        )
    # Parameters passed as leaves of a Partial are traced too: new values, same program.
    param_model = jax.tree_util.Partial(lambda p, z, l, c: optimal_eps(z, l, None) * p, jnp.float32(1.0))
    sample(param_model, jax.random.key(0), shape, config=config)
    after_first_param_call = _sample._cache_size()
    sample(jax.tree_util.Partial(param_model.func, jnp.float32(0.5)), jax.random.key(0), shape, config=config)
    assert before == after_first_param_call - 1
    assert _sample._cache_size() == after_first_param_call


def test_sampler_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown sampler kind 'ddpm'.*'ancestral'"):
        SamplerConfig(kind="ddpm")
    with pytest.raises(ValueError, match="unknown sampler threshold"):
        SamplerConfig(threshold="clip")
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        SamplerConfig(num_steps=0)
    with pytest.raises(ValueError, match="start_logsnr must be a finite log-SNR or None"):
        SamplerConfig(start_logsnr=float("-inf"))
    with pytest.raises(ValueError, match="guidance interval is empty.*swap them"):
        SamplerConfig(guidance_logsnr_min=2.0, guidance_logsnr_max=-6.0)
    with pytest.raises(ValueError, match="guidance_logsnr_max must be a finite log-SNR or None"):
        SamplerConfig(guidance_logsnr_max=float("nan"))
    assert SamplerConfig(guidance_logsnr_max=2).guidance_logsnr_max == 2.0  # an override "2" arrives as an int
