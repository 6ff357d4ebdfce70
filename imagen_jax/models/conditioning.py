"""What both UNet families share: their conditioning fields, input checks, the
conditioning embedding, and the SR low-res input (design.md §2, §4).

emb = NoiseLevel(logsnr) + AttentionPool(text) [+ AugLevel(aug_logsnr) for SR], where text
is the T5 output or, with text_context_dim, its one shared projection; and for SR
the low-res image is resized to z's size and concatenated to z_t on the channel axis.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.models.attention import text_constraint
from imagen_jax.models.embeddings import NoiseLevelEmbedding
from imagen_jax.models.layers import dense, zeros
from imagen_jax.models.partitioning import constrain, image_constraint, partitioned
from imagen_jax.models.resnet import ResNetBlock
from imagen_jax.models.text_pooling import TextAttentionPooling

LOW_RES_RESIZE_METHODS = ("bilinear", "bicubic", "nearest")


def upsample_low_res(low_res, height: int, width: int, method: str = "bilinear"):
    """low_res [B, h, w, 3] in [-1, 1] -> [B, height, width, 3] (jax.image.resize, `method`)."""
    if method not in LOW_RES_RESIZE_METHODS:
        raise ValueError(f"model.low_res_resize must be one of {LOW_RES_RESIZE_METHODS}, got {method!r}")
    batch, _, _, channels = low_res.shape
    return jax.image.resize(low_res, (batch, height, width, channels), method=method)


class UNetCommon(nn.Module):
    """Fields and input handling shared by `UNet` and `EfficientUNet` (not used alone).

    Call: (z [B, H, W, C], logsnr [B], text_embedding [B, L, D], text_mask [B, L] bool,
    low_res [B, h, w, 3] | None, aug_logsnr [B] | None, train) -> [B, H, W, out_channels] float32.
    """

    out_channels: int = 3
    text_dim: int = 4096
    embed_dim: int = 512  # width of the conditioning embedding
    noise_sinusoid_dim: int = 256
    logsnr_scale: float = 25.0
    logsnr_clip: float = 30.0
    text_pool_heads: int = 8
    text_context_dim: int | None = None  # None: attention layers read the T5 output itself
    low_res_conditioning: bool = False  # True for the SR stages
    low_res_resize: str = "bilinear"
    norm_groups: int = 32
    num_heads: int | None = None
    head_dim: int | None = 64
    dropout: float = 0.0
    remat: bool = False
    attention_implementation: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    # -- helpers used inside the subclasses' compact __call__ --------------------------

    def _check_inputs(self, z, logsnr, text_embedding, text_mask, low_res, aug_logsnr):
        if z.ndim != 4:
            raise ValueError(f"z must be [B, H, W, C] (NHWC), got shape {z.shape}")
        batch = z.shape[0]
        if logsnr.shape != (batch,):
            raise ValueError(f"logsnr must be [B] = ({batch},), got {logsnr.shape}")
        if text_embedding.ndim != 3 or text_embedding.shape[0] != batch or text_embedding.shape[2] != self.text_dim:
            raise ValueError(
                f"text_embedding must be [B, L, model.text_dim] = [{batch}, L, {self.text_dim}], "
                f"got {text_embedding.shape}"
            )
        if text_mask.shape != text_embedding.shape[:2]:
            raise ValueError(f"text_mask must be [B, L] = {text_embedding.shape[:2]} (bool), got {text_mask.shape}")
        if self.low_res_conditioning:
            if low_res is None or aug_logsnr is None:
                raise ValueError(
                    "this is a super-resolution model: pass low_res [B, h, w, 3] and aug_logsnr [B] (log-SNR of "
                    "the noise augmentation; use the schedule at aug level 0 for none)"
                )
            if low_res.ndim != 4 or low_res.shape[0] != batch or low_res.shape[-1] != 3:
                raise ValueError(f"low_res must be [B, h, w, 3] with B = {batch}, got {low_res.shape}")
            if aug_logsnr.shape != (batch,):
                raise ValueError(f"aug_logsnr must be [B] = ({batch},), got {aug_logsnr.shape}")
        elif low_res is not None or aug_logsnr is not None:
            raise ValueError(
                "this is a base (text -> image) model: low_res/aug_logsnr are for SR models "
                "(an SR stage config sets low_res_resolution > 0)"
            )

    def _conditioned_inputs(self, z, logsnr, text_embedding, text_mask, low_res, aug_logsnr):
        """-> (x [B, H, W, C(+3)] dtype, emb [B, embed_dim] dtype, text [B, L, D or text_context_dim],
        mask [B, L] bool)."""
        self._check_inputs(z, logsnr, text_embedding, text_mask, low_res, aug_logsnr)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        text_mask = text_mask.astype(bool)
        text = text_embedding
        if self.text_context_dim is not None:  # one shared LayerNorm + projection to a narrower width
            text = nn.LayerNorm(
                dtype=jnp.float32,
                param_dtype=self.param_dtype,
                scale_init=partitioned(nn.initializers.ones_init(), "norm"),
                bias_init=partitioned(zeros, "norm"),
                name="text_projection_norm",
            )(text.astype(jnp.float32))
            text = dense(self.text_context_dim, "text_embed", "embed", name="text_projection", **kw)(text)
        text = text_constraint(text)
        emb = NoiseLevelEmbedding(
            self.embed_dim, self.noise_sinusoid_dim, self.logsnr_scale, self.logsnr_clip, name="noise_embedding", **kw
        )(logsnr)
        emb = emb + TextAttentionPooling(
            self.embed_dim, self.text_pool_heads, self.attention_implementation, name="text_pooling", **kw
        )(text, text_mask)
        x = z
        if self.low_res_conditioning:
            upsampled = upsample_low_res(low_res.astype(jnp.float32), z.shape[1], z.shape[2], self.low_res_resize)
            x = jnp.concatenate([z.astype(jnp.float32), upsampled], axis=-1)
            emb = emb + NoiseLevelEmbedding(
                self.embed_dim, self.noise_sinusoid_dim, self.logsnr_scale, self.logsnr_clip, name="aug_embedding", **kw
            )(aug_logsnr)
        emb = constrain(emb, "batch", "channels")
        return image_constraint(x.astype(self.dtype)), emb, text, text_mask

    def _block(self, cls):
        """`cls`, rematerialised in the backward pass when model.remat is set."""
        return nn.remat(cls) if self.remat else cls

    def _resnet(self, out_channels, train, resample=None, name=None):
        return self._block(ResNetBlock)(
            out_channels,
            resample=resample,
            norm_groups=self.norm_groups,
            dropout=self.dropout,
            deterministic=not train,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
