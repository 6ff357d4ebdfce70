"""benchmarks/compare_imagen_pytorch.py: the UNet it matches to imagen-pytorch is the one it
claims (widths, attention levels, parameter count), and a missing peer is one clear error."""

import sys
from pathlib import Path

import flax.linen as nn
import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_imagen_pytorch as compare

from imagen_jax.models import build_model
from imagen_jax.models.builder import abstract_params

# The figure benchmarks/README.md quotes for the default comparison (32 px, dim 64, mults 1,2,4).
DEFAULT_MATCHED_PARAMS = 17_163_843


def test_matched_unet_is_built_as_claimed():
    arch = compare.Architecture(
        image_size=16,
        dim=32,
        dim_mults=(1, 2),
        num_resnet_blocks=1,
        layer_attns=(False, True),
        attn_dim_head=32,
        text_len=8,
        text_dim=16,
        batch=2,
    )
    config = compare.matched_config(arch)
    params = nn.meta.unbox(abstract_params(build_model(config), config))  # the real init, traced (no compile)
    assert sum(x.size for x in jax.tree_util.tree_leaves(params)) == compare.matched_param_count(arch)
    # widths: level l has dim * dim_mults[l] channels; attention (one 32-channel head) only at level 1 and the middle
    assert params["down_0_block_0"]["conv_in"]["kernel"].shape == (3, 3, 32, 32)
    assert params["down_1_block_0"]["conv_in"]["kernel"].shape == (3, 3, 32, 64)
    assert sorted(k for k in params if "attention" in k) == [
        "down_1_attention_0",
        "middle_attention",
        "up_1_attention_0",
        "up_1_attention_1",
    ]
    assert params["down_1_attention_0"]["qkv"]["kernel"].shape == (64, 3, 2, 32)
    assert params["down_1_attention_0"]["text_kv"]["kernel"].shape == (16, 2, 2, 32)  # text width 16 into k/v
    assert params["down_0_downsample"]["kernel"].shape == (3, 3, 32, 32)  # one conv resamples, as the peer's
    assert params["noise_embedding"]["dense_out"]["kernel"].shape == (128, 128)  # conditioning width 4 * dim


def test_default_matched_param_count():
    assert compare.matched_param_count(compare.Architecture()) == DEFAULT_MATCHED_PARAMS


def test_missing_peer_python_names_the_setup_script(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--peer-python", str(tmp_path / "venv" / "bin" / "python"), "--reps", "1"])
    message = str(exit_info.value.code)
    assert "setup_imagen_pytorch.sh" in message and str(tmp_path) in message


def test_matmul_conv_flops_counts_nested_matmuls_and_convolutions():
    def step(x, w, kernel, image):
        conv = jax.lax.conv_general_dilated(image, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        scanned, _ = jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=3)
        return jax.jit(lambda a: a @ w)(x).sum() + scanned.sum() + conv.sum()

    x, w = jax.numpy.ones((4, 8)), jax.numpy.ones((8, 8))
    kernel, image = jax.numpy.ones((3, 3, 2, 5)), jax.numpy.ones((1, 4, 4, 2))
    jaxpr = jax.make_jaxpr(step)(x, w, kernel, image)
    matmul = 2 * 4 * 8 * 8  # once under jit, three times in the scan
    conv = 2 * (4 * 4 * 5) * (3 * 3 * 2)
    assert compare.matmul_conv_flops(jaxpr) == 4 * matmul + conv
