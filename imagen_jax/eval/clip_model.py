"""CLIP's image and text towers as flax.linen modules, for CLIP score evaluation (inference only).

CLIP: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision". Weight layout and numerics follow Hugging Face transformers' CLIPModel (see
clip_checkpoint.py for the loader), so that `image_embeddings` / `text_embeddings` equal
`CLIPModel.get_image_features` / `get_text_features` on the same inputs.

Vision tower (ViT): patch-embedding conv (no bias) -> [class token; patches] + learned
position embeddings -> pre-LayerNorm -> N pre-norm encoder layers -> post-LayerNorm of the
class token -> visual projection (no bias).
Text tower: token + position embeddings -> N pre-norm encoder layers with causal and
padding masks -> final LayerNorm -> the hidden state at the EOS token -> text projection (no bias).

Parameter layout (D: the tower's hidden size, F: its intermediate size, E: projection_dim):
  vision_model/patch_embedding/kernel [P, P, 3, D]; vision_model/class_embedding [D]
  vision_model/position_embedding/embedding [(S/P)^2 + 1, D]
  vision_model/{pre_layernorm, post_layernorm}/{scale, bias} [D]
  text_model/token_embedding/embedding [vocab, D]; text_model/position_embedding/embedding [max_positions, D]
  text_model/final_layer_norm/{scale, bias} [D]
  {vision,text}_model/layers_i/attention/{query,key,value,out}/{kernel [D, D], bias [D]}
  {vision,text}_model/layers_i/{layer_norm1, layer_norm2}/{scale, bias} [D]
  {vision,text}_model/layers_i/mlp/fc1/{kernel [D, F], bias [F]}, mlp/fc2/{kernel [F, D], bias [D]}
  visual_projection/kernel [D_vision, E]; text_projection/kernel [D_text, E]
(CLIPModel's logit_scale is not kept: CLIP score does not use it.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# CLIP's text config default (transformers' CLIPTextConfig), used when config.json gives none.
DEFAULT_EOS_TOKEN_ID = 49407
# Checkpoints saved before transformers PR #24773 say eos_token_id=2; their pooling takes the argmax of the ids.
LEGACY_EOS_TOKEN_ID = 2

_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def _check_activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(f"CLIP hidden_act {name!r} is not supported; use one of {', '.join(_ACTIVATIONS)}.")
    return name


@dataclasses.dataclass(frozen=True)
class ClipTextConfig:
    """CLIP's text tower (transformers' CLIPTextConfig fields of the same names)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = DEFAULT_EOS_TOKEN_ID

    def __post_init__(self):
        _check_activation(self.hidden_act)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"text hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads."
            )


@dataclasses.dataclass(frozen=True)
class ClipVisionConfig:
    """CLIP's vision tower (transformers' CLIPVisionConfig fields of the same names; 3 input channels)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        _check_activation(self.hidden_act)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"vision hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads."
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}.")

    @property
    def num_positions(self) -> int:
        """Patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1


def _square_size(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"CLIP vision {name} {value} is not square; only square images are supported.")
        value = value[0]
    return int(value)


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Both towers and the shared embedding width. Frozen and hashable: pass it as a static jit argument."""

    text: ClipTextConfig = ClipTextConfig()
    vision: ClipVisionConfig = ClipVisionConfig()
    projection_dim: int = 512

    @classmethod
    def from_hf_dict(cls, config: Mapping[str, Any]) -> ClipConfig:
        """From a Hugging Face CLIPModel config.json dict; missing fields take CLIPTextConfig /
        CLIPVisionConfig's defaults, and legacy `text_config_dict` / `vision_config_dict` entries
        override `text_config` / `vision_config`, as CLIPConfig does."""
        if config.get("model_type", "clip") != "clip":
            raise ValueError(f"config.json has model_type {config.get('model_type')!r}, not 'clip' (a CLIPModel).")
        text = {**(config.get("text_config") or {}), **(config.get("text_config_dict") or {})}
        vision = {**(config.get("vision_config") or {}), **(config.get("vision_config_dict") or {})}
        if vision.get("num_channels", 3) != 3:
            raise ValueError(f"CLIP vision num_channels {vision['num_channels']}: only RGB (3) is supported.")
        eos = text.get("eos_token_id", DEFAULT_EOS_TOKEN_ID)
        if not isinstance(eos, int):
            raise ValueError(f"CLIP text eos_token_id {eos!r}: one integer id is expected.")
        pick = lambda d, fields: {f.name: d[f.name] for f in fields if f.name in d}  # noqa: E731
        text_fields = dataclasses.fields(ClipTextConfig)
        vision_fields = dataclasses.fields(ClipVisionConfig)
        vision = pick(vision, vision_fields)
        for key in ("image_size", "patch_size"):
            if key in vision:
                vision[key] = _square_size(vision[key], key)
        return cls(
            text=ClipTextConfig(**{**pick(text, text_fields), "eos_token_id": eos}),
            vision=ClipVisionConfig(**vision),
            projection_dim=int(config.get("projection_dim", 512)),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json dict of a transformers CLIPModel of this shape."""
        return {
            "model_type": "clip",
            "architectures": ["CLIPModel"],
            "projection_dim": self.projection_dim,
            "text_config": {**dataclasses.asdict(self.text), "projection_dim": self.projection_dim},
            "vision_config": {**dataclasses.asdict(self.vision), "projection_dim": self.projection_dim},
        }


# openai/clip-vit-base-patch32 and openai/clip-vit-large-patch14 shapes.
CLIP_VIT_B32 = ClipConfig(
    text=ClipTextConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
    vision=ClipVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=32
    ),
    projection_dim=512,
)
CLIP_VIT_L14 = ClipConfig(
    text=ClipTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    vision=ClipVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14
    ),
    projection_dim=768,
)
PRESETS: dict[str, ClipConfig] = {"ViT-B/32": CLIP_VIT_B32, "ViT-L/14": CLIP_VIT_L14}


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    # Two-pass variance (not E[x^2] - E[x]^2), as torch's LayerNorm.
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class ClipAttention(nn.Module):
    """Multi-head self-attention with biases: x [B, L, D], allowed [B or 1, 1 or H, L, L] bool (or None) -> [B, L, D].

    Softmax in float32; disallowed keys get float32's most negative value (a query with no
    allowed key attends uniformly, as transformers' additive mask gives, never NaN)."""

    hidden_size: int
    num_heads: int

    @nn.compact
    def __call__(self, x, allowed=None):
        b, length, d = x.shape
        h, k = self.num_heads, d // self.num_heads
        split = lambda y: y.reshape(b, length, h, k)  # noqa: E731
        query = split(nn.Dense(d, name="query")(x))
        key = split(nn.Dense(d, name="key")(x))
        value = split(nn.Dense(d, name="value")(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32) * k**-0.5
        if allowed is not None:
            logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(b, length, d)
        return nn.Dense(d, name="out")(attended)


class ClipMLP(nn.Module):
    """fc2(act(fc1(x))), with biases. [B, L, D] -> [B, L, D]."""

    hidden_size: int
    intermediate_size: int
    activation: str

    @nn.compact
    def __call__(self, x):
        x = _ACTIVATIONS[self.activation](nn.Dense(self.intermediate_size, name="fc1")(x))
        return nn.Dense(self.hidden_size, name="fc2")(x)


class ClipEncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(ln1(x)), then x + mlp(ln2(x)). [B, L, D] -> [B, L, D]."""

    config: ClipTextConfig | ClipVisionConfig

    @nn.compact
    def __call__(self, x, allowed=None):
        cfg = self.config
        x = x + ClipAttention(cfg.hidden_size, cfg.num_attention_heads, name="attention")(
            _layer_norm(cfg.layer_norm_eps, "layer_norm1")(x), allowed
        )
        mlp = ClipMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, name="mlp")
        return x + mlp(_layer_norm(cfg.layer_norm_eps, "layer_norm2")(x))


class ClipVisionTransformer(nn.Module):
    """Pixels [N, S, S, 3] (NHWC, CLIP-normalized) -> pooled class token [N, D] (after post-LayerNorm)."""

    config: ClipVisionConfig

    @nn.compact
    def __call__(self, pixels):
        cfg = self.config
        if pixels.shape[1:] != (cfg.image_size, cfg.image_size, 3):
            raise ValueError(f"CLIP expects images [N, {cfg.image_size}, {cfg.image_size}, 3], got {pixels.shape}.")
        patches = nn.Conv(
            cfg.hidden_size,
            (cfg.patch_size, cfg.patch_size),
            strides=(cfg.patch_size, cfg.patch_size),
            padding="VALID",
            use_bias=False,
            name="patch_embedding",
        )(pixels)
        n = pixels.shape[0]
        patches = patches.reshape(n, -1, cfg.hidden_size)  # row-major over the grid, as torch's flatten(2)
        class_embedding = self.param("class_embedding", nn.initializers.normal(1.0), (cfg.hidden_size,))
        class_token = jnp.broadcast_to(class_embedding.astype(patches.dtype), (n, 1, cfg.hidden_size))
        x = jnp.concatenate([class_token, patches], axis=1)
        positions = nn.Embed(cfg.num_positions, cfg.hidden_size, name="position_embedding")(
            jnp.arange(cfg.num_positions)
        )
        x = _layer_norm(cfg.layer_norm_eps, "pre_layernorm")(x + positions[None])
        for i in range(cfg.num_hidden_layers):
            x = ClipEncoderLayer(cfg, name=f"layers_{i}")(x)
        return _layer_norm(cfg.layer_norm_eps, "post_layernorm")(x[:, 0])


def eos_positions(token_ids, eos_token_id: int):
    """Index [N] int32 of each sequence's pooled (EOS) token, as transformers' CLIPTextTransformer:
    argmax of the ids when eos_token_id == 2 (legacy configs; the EOS id is the largest id),
    else the first position holding eos_token_id (0 when there is none)."""
    token_ids = token_ids.astype(jnp.int32)
    if eos_token_id == LEGACY_EOS_TOKEN_ID:
        return jnp.argmax(token_ids, axis=-1).astype(jnp.int32)
    return jnp.argmax((token_ids == eos_token_id).astype(jnp.int32), axis=-1).astype(jnp.int32)


class ClipTextTransformer(nn.Module):
    """Token ids [N, L] int32 and mask [N, L] bool -> pooled EOS hidden state [N, D] (after the final LayerNorm).

    Attention is causal and skips padded keys (transformers' causal mask combined with the padding mask)."""

    config: ClipTextConfig

    @nn.compact
    def __call__(self, token_ids, attention_mask):
        cfg = self.config
        n, length = token_ids.shape
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"CLIP text length {length} exceeds max_position_embeddings={cfg.max_position_embeddings}."
            )
        x = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="token_embedding")(token_ids)
        x = x + nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embedding")(jnp.arange(length))
        causal = jnp.tril(jnp.ones((length, length), bool))
        allowed = causal[None, None] & attention_mask.astype(bool)[:, None, None, :]  # [N, 1, L, L]
        for i in range(cfg.num_hidden_layers):
            x = ClipEncoderLayer(cfg, name=f"layers_{i}")(x, allowed)
        x = _layer_norm(cfg.layer_norm_eps, "final_layer_norm")(x)
        return x[jnp.arange(n), eos_positions(token_ids, cfg.eos_token_id)]


class ClipModel(nn.Module):
    """Both CLIP towers and their projections (transformers' CLIPModel without logit_scale).

    `encode_image(pixels [N, S, S, 3])` and `encode_text(ids [N, L], mask [N, L])` -> [N, projection_dim],
    projected but not normalized; `__call__` runs both (used by init)."""

    config: ClipConfig

    def setup(self):
        cfg = self.config
        self.vision_model = ClipVisionTransformer(cfg.vision)
        self.text_model = ClipTextTransformer(cfg.text)
        self.visual_projection = nn.Dense(cfg.projection_dim, use_bias=False)
        self.text_projection = nn.Dense(cfg.projection_dim, use_bias=False)

    def encode_image(self, pixels):
        return self.visual_projection(self.vision_model(pixels))

    def encode_text(self, token_ids, attention_mask):
        return self.text_projection(self.text_model(token_ids, attention_mask))

    def __call__(self, pixels, token_ids, attention_mask):
        return self.encode_image(pixels), self.encode_text(token_ids, attention_mask)


def _init_inputs(config: ClipConfig):
    s = config.vision.image_size
    return jnp.zeros((1, s, s, 3), jnp.float32), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), bool)


def abstract_params(config: ClipConfig, dtype: Any = jnp.float32):
    """Parameter pytree of ShapeDtypeStructs in `dtype` (jax.eval_shape of init: no allocation)."""
    params = jax.eval_shape(lambda: ClipModel(config).init(jax.random.key(0), *_init_inputs(config))["params"])
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, dtype), params)


def param_shapes(config: ClipConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flat {parameter path: shape} of ClipModel(config)."""
    from flax import traverse_util

    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(abstract_params(config)).items()}


def num_params(config: ClipConfig) -> int:
    """Number of parameters of ClipModel(config) (transformers' CLIPModel count minus 1, its logit_scale)."""
    return sum(math.prod(shape) for shape in param_shapes(config).values())


def init_params(config: ClipConfig, seed: int = 0):
    """Random parameters (flax's default initializers; for tests and shape checks)."""
    return jax.jit(ClipModel(config).init)(jax.random.key(seed), *_init_inputs(config))["params"]


def image_embeddings(params, config: ClipConfig, pixels):
    """CLIP image embeddings: pixels float32 [N, S, S, 3] (NHWC, CLIP-normalized, S = image_size) ->
    float32 [N, projection_dim], projected, not normalized (= CLIPModel.get_image_features).
    Pure and jit-able with `config` static (e.g. jax.jit(image_embeddings, static_argnums=1))."""
    out = ClipModel(config).apply({"params": params}, jnp.asarray(pixels), method=ClipModel.encode_image)
    return out.astype(jnp.float32)


def text_embeddings(params, config: ClipConfig, token_ids, attention_mask):
    """CLIP text embeddings: token ids int32 [N, L] and mask bool/int [N, L] (L <= max_position_embeddings,
    each sequence holding its EOS token) -> float32 [N, projection_dim], projected, not normalized
    (= CLIPModel.get_text_features). Pure and jit-able with `config` static."""
    out = ClipModel(config).apply(
        {"params": params},
        jnp.asarray(token_ids, jnp.int32),
        jnp.asarray(attention_mask),
        method=ClipModel.encode_text,
    )
    return out.astype(jnp.float32)
