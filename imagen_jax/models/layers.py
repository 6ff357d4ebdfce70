"""Small building blocks shared by both UNet families: convolutions and dense layers
with logical axis names, float32 GroupNorm fused with scale-shift and swish, and
parameter-free 2x resampling. All NHWC."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.models.partitioning import partitioned

Dtype = Any
default_kernel_init = nn.initializers.lecun_normal()
zeros = nn.initializers.zeros_init()
ones = nn.initializers.ones_init()


def conv(
    features: int,
    kernel: int = 3,
    *,
    strides: int = 1,
    zero_init: bool = False,
    in_axis: str | None = "conv_in",
    out_axis: str | None = "conv_out",
    dtype: Dtype,
    param_dtype: Dtype,
    name: str | None = None,
) -> nn.Conv:
    """A `kernel` x `kernel` 'SAME' convolution over NHWC, kernel [k, k, in, out] with logical
    axes (None, None, in_axis, out_axis); the image-side convs pass None for their 3 (or 6) channels."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding="SAME",
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=partitioned(zeros if zero_init else default_kernel_init, None, None, in_axis, out_axis),
        bias_init=partitioned(zeros, out_axis),
        name=name,
    )


def dense(
    features: int,
    in_axis: str | None,
    out_axis: str | None,
    *,
    zero_init: bool = False,
    dtype: Dtype,
    param_dtype: Dtype,
    name: str | None = None,
) -> nn.Dense:
    """A dense layer whose kernel [in, out] carries the logical axes (in_axis, out_axis)."""
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=partitioned(zeros if zero_init else default_kernel_init, in_axis, out_axis),
        bias_init=partitioned(zeros, out_axis),
        name=name,
    )


class GroupNorm(nn.Module):
    """GroupNorm over [B, H, W, C], statistics and affine in float32, optionally followed
    by FiLM (y (1 + scale) + shift, scale/shift [B, C]) and swish; returns `dtype`.

    One pass (E[x^2] - E[x]^2 in float32) so XLA fuses the whole thing with its consumer.
    """

    num_groups: int = 32
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, scale_shift=None, *, swish: bool = False):
        batch, height, width, channels = x.shape
        groups = min(self.num_groups, channels)
        if channels % groups:
            raise ValueError(
                f"GroupNorm: {channels} channels are not divisible into {groups} groups; "
                "set model.norm_groups to a divisor of every channel count"
            )
        scale = self.param("scale", partitioned(ones, "norm"), (channels,), self.param_dtype)
        bias = self.param("bias", partitioned(zeros, "norm"), (channels,), self.param_dtype)
        xf = x.astype(jnp.float32).reshape(batch, height * width, groups, channels // groups)
        mean = jnp.mean(xf, axis=(1, 3), keepdims=True)
        var = jnp.maximum(jnp.mean(jnp.square(xf), axis=(1, 3), keepdims=True) - jnp.square(mean), 0.0)
        y = ((xf - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        if scale_shift is not None:
            film_scale, film_shift = scale_shift
            y = y * (1.0 + film_scale[:, None, None, :].astype(jnp.float32)) + film_shift[:, None, None, :].astype(
                jnp.float32
            )
        if swish:
            y = nn.swish(y)
        return y.astype(self.dtype)


def downsample_2x(x):
    """2x2 average pooling, [B, H, W, C] -> [B, H/2, W/2, C] (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).astype(x.dtype)


def upsample_2x(x):
    """Nearest-neighbour 2x upsampling, [B, H, W, C] -> [B, 2H, 2W, C]."""
    b, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


def space_to_depth(x, block: int):
    """[B, H, W, C] -> [B, H/block, W/block, block * block * C]: each block x block pixel patch
    becomes one position's channels (row-major within the patch). block 1 is the identity."""
    if block == 1:
        return x
    b, h, w, c = x.shape
    x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // block, w // block, block * block * c)


def depth_to_space(x, block: int):
    """The inverse of space_to_depth: [B, h, w, block * block * C] -> [B, h * block, w * block, C]."""
    if block == 1:
        return x
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, block, block, c // (block * block)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * block, w * block, c // (block * block))
