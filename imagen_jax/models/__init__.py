"""The Imagen UNets (design.md §4): the ADM-style base `UNet`, the `EfficientUNet` of the SR
stages, their layers, and the builder from a config's `model` section."""

from imagen_jax.models.attention import (
    CrossAttention,
    SelfAttention,
    dot_product_attention,
)
from imagen_jax.models.builder import (
    FAMILIES,
    abstract_params,
    build_model,
    count_params,
    dummy_inputs,
    init_params,
)
from imagen_jax.models.efficient_unet import EfficientUNet
from imagen_jax.models.embeddings import NoiseLevelEmbedding, sinusoidal_embedding
from imagen_jax.models.resnet import ResNetBlock
from imagen_jax.models.text_pooling import TextAttentionPooling
from imagen_jax.models.unet import UNet

__all__ = [
    "FAMILIES",
    "CrossAttention",
    "EfficientUNet",
    "NoiseLevelEmbedding",
    "ResNetBlock",
    "SelfAttention",
    "TextAttentionPooling",
    "UNet",
    "abstract_params",
    "build_model",
    "count_params",
    "dot_product_attention",
    "dummy_inputs",
    "init_params",
    "sinusoidal_embedding",
]
