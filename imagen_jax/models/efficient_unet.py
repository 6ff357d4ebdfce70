"""The Efficient U-Net of the super-resolution stages (design.md §4, paper appendix F).

Per level l: channels[l], num_res_blocks[l], strides[l], attention[l].
- DBlock: strided conv (downsample BEFORE the convs) -> add Dense(emb) -> N ResNet blocks
  -> optional attention; its output is the level's skip.
- UBlock: concat the skip scaled by 1/sqrt(2) (except at the lowest level, whose input
  is that skip) -> add Dense(emb) -> N ResNet blocks ->
  optional attention -> nearest upsample + conv (upsample AFTER the convs).
attention[l]: "none", "self" (self-attention with the text tokens concatenated to its keys
and values, sr256) or "cross" (text cross-attention only, sr1024); once after the level's
ResNet blocks, or after each of them with attention_every_block.

low_res_skip (off in the paper configs): the output adds a 1x1 conv of the upsampled
low-res input, initialised to the identity, so an x-predicting stage starts out as the
upsampling itself and learns the correction. Small stages trained for a few hundred steps
need it: without it their x-prediction error on clean low-res inputs was still 2-4x
bicubic upsampling's after 300 steps (configs/demo.py, README: The demo).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.models.attention import CrossAttention, SelfAttention
from imagen_jax.models.conditioning import UNetCommon
from imagen_jax.models.layers import GroupNorm, conv, dense, upsample_2x, zeros
from imagen_jax.models.partitioning import image_constraint, partitioned

ATTENTION_KINDS = ("none", "self", "cross")
SKIP_SCALE = 1.0 / math.sqrt(2.0)


class EfficientUNet(UNetCommon):
    """Efficient U-Net; call signature in `UNetCommon`."""

    channels: tuple[int, ...] = (128, 256, 512, 1024)
    num_res_blocks: tuple[int, ...] = (2, 4, 8, 8)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    attention: tuple[str, ...] = ("none", "none", "none", "self")
    attention_every_block: bool = False  # attention after every ResNet block of a level, not once after them
    low_res_skip: bool = False  # add a 1x1 conv of the upsampled low-res image, initialised to identity
    head_dim: int | None = None
    num_heads: int | None = 8

    def _check_config(self, z):
        levels = len(self.channels)
        for name in ("num_res_blocks", "strides", "attention"):
            if len(getattr(self, name)) != levels:
                raise ValueError(
                    f"model.{name} needs one entry per level ({levels}, like model.channels), got {getattr(self, name)}"
                )
        for kind in self.attention:
            if kind not in ATTENTION_KINDS:
                raise ValueError(f"model.attention entries must be in {ATTENTION_KINDS}, got {kind!r}")
        for stride in self.strides:
            if stride not in (1, 2):
                raise ValueError(f"model.strides entries must be 1 or 2, got {stride}")
        if self.low_res_skip and not self.low_res_conditioning:
            raise ValueError(
                "model.low_res_skip adds the upsampled low-res image to the output: it needs "
                "low_res_conditioning=True (an SR stage: low_res_resolution > 0 in its config)"
            )
        factor = math.prod(self.strides)
        if z.shape[1] % factor or z.shape[2] % factor:
            raise ValueError(f"image size {z.shape[1:3]} must be divisible by prod(model.strides) = {factor}")

    @nn.compact
    def __call__(self, z, logsnr, text_embedding, text_mask, low_res=None, aug_logsnr=None, train: bool = False):
        self._check_config(z)
        x, emb, text, text_mask = self._conditioned_inputs(z, logsnr, text_embedding, text_mask, low_res, aug_logsnr)
        emb_act = nn.swish(emb)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def add_embedding(h, name):
            return image_constraint(h + dense(h.shape[-1], "mlp", "embed", name=name, **kw)(emb_act)[:, None, None, :])

        def attend(h, level, name):
            kind = self.attention[level]
            if kind == "none":
                return h
            cls = SelfAttention if kind == "self" else CrossAttention
            layer = self._block(cls)(
                self.num_heads, self.head_dim, self.norm_groups, self.attention_implementation, name=name, **kw
            )
            return layer(h, text, text_mask)

        def resnet_stack(h, level, prefix):
            """N ResNet blocks, then attention (after each block with attention_every_block)."""
            for i in range(self.num_res_blocks[level]):
                h = self._resnet(self.channels[level], train, name=f"{prefix}_{level}_block_{i}")(h)
                if self.attention_every_block:
                    h = attend(h, level, f"{prefix}_{level}_attention_{i}")
            if not self.attention_every_block:
                h = attend(h, level, f"{prefix}_{level}_attention")
            return h

        h = conv(self.channels[0], 3, in_axis=None, name="conv_in", **kw)(x)
        skips = []
        for level, stride in enumerate(self.strides):  # DBlocks
            h = conv(self.channels[level], 3, strides=stride, name=f"down_{level}_conv", **kw)(h)
            h = add_embedding(h, f"down_{level}_embedding")
            h = resnet_stack(h, level, "down")
            skips.append(h)

        for level in reversed(range(len(self.channels))):  # UBlocks
            skip = skips.pop()
            if level != len(self.channels) - 1:  # at the bottom h is the skip itself
                h = jnp.concatenate([h, (skip * SKIP_SCALE).astype(h.dtype)], axis=-1)
            h = add_embedding(h, f"up_{level}_embedding")
            h = resnet_stack(h, level, "up")
            if self.strides[level] == 2:
                h = upsample_2x(h)
            h = conv(self.channels[max(level - 1, 0)], 3, name=f"up_{level}_conv", **kw)(h)

        h = GroupNorm(self.norm_groups, name="norm_out", **kw)(h, swish=True)
        out = conv(self.out_channels, 3, zero_init=True, out_axis=None, name="conv_out", **kw)(h)
        if self.low_res_skip:
            upsampled = x[..., z.shape[-1] :]
            identity = lambda key, shape, dtype: jnp.eye(shape[-2], shape[-1], dtype=dtype).reshape(shape)  # noqa: E731
            out = out + nn.Conv(
                self.out_channels,
                (1, 1),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=partitioned(identity, None, None, None, None),
                bias_init=partitioned(zeros, None),
                name="low_res_skip",
            )(upsampled)
        return image_constraint(out.astype(jnp.float32))
