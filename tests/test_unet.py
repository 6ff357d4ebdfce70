"""The Imagen UNets at tiny size: shapes, text masking, unconditional text, SR conditioning,
gradients, determinism, logical axes, config errors; paper preset sizes by jax.eval_shape."""

import functools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from imagen_jax.commands.params import PAPER_PARAMS
from imagen_jax.config import load_config
from imagen_jax.diffusion import Schedule, diffusion_loss
from imagen_jax.models import build_model, count_params
from imagen_jax.models.builder import abstract_params, dummy_inputs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
TEXT_DIM, TEXT_LEN, BATCH = 12, 6, 2

COMMON = dict(text_dim=TEXT_DIM, embed_dim=32, noise_sinusoid_dim=16, text_pool_heads=2, norm_groups=4, out_channels=3)
TINY = {
    "unet": dict(
        resolution=16,
        model=dict(
            family="unet",
            channels=16,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_resolutions=(8,),
            head_dim=8,
            num_heads=None,
            text_context_dim=8,
            **COMMON,
        ),
    ),
    "unet_patch": dict(  # model.patch_size 2: the UNet runs on 2 x 2 pixel blocks (8 x 8 of them)
        resolution=16,
        model=dict(
            family="unet",
            channels=16,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_resolutions=(4,),
            head_dim=8,
            num_heads=None,
            patch_size=2,
            **COMMON,
        ),
    ),
    "efficient_self": dict(
        resolution=16,
        low_res_resolution=8,
        model=dict(
            family="efficient_unet",
            channels=(8, 16),
            num_res_blocks=(1, 2),
            strides=(2, 2),
            attention=("none", "self"),
            num_heads=2,
            **COMMON,
        ),
    ),
    "efficient_cross": dict(
        resolution=16,
        low_res_resolution=8,
        model=dict(
            family="efficient_unet",
            channels=(8, 16),
            num_res_blocks=(1, 1),
            strides=(2, 1),
            attention=("none", "cross"),
            attention_every_block=True,
            num_heads=2,
            text_context_dim=8,
            **COMMON,
        ),
    ),
}


def tiny_config(name, **model_overrides):
    config = ml_collections.ConfigDict(TINY[name])
    config.model.update(model_overrides)
    return config


def random_params(config, seed=0):
    """Random parameters of the model's shapes (numpy, nothing to compile), so that the
    zero-initialised output layers do not hide bugs: kernels N(0, 1/fan_in), norm scales
    near 1, biases and the rest small."""
    boxed = abstract_params(build_model(config), config)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        shape = leaf.shape
        if name == "scale":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) >= 2 and name != "null_kv":
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            value = 0.1 * rng.standard_normal(shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(boxed))


@functools.lru_cache(maxsize=None)
def setup(name):
    """(config, model, random params, jitted apply) of a tiny model."""
    config = tiny_config(name)
    model = build_model(config)
    return config, model, random_params(config), jax.jit(lambda p, inputs: model.apply({"params": p}, **inputs))


@functools.lru_cache(maxsize=None)
def jitted_init(name):
    config, model, _, _ = setup(name)
    init = jax.jit(model.init)
    return lambda key: nn.meta.unbox(init(key, **dummy_inputs(config))["params"])


def make_inputs(config, key, *, valid=(4, 2), length=TEXT_LEN):
    """Random inputs; example b has valid[b] real text tokens and random garbage after them."""
    keys = jax.random.split(key, 5)
    res = config.resolution
    mask = jnp.arange(length)[None, :] < jnp.asarray(valid)[:, None]
    inputs = dict(
        z=jax.random.normal(keys[0], (BATCH, res, res, 3)),
        logsnr=jnp.array([-3.0, 5.0]),
        text_embedding=jax.random.normal(keys[1], (BATCH, length, TEXT_DIM)),
        text_mask=mask,
    )
    if config.get("low_res_resolution"):
        low = config.low_res_resolution
        inputs["low_res"] = jnp.tanh(jax.random.normal(keys[2], (BATCH, low, low, 3)))
        inputs["aug_logsnr"] = jnp.array([2.0, 10.0])
    return inputs


FAMILIES = sorted(TINY)


@pytest.mark.parametrize("name", FAMILIES)
def test_output_shape_and_dtype(name):
    config, _, params, apply = setup(name)
    out = apply(params, make_inputs(config, jax.random.key(2)))
    assert out.shape == (BATCH, config.resolution, config.resolution, 3)
    assert out.dtype == jnp.float32
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("name", FAMILIES)
def test_padded_text_tokens_do_not_change_output(name):
    config, _, params, apply = setup(name)
    inputs = make_inputs(config, jax.random.key(3))
    garbage = jax.random.normal(jax.random.key(4), inputs["text_embedding"].shape) * 10.0
    other = dict(inputs, text_embedding=jnp.where(inputs["text_mask"][..., None], inputs["text_embedding"], garbage))
    out, out_other = apply(params, inputs), apply(params, other)
    np.testing.assert_allclose(out, out_other, rtol=1e-5, atol=1e-5)
    # Dropping the padding altogether (a shorter sequence) gives the same output too.
    short = dict(inputs, text_embedding=inputs["text_embedding"][:, :4], text_mask=inputs["text_mask"][:, :4])
    np.testing.assert_allclose(out, apply(params, short), rtol=1e-5, atol=1e-5)
    # ...while a change in a real token does change it (the test is not vacuous).
    change = jax.random.normal(jax.random.key(12), (BATCH, TEXT_DIM))  # not a constant: LayerNorm removes those
    changed = dict(inputs, text_embedding=inputs["text_embedding"].at[:, 0].add(change))
    assert np.max(np.abs(apply(params, changed) - out)) > 1e-3


@pytest.mark.parametrize("name", FAMILIES)
def test_zero_text_unconditional(name):
    config, _, params, apply = setup(name)
    inputs = make_inputs(config, jax.random.key(5))
    zero_text = jnp.zeros_like(inputs["text_embedding"])
    with_mask = apply(params, dict(inputs, text_embedding=zero_text))
    all_false = apply(params, dict(inputs, text_embedding=zero_text, text_mask=jnp.zeros_like(inputs["text_mask"])))
    conditional = apply(params, inputs)
    assert np.all(np.isfinite(with_mask)) and np.all(np.isfinite(all_false))
    assert np.max(np.abs(all_false - conditional)) > 1e-3


@pytest.mark.parametrize("name", ["efficient_self", "efficient_cross"])
def test_sr_output_depends_on_low_res_and_aug_level(name):
    config, _, params, apply = setup(name)
    inputs = make_inputs(config, jax.random.key(6))
    out = apply(params, inputs)
    other_low_res = apply(params, dict(inputs, low_res=-inputs["low_res"]))
    other_aug = apply(params, dict(inputs, aug_logsnr=inputs["aug_logsnr"] - 6.0))
    assert np.max(np.abs(other_low_res - out)) > 1e-3
    assert np.max(np.abs(other_aug - out)) > 1e-3


@pytest.mark.parametrize("name", ["unet", "efficient_cross"])  # between them, every layer kind
def test_diffusion_loss_gradients_finite_and_nonzero(name):
    """The model as the diffusion core's model_fn(z, logsnr, cond): the eps-MSE loss and its
    gradient with respect to every parameter are finite, and (nearly) all are nonzero."""
    config, model, params, _ = setup(name)
    inputs = make_inputs(config, jax.random.key(7))
    x = jnp.tanh(inputs.pop("z"))
    del inputs["logsnr"]

    def loss(p):
        model_fn = lambda z, logsnr, cond: model.apply({"params": p}, z, logsnr, **cond, train=True)  # noqa: E731
        return diffusion_loss(model_fn, x, inputs, jax.random.key(8), schedule=Schedule("cosine"))[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert np.isfinite(value) and value > 0
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) > 0 for g in leaves) > 0.9 * len(leaves)


def test_unperturbed_init_predicts_zero():
    """ADM's zero-initialised output conv: a fresh model predicts 0 (eps-prediction's mean)."""
    config, _, _, apply = setup("unet")
    out = apply(jitted_init("unet")(jax.random.key(0)), make_inputs(config, jax.random.key(8)))
    np.testing.assert_array_equal(out, 0.0)


def test_low_res_skip_starts_as_the_upsampling():
    """model.low_res_skip: a fresh SR model (zero-initialised conv_out) predicts exactly the
    upsampled low-res input, so an x-predicting stage starts from the upsampling; the skip
    is trained like every other parameter; a base model refuses the option."""
    from imagen_jax.models.conditioning import upsample_low_res

    config = tiny_config("efficient_self", low_res_skip=True, low_res_resize="bicubic")
    model = build_model(config)
    inputs = make_inputs(config, jax.random.key(12))
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), **dummy_inputs(config))["params"])
    out = jax.jit(lambda p, x: model.apply({"params": p}, **x))(params, inputs)
    expected = upsample_low_res(inputs["low_res"], 16, 16, "bicubic")
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert params["low_res_skip"]["kernel"].shape == (1, 1, 3, 3)
    grads = jax.grad(lambda p: jnp.mean(model.apply({"params": p}, **inputs) ** 2))(params)
    assert float(jnp.sum(jnp.abs(grads["low_res_skip"]["kernel"]))) > 0
    with pytest.raises(ValueError, match="low_res_conditioning"):
        build_model(
            dict(
                TINY["efficient_self"],
                low_res_resolution=0,
                model=dict(TINY["efficient_self"]["model"], low_res_skip=True),
            )
        ).init(jax.random.key(0), inputs["z"], inputs["logsnr"], inputs["text_embedding"], inputs["text_mask"])


def test_space_to_depth_layout_and_inverse():
    """Each 2 x 2 patch becomes one position's 12 channels (row-major within the patch, then
    RGB), and depth_to_space undoes it exactly."""
    from imagen_jax.models.layers import depth_to_space, space_to_depth

    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    blocks = np.asarray(space_to_depth(jnp.asarray(x), 2))
    assert blocks.shape == (2, 2, 3, 12)
    for i, j, a, b in [(0, 0, 0, 0), (1, 2, 1, 0), (0, 1, 1, 1), (1, 1, 0, 1)]:
        np.testing.assert_array_equal(
            blocks[:, i, j, (2 * a + b) * 3 : (2 * a + b + 1) * 3], x[:, 2 * i + a, 2 * j + b]
        )
    np.testing.assert_array_equal(np.asarray(depth_to_space(jnp.asarray(blocks), 2)), x)
    np.testing.assert_array_equal(np.asarray(space_to_depth(jnp.asarray(x), 1)), x)


def test_patch_size_must_divide_the_image():
    config, model, params, _ = setup("unet_patch")
    inputs = make_inputs(config, jax.random.key(13))
    model.apply({"params": params}, **dict(inputs, z=jnp.zeros((BATCH, 12, 12, 3))))  # 12 = 2 (patch) * 2 (levels) * 3
    with pytest.raises(ValueError, match="patch_size"):
        model.apply({"params": params}, **dict(inputs, z=jnp.zeros((BATCH, 10, 10, 3))))


def test_determinism():
    config, _, params, apply = setup("unet")
    inputs = make_inputs(config, jax.random.key(9))
    np.testing.assert_array_equal(apply(params, inputs), apply(params, inputs))
    init = jitted_init("unet")
    a, b, c = init(jax.random.key(0)), init(jax.random.key(0)), init(jax.random.key(1))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a["conv_in"]["kernel"], c["conv_in"]["kernel"])


def test_bfloat16_compute_and_remat_match_float32():
    """bf16 compute with fp32 params stays close to fp32; remat changes nothing in the result."""
    config, _, params, apply = setup("unet")
    inputs = make_inputs(config, jax.random.key(10))
    reference = apply(params, inputs)
    variant = build_model(tiny_config("unet", dtype="bfloat16", param_dtype="float32", remat=True))
    out = jax.jit(lambda p, x: variant.apply({"params": p}, **x))(params, inputs)
    assert out.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(reference)))
    assert float(jnp.max(jnp.abs(out - reference))) < 0.1 * scale


def test_every_parameter_has_logical_axes():
    config = tiny_config("efficient_cross")
    boxed = abstract_params(build_model(config), config)
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    assert all(len(x.names) == x.value.ndim for x in leaves)
    specs = nn.get_partition_spec(boxed)
    assert specs["down_1_block_0"]["conv_in"]["kernel"] == jax.sharding.PartitionSpec(None, None, "conv_in", "conv_out")


def test_config_errors_name_the_fix():
    config, model, params, _ = setup("efficient_self")
    inputs = make_inputs(config, jax.random.key(11))
    with pytest.raises(ValueError, match="low_res"):
        model.apply({"params": params}, **{k: v for k, v in inputs.items() if k != "low_res"})
    with pytest.raises(ValueError, match="text_dim"):
        model.apply({"params": params}, **dict(inputs, text_embedding=inputs["text_embedding"][..., :5]))
    with pytest.raises(ValueError, match="unknown model config field"):
        build_model(dict(model=dict(family="unet", chanels=16)))
    with pytest.raises(ValueError, match="model.family"):
        build_model(dict(model=dict(family="transformer")))
    with pytest.raises(ValueError, match="low_res_resolution > 0"):
        build_model(dict(model=dict(family="unet", low_res_conditioning=True)))


@pytest.mark.parametrize("preset", sorted(PAPER_PARAMS))
def test_paper_preset_parameter_count_within_10_percent(preset):
    config = load_config(CONFIG_DIR / f"{preset}.py")
    count = count_params(config)  # jax.eval_shape: no parameter memory
    assert abs(count / PAPER_PARAMS[preset] - 1.0) < 0.10, f"{preset}: {count:,} vs {PAPER_PARAMS[preset]:,.0f}"


@pytest.mark.parametrize("preset", ["shapes_base32", "shapes_sr64"])
def test_small_presets_build(preset):
    config = load_config(CONFIG_DIR / f"{preset}.py")
    assert 1e6 < count_params(config) < 4e6


def test_sharded_apply_matches_single_device():
    """Under a (data, fsdp) mesh with the training's logical rules, parameters sharded by their
    logical axes and the batch split over all 8 devices, the output matches the unsharded one."""
    from imagen_jax.parallel import DEFAULT_RULES, activation_sharding, logical_shardings

    config, model, params, apply = setup("efficient_self")
    inputs = jax.tree_util.tree_map(lambda x: jnp.concatenate([x] * 4), make_inputs(config, jax.random.key(13)))
    expected = apply(params, inputs)
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    param_shardings = logical_shardings(abstract_params(model, config), mesh, DEFAULT_RULES)
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    sharded_params = jax.device_put(params, param_shardings)
    sharded_inputs = jax.device_put(inputs, batch_sharding)
    assert any(s.spec != jax.sharding.PartitionSpec() for s in jax.tree_util.tree_leaves(param_shardings))
    with activation_sharding(mesh, DEFAULT_RULES):
        out = jax.jit(lambda p, x: model.apply({"params": p}, **x))(sharded_params, sharded_inputs)
    assert out.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_params_command_prints_table(capsys):
    from imagen_jax.cli import main

    assert (
        main(
            ["params", "--config", str(CONFIG_DIR / "shapes_base32.py"), "--config", str(CONFIG_DIR / "sr256_600m.py")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "shapes_base32" in out and "sr256_600m" in out and "600M" in out
