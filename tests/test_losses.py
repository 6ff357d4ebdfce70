"""The training loss: targets, min-SNR weights, per-example weights (design.md §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import (
    Schedule,
    alpha_sigma,
    diffusion_loss,
    min_snr_weight,
    per_example_loss,
)

RNG = np.random.default_rng(0)


def test_per_example_loss_matches_numpy():
    x = RNG.normal(size=(3, 4, 4, 3)).astype(np.float32)
    eps = RNG.normal(size=x.shape).astype(np.float32)
    out = RNG.normal(size=x.shape).astype(np.float32)
    lam = np.array([-3.0, 0.0, 4.0], np.float32)
    ab = 1 / (1 + np.exp(-lam.astype(np.float64)))[:, None, None, None]
    targets = {"eps": eps, "x": x, "v": np.sqrt(ab) * eps - np.sqrt(1 - ab) * x}
    for pred, target in targets.items():
        got = per_example_loss(jnp.asarray(out), jnp.asarray(x), jnp.asarray(eps), jnp.asarray(lam), prediction=pred)
        np.testing.assert_allclose(np.asarray(got), ((out - target) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)


def test_min_snr_weights():
    lam = jnp.asarray([-4.0, 0.0, np.log(5.0), 4.0])
    snr = np.exp(np.asarray(lam, np.float64))
    g = 5.0
    np.testing.assert_allclose(np.asarray(min_snr_weight(lam, "eps", g)), np.minimum(snr, g) / snr, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(min_snr_weight(lam, "x", g)), np.minimum(snr, g), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(min_snr_weight(lam, "v", g)), np.minimum(snr, g) / (snr + 1), rtol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "x", "v"])
@pytest.mark.parametrize("gamma,floor", [(None, 1.0), (5.0, 0.1), (5.0, None)])
def test_weighted_loss_is_the_x_space_error_times_clipped_snr(prediction, gamma, floor):
    """Whatever the target, the weighted loss is clip(SNR, floor, gamma) * ||x_hat - x||^2
    (x_hat recovered from the output in float64): min-SNR caps the clean end, the floor
    lifts the noisy end (truncated SNR, Salimans & Ho 2022)."""
    x = RNG.uniform(-1, 1, size=(5, 4, 4, 3))
    eps = RNG.normal(size=x.shape)
    lam = np.array([-7.0, -2.5, 0.0, 2.0, 6.0])
    alpha, sigma = [np.sqrt(1 / (1 + np.exp(-s * lam)))[:, None, None, None] for s in (1, -1)]
    z = alpha * x + sigma * eps
    out = RNG.normal(size=x.shape)
    x_hat = {"eps": (z - sigma * out) / alpha, "x": out, "v": alpha * z - sigma * out}[prediction]
    snr = np.exp(lam)
    weight = np.clip(snr, floor if floor is not None else 0.0, gamma if gamma is not None else np.inf)
    want = weight * ((x_hat - x) ** 2).mean(axis=(1, 2, 3))
    got = per_example_loss(
        *(jnp.asarray(a, jnp.float32) for a in (out, x, eps, lam)),
        prediction=prediction,
        min_snr_gamma=gamma,
        snr_floor=floor,
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4)


@pytest.mark.parametrize("prediction", ["eps", "x", "v"])
def test_oracle_model_has_zero_loss_and_zero_model_does_not(prediction):
    x = jnp.asarray(RNG.uniform(-1, 1, size=(16, 8, 8, 3)), jnp.float32)

    def oracle(z, logsnr, cond):  # knows x, so it can read eps off z exactly
        a, s = alpha_sigma(logsnr[:, None, None, None])
        eps = (z - a * cond) / s
        return {"eps": eps, "x": cond, "v": a * eps - s * cond}[prediction]

    with jax.enable_x64(True):
        loss, aux = diffusion_loss(
            oracle,
            x.astype(jnp.float64),
            x.astype(jnp.float64),
            jax.random.key(0),
            schedule=Schedule("cosine"),
            prediction=prediction,
        )
    assert float(loss) < 1e-12
    loss0, aux0 = diffusion_loss(
        lambda z, l, c: jnp.zeros_like(z),
        x,
        None,
        jax.random.key(0),
        schedule=Schedule("cosine"),
        prediction=prediction,
    )
    assert float(loss0) > 0.05
    assert aux0["loss"].shape == (16,) and aux0["logsnr"].shape == (16,)


def test_example_weights_and_determinism():
    x = jnp.asarray(RNG.uniform(-1, 1, size=(8, 4, 4, 3)), jnp.float32)
    zero = lambda z, l, c: jnp.zeros_like(z)  # noqa: E731
    sched = Schedule("cosine")
    loss, aux = diffusion_loss(zero, x, None, jax.random.key(3), schedule=sched)
    loss_again, _ = diffusion_loss(zero, x, None, jax.random.key(3), schedule=sched)
    assert float(loss) == float(loss_again)
    w = jnp.asarray([1, 1, 0, 0, 2, 0, 1, 0], jnp.float32)
    wloss, waux = diffusion_loss(zero, x, None, jax.random.key(3), schedule=sched, weights=w)
    per = np.asarray(waux["loss"])
    assert float(wloss) == pytest.approx(float((per * np.asarray(w)).sum() / 5.0), rel=1e-6)
    # min-SNR on an eps model: per-example losses scaled by min(snr, g) / snr.
    mloss, maux = diffusion_loss(zero, x, None, jax.random.key(3), schedule=sched, min_snr_gamma=5.0)
    snr = np.exp(np.asarray(aux["logsnr"], np.float64))
    np.testing.assert_allclose(np.asarray(maux["loss"]), np.asarray(aux["loss"]) * np.minimum(snr, 5) / snr, rtol=1e-4)


@pytest.mark.parametrize(
    "offset, profile, logsnr_max",
    [(None, "constant", None), (0.3, "constant", None), (0.3, "sigma2", None), (0.3, "sigma2", -2.0)],
)
def test_offset_noise_adds_one_value_per_image_and_channel_and_is_the_target(offset, profile, logsnr_max):
    """diffusion.offset_noise s: eps = n + s_t m with m one N(0, 1) value per image and channel, so
    an image's channel mean of eps has mean square s_t^2 + 1 / (H W), s_t = s or s sigma_t^2
    (0 above offset_logsnr_max); the eps target is that noise (an oracle reading eps off
    z_t = sigma eps, x = 0, has zero loss)."""
    x = jnp.zeros((4096, 8, 8, 3), jnp.float32)
    seen = {}

    def oracle(z, logsnr, cond):
        seen["eps"] = z / alpha_sigma(logsnr[:, None, None, None])[1]
        return seen["eps"]

    loss, aux = diffusion_loss(
        oracle,
        x,
        None,
        jax.random.key(1),
        schedule=Schedule("cosine"),
        offset_noise=offset,
        offset_profile=profile,
        offset_logsnr_max=logsnr_max,
    )
    assert float(loss) < 1e-8
    logsnr = np.asarray(aux["logsnr"], np.float64)
    s_t = (offset or 0.0) * (1 / (1 + np.exp(logsnr)) if profile == "sigma2" else 1.0)
    if logsnr_max is not None:
        s_t = np.where(logsnr <= logsnr_max, s_t, 0.0)
        above = logsnr > logsnr_max  # there eps is plain N(0, I): channel means have variance 1 / (H W)
        assert np.mean(np.asarray(seen["eps"]).mean(axis=(1, 2))[above] ** 2) == pytest.approx(1 / 64, rel=0.1)
    channel_means = np.asarray(seen["eps"]).mean(axis=(1, 2))  # [B, C]
    assert np.mean(channel_means**2) == pytest.approx(np.mean(s_t**2) + 1 / 64, rel=0.08)
    spread_within = np.asarray(seen["eps"] - seen["eps"].mean(axis=(1, 2), keepdims=True)).var()
    assert spread_within == pytest.approx(1 - 1 / 64, rel=0.02)
    if offset:
        with pytest.raises(ValueError, match="offset_profile must be"):
            diffusion_loss(
                oracle, x, None, jax.random.key(1), schedule=Schedule("cosine"), offset_noise=0.3, offset_profile="flat"
            )
