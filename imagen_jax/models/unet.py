"""The base 64x64 UNet (design.md §4, paper appendix B): ADM (Dhariwal & Nichol 2021) with
BigGAN-style up/down ResNet blocks, scale-shift norm, and self-attention whose keys and
values also hold the text tokens, at the configured resolutions."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.models.attention import SelfAttention
from imagen_jax.models.conditioning import UNetCommon
from imagen_jax.models.layers import GroupNorm, conv, depth_to_space, space_to_depth, upsample_2x
from imagen_jax.models.partitioning import image_constraint


class UNet(UNetCommon):
    """ADM-style UNet; call signature in `UNetCommon`.

    Level l has channels * channel_mult[l] channels and num_res_blocks blocks down,
    num_res_blocks + 1 up (each taking one skip); attention follows every block of a
    level whose resolution (in pixels) is in attention_resolutions, and the middle.
    """

    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    resblock_updown: bool = True
    patch_size: int = 1  # > 1: the UNet runs on patch x patch pixel blocks (space to depth), not in the paper

    @nn.compact
    def __call__(self, z, logsnr, text_embedding, text_mask, low_res=None, aug_logsnr=None, train: bool = False):
        levels, patch = len(self.channel_mult), self.patch_size
        factor = patch * 2 ** (levels - 1)
        if z.shape[1] % factor or z.shape[2] % factor:
            raise ValueError(
                f"image size {z.shape[1:3]} must be divisible by "
                f"model.patch_size * 2^(len(model.channel_mult) - 1) = {factor}"
            )
        x, emb, text, text_mask = self._conditioned_inputs(z, logsnr, text_embedding, text_mask, low_res, aug_logsnr)
        x = space_to_depth(x, patch)
        emb_act = nn.swish(emb)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attention = self._block(SelfAttention)

        def attend(h, name):
            return attention(
                self.num_heads, self.head_dim, self.norm_groups, self.attention_implementation, name=name, **kw
            )(h, text, text_mask)

        def resample(h, direction, name):
            if self.resblock_updown:
                return self._resnet(h.shape[-1], train, direction, name=name)(h, emb_act)
            if direction == "down":
                return conv(h.shape[-1], 3, strides=2, name=name, **kw)(h)
            return conv(h.shape[-1], 3, name=name, **kw)(upsample_2x(h))

        h = conv(self.channels * self.channel_mult[0], 3, in_axis=None, name="conv_in", **kw)(x)
        skips = [h]
        resolution = x.shape[1]  # of the feature maps: attention_resolutions count them, not image pixels
        for level, mult in enumerate(self.channel_mult):
            for i in range(self.num_res_blocks):
                h = self._resnet(self.channels * mult, train, name=f"down_{level}_block_{i}")(h, emb_act)
                if resolution in self.attention_resolutions:
                    h = attend(h, f"down_{level}_attention_{i}")
                skips.append(h)
            if level != levels - 1:
                h = resample(h, "down", f"down_{level}_downsample")
                resolution //= 2
                skips.append(h)

        h = self._resnet(h.shape[-1], train, name="middle_block_0")(h, emb_act)
        h = attend(h, "middle_attention")
        h = self._resnet(h.shape[-1], train, name="middle_block_1")(h, emb_act)

        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = self._resnet(self.channels * mult, train, name=f"up_{level}_block_{i}")(h, emb_act)
                if resolution in self.attention_resolutions:
                    h = attend(h, f"up_{level}_attention_{i}")
            if level != 0:
                h = resample(h, "up", f"up_{level}_upsample")
                resolution *= 2

        h = GroupNorm(self.norm_groups, name="norm_out", **kw)(h, swish=True)
        out = conv(self.out_channels * patch**2, 3, zero_init=True, out_axis=None, name="conv_out", **kw)(h)
        return image_constraint(depth_to_space(out, patch).astype(jnp.float32))
