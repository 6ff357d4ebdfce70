"""The pure train step: sharded equals single-device, text dropout, SR augmentation, NaN skip."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from imagen_jax.models import build_model, dummy_inputs
from imagen_jax.parallel import DEFAULT_RULES, batch_sharding, make_mesh
from imagen_jax.train import make_optimizer
from imagen_jax.train.state import create_sharded_state
from imagen_jax.train.step import make_train_step

TEXT_LEN, TEXT_DIM = 8, 16


def tiny_config(stage="base", optimizer="adam", accum=1):
    config = ml_collections.ConfigDict()
    config.resolution = 16
    config.low_res_resolution = 0 if stage == "base" else 8
    config.model = ml_collections.ConfigDict(
        dict(
            family="unet" if stage == "base" else "efficient_unet",
            text_dim=TEXT_DIM,
        )
    )
    if stage == "base":
        config.model.update(
            dict(
                channels=16,
                channel_mult=(1, 2),
                num_res_blocks=1,
                attention_resolutions=(8,),
                head_dim=16,
                embed_dim=32,
                noise_sinusoid_dim=16,
                text_pool_heads=2,
                norm_groups=4,
            )
        )
    else:
        config.model.update(
            dict(
                channels=(16, 32),
                num_res_blocks=(1, 1),
                strides=(2, 2),
                attention=("none", "self"),
                num_heads=2,
                embed_dim=32,
                noise_sinusoid_dim=16,
                text_pool_heads=2,
                norm_groups=4,
            )
        )
    config.diffusion = ml_collections.ConfigDict(
        dict(schedule=dict(kind="cosine"), prediction="eps", aug_schedule=dict(kind="cosine"))
    )
    config.train = ml_collections.ConfigDict(dict(text_drop_prob=0.1, ema_decay=0.999, grad_accum_steps=accum))
    config.optimizer = ml_collections.ConfigDict(dict(name=optimizer, peak_lr=1e-3, warmup_steps=2, grad_clip_norm=1.0))
    return config


def make_batch(config, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    res = config.resolution
    out = {
        "image": rng.uniform(-1, 1, (batch, res, res, 3)).astype(np.float32),
        "text_embedding": rng.normal(size=(batch, TEXT_LEN, TEXT_DIM)).astype(np.float32),
        "text_mask": np.arange(TEXT_LEN)[None, :] < rng.integers(1, TEXT_LEN + 1, (batch, 1)),
    }
    if config.low_res_resolution:
        low = config.low_res_resolution
        out["low_res"] = rng.uniform(-1, 1, (batch, low, low, 3)).astype(np.float32)
    return out


def setup(config, mesh):
    model = build_model(config)
    optimizer, schedule = make_optimizer(config.optimizer, 10)
    inputs = dummy_inputs(config, batch=1, text_length=TEXT_LEN)
    init_fn = lambda rng: model.init(rng, **inputs)["params"]  # noqa: E731
    state, shardings = create_sharded_state(init_fn, optimizer, jax.random.key(0), mesh, DEFAULT_RULES)
    step = make_train_step(model, optimizer, schedule, config)
    return state, shardings, step


def run_steps(config, mesh, n=2):
    state, shardings, step = setup(config, mesh)
    batch = make_batch(config)
    batch = {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
    jitted = jax.jit(step, in_shardings=(shardings, None, None), out_shardings=(shardings, None), donate_argnums=0)
    for _ in range(n):
        state, metrics = jitted(state, batch, jax.random.key(42))
    return state, metrics, shardings


def test_sharded_step_equals_single_device_step():
    config = tiny_config("base", "adafactor")
    sharded, m_sharded, shardings = run_steps(config, make_mesh(data=2, fsdp=4))
    single, m_single, _ = run_steps(config, make_mesh(data=1, fsdp=1, devices=jax.devices()[:1]))
    # Parameters really are sharded over fsdp somewhere.
    specs = [s.spec for s in jax.tree_util.tree_leaves(shardings.params)]
    assert any("fsdp" in str(spec) for spec in specs)
    assert float(m_sharded["loss"]) == pytest.approx(float(m_single["loss"]), rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(sharded.params), jax.tree_util.tree_leaves(single.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
    assert int(sharded.step) == 2


def test_nonfinite_loss_skips_the_update_and_counts():
    config = tiny_config("sr", "adam")  # also runs the SR noise-augmentation path
    mesh = make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
    state, shardings, step = setup(config, mesh)
    batch = make_batch(config)
    bad = dict(batch, image=np.full_like(batch["image"], np.nan))
    jitted = jax.jit(step)
    new_state, metrics = jitted(state, bad, jax.random.key(0))
    assert not np.isfinite(float(metrics["loss"]))
    assert int(new_state.nonfinite_streak) == 1 and int(new_state.nonfinite_total) == 1
    for a, b in zip(jax.tree_util.tree_leaves(new_state.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    good_state, _ = jitted(new_state, batch, jax.random.key(0))
    assert int(good_state.nonfinite_streak) == 0 and int(good_state.nonfinite_total) == 1


def test_gradient_accumulation_is_the_mean_over_micro_batches():
    mesh = make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
    state, _, step1 = setup(tiny_config(accum=1), mesh)
    _, _, step2 = setup(tiny_config(accum=2), mesh)
    batch = {k: jnp.asarray(v) for k, v in make_batch(tiny_config()).items()}
    key = jax.random.key(3)
    loss, grads = jax.jit(step2.loss_and_grads)(state.params, batch, key)
    halves = [jax.tree_util.tree_map(lambda x: x[i::2], batch) for i in range(2)]  # strided micro-batches
    parts = [jax.jit(step1.loss_and_grads)(state.params, h, jax.random.fold_in(key, i)) for i, h in enumerate(halves)]
    assert float(loss) == pytest.approx((float(parts[0][0]) + float(parts[1][0])) / 2, rel=1e-5)
    for g, a, b in zip(*(jax.tree_util.tree_leaves(t) for t in (grads, parts[0][1], parts[1][1]))):
        np.testing.assert_allclose(np.asarray(g), (np.asarray(a) + np.asarray(b)) / 2, rtol=1e-4, atol=1e-7)


def tiny_t5(seed=0):
    """A 2-layer T5 (gated GELU, v1.1 layout) whose output width is the tiny UNet's text_dim."""
    from imagen_jax.text import T5EncoderConfig, init_params

    t5 = T5EncoderConfig(
        vocab_size=64, d_model=TEXT_DIM, d_kv=4, d_ff=32, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu"
    )
    return t5, init_params(t5, seed)


def test_tokens_mode_equals_cache_mode():
    """data.text='tokens': the step encodes the token ids with the frozen, FSDP-sharded T5 (in
    each of 2 micro-batches) and gives the loss and gradients (so the update) of the
    cache-mode step fed the same T5's embeddings."""
    from imagen_jax.parallel import logical_shardings
    from imagen_jax.text import encode_tokens
    from imagen_jax.text.t5 import abstract_params
    from imagen_jax.train.step_text import StepTextEncoder

    mesh = make_mesh(data=2, fsdp=4)
    t5_config, t5_params = tiny_t5()
    t5_params = jax.device_put(t5_params, logical_shardings(abstract_params(t5_config), mesh, DEFAULT_RULES))
    assert any("fsdp" in str(x.sharding.spec) for x in jax.tree_util.tree_leaves(t5_params))
    text = StepTextEncoder(t5_config, jnp.float32, t5_params)

    config = tiny_config(accum=2)
    state, shardings, cache_step = setup(config, mesh)
    token_config = config.copy_and_resolve_references()
    token_config.data = ml_collections.ConfigDict(dict(text="tokens"))
    model = build_model(config)
    optimizer, schedule = make_optimizer(config.optimizer, 10)
    token_step = make_train_step(model, optimizer, schedule, token_config, text)

    rng = np.random.default_rng(5)
    batch = make_batch(config)
    tokens = rng.integers(3, 64, (8, TEXT_LEN)).astype(np.int32)
    embedding = jax.jit(lambda p, i, m: encode_tokens(p, i, m, config=t5_config))(t5_params, tokens, batch["text_mask"])
    cache_batch = dict(batch, text_embedding=np.asarray(embedding))
    token_batch = {k: v for k, v in batch.items() if k != "text_embedding"} | {"text_tokens": tokens}
    put = lambda b: {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in b.items()}  # noqa: E731
    key = jax.random.key(7)

    loss_c, grads_c = jax.jit(cache_step.loss_and_grads)(state.params, put(cache_batch), key)
    loss_t, grads_t = jax.jit(token_step.loss_and_grads)(state.params, put(token_batch), key, t5_params)
    assert float(loss_t) == pytest.approx(float(loss_c), rel=1e-5)
    assert jax.tree_util.tree_structure(grads_t) == jax.tree_util.tree_structure(state.params)  # T5 is not trained
    for a, b in zip(jax.tree_util.tree_leaves(grads_t), jax.tree_util.tree_leaves(grads_c)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_tokens_batch_without_text_encoder_is_refused():
    config = tiny_config()
    model = build_model(config)
    optimizer, schedule = make_optimizer(config.optimizer, 10)
    step = make_train_step(model, optimizer, schedule, config)
    state, _, _ = setup(config, make_mesh(data=1, fsdp=1, devices=jax.devices()[:1]))
    batch = {k: v for k, v in make_batch(config).items() if k != "text_embedding"}
    batch["text_tokens"] = np.zeros((8, TEXT_LEN), np.int32)
    with pytest.raises(ValueError, match="text_encoder"):
        step(state, batch, jax.random.key(0))
