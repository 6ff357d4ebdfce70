"""Learning-rate schedule, the paper's optimizers and the EMA (SPEC 1)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from imagen_jax.train import (
    ema_decay_at,
    ema_update,
    learning_rate_schedule,
    make_optimizer,
)


def test_warmup_then_cosine():
    sched = learning_rate_schedule(peak_lr=1e-4, warmup_steps=10_000, total_steps=2_500_000)
    assert float(sched(0)) == 0.0
    assert float(sched(5_000)) == pytest.approx(5e-5)
    assert float(sched(10_000)) == pytest.approx(1e-4)
    mid = 10_000 + (2_500_000 - 10_000) // 2
    assert float(sched(mid)) == pytest.approx(5e-5, rel=1e-3)  # cosine: half way down at half the decay
    assert float(sched(2_500_000)) == pytest.approx(0.0, abs=1e-12)


def optimizer_config(name, **kw):
    return ml_collections.ConfigDict(dict(name=name, peak_lr=1e-3, warmup_steps=2, total_steps=10, **kw))


def test_adam_matches_optax_with_the_paper_hyperparameters():
    opt, _ = make_optimizer(optimizer_config("adam"))
    params = {"w": jnp.ones((3,))}
    grads = {"w": jnp.asarray([0.1, -0.2, 0.3])}
    ref = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 2, 10, 0.0), b1=0.9, b2=0.999, eps=1e-8)
    s, r = opt.init(params), ref.init(params)
    for _ in range(4):
        u, s = opt.update(grads, s, params)
        v, r = ref.update(grads, r, params)
        np.testing.assert_allclose(np.asarray(u["w"]), np.asarray(v["w"]), rtol=1e-6)


def test_adafactor_and_clipping():
    opt, _ = make_optimizer(optimizer_config("adafactor", grad_clip_norm=1.0))
    params = {"w": jnp.ones((4, 4))}
    state = opt.init(params)
    u, _ = opt.update({"w": jnp.full((4, 4), 1e6)}, state, params)
    assert np.all(np.isfinite(np.asarray(u["w"])))
    with pytest.raises(ValueError, match="optimizer.name"):
        make_optimizer(optimizer_config("sgd"))


def test_ema():
    ema = {"w": jnp.zeros((2,))}
    params = {"w": jnp.ones((2,))}
    out = ema_update(ema, params, 0.9)
    np.testing.assert_allclose(np.asarray(out["w"]), 0.1)
    assert float(ema_decay_at(0, 0.9999)) == pytest.approx(0.1)
    assert float(ema_decay_at(10**7, 0.9999)) == pytest.approx(0.9999)
    assert float(ema_decay_at(0, 0.9999, warmup=False)) == pytest.approx(0.9999)
    jax.jit(ema_update)(ema, params, 0.5)
