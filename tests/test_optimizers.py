"""Learning-rate schedule, the paper's optimizers and the EMA (design.md §1)."""

import os

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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_warmup_then_cosine():
    sched = learning_rate_schedule(peak_lr=1e-4, warmup_steps=10_000, total_steps=2_500_000)
    assert float(sched(0)) == 0.0
    assert float(sched(5_000)) == pytest.approx(5e-5)
    assert float(sched(10_000)) == pytest.approx(1e-4)
    mid = 10_000 + (2_500_000 - 10_000) // 2
    assert float(sched(mid)) == pytest.approx(5e-5, rel=1e-3)  # cosine: half way down at half the decay
    assert float(sched(2_500_000)) == pytest.approx(0.0, abs=1e-12)


def optimizer_config(name, **kw):
    return ml_collections.ConfigDict(dict(name=name, peak_lr=1e-3, warmup_steps=2, **kw))


def test_adam_matches_optax_with_the_paper_hyperparameters():
    opt, _ = make_optimizer(optimizer_config("adam"), 10)
    params = {"w": jnp.ones((3,))}
    grads = {"w": jnp.asarray([0.1, -0.2, 0.3])}
    ref = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 2, 10, 0.0), b1=0.9, b2=0.999, eps=1e-8)
    s, r = opt.init(params), ref.init(params)
    for _ in range(4):
        u, s = opt.update(grads, s, params)
        v, r = ref.update(grads, r, params)
        np.testing.assert_allclose(np.asarray(u["w"]), np.asarray(v["w"]), rtol=1e-6)


def test_adafactor_and_clipping():
    opt, _ = make_optimizer(optimizer_config("adafactor", grad_clip_norm=1.0), 10)
    params = {"w": jnp.ones((4, 4))}
    state = opt.init(params)
    u, _ = opt.update({"w": jnp.full((4, 4), 1e6)}, state, params)
    assert np.all(np.isfinite(np.asarray(u["w"])))
    with pytest.raises(ValueError, match="optimizer.name"):
        make_optimizer(optimizer_config("sgd"), 10)


def test_ema():
    ema = {"w": jnp.zeros((2,))}
    params = {"w": jnp.ones((2,))}
    out = ema_update(ema, params, 0.9)
    np.testing.assert_allclose(np.asarray(out["w"]), 0.1)
    assert float(ema_decay_at(0, 0.9999)) == pytest.approx(0.1)
    assert float(ema_decay_at(10**7, 0.9999)) == pytest.approx(0.9999)
    assert float(ema_decay_at(0, 0.9999, warmup=False)) == pytest.approx(0.9999)
    jax.jit(ema_update)(ema, params, 0.5)


def test_the_lr_horizon_is_the_runs_length_and_older_workdirs_still_load():
    """--config.train.steps=500 decays over 500 steps (no second setting to forget); a
    config.json from before carries optimizer.total_steps, which the reader drops when equal."""
    from imagen_jax.config import apply_overrides, config_diff, load_config, to_dict, upgrade_saved_config

    config = apply_overrides(load_config(os.path.join(REPO, "configs", "shapes_base32.py")), ["train.steps=500"])
    assert "total_steps" not in config.optimizer
    _, schedule = make_optimizer(config.optimizer, config.train.steps)
    assert float(schedule(config.optimizer.warmup_steps)) == pytest.approx(config.optimizer.peak_lr)
    assert float(schedule(250 + config.optimizer.warmup_steps // 2)) < config.optimizer.peak_lr
    assert float(schedule(500)) == pytest.approx(config.optimizer.end_lr, abs=1e-12)
    older = to_dict(config)
    older["optimizer"]["total_steps"] = 500
    assert config_diff(upgrade_saved_config(older), to_dict(config)) == []
    older["optimizer"]["total_steps"] = 3000  # that run decayed over another horizon: a real difference
    assert config_diff(upgrade_saved_config(older), to_dict(config)) == ["optimizer.total_steps: 3000 -> '<absent>'"]
