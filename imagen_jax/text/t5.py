"""The T5 encoder stack as flax.linen modules, weight-compatible with Hugging Face T5.

Architecture (Raffel et al. 2020, T5 v1.1 / ByT5 changes; design.md §2): token embedding ->
N pre-norm blocks [RMS norm -> self-attention (no 1/sqrt(d) scaling, plus a relative
position bias computed once from the shared bucket table) -> residual; RMS norm ->
feed-forward (ReLU or gated GELU) -> residual] -> final RMS norm. Dropout is omitted:
the encoder is frozen and only run for inference.

Parameter layout (logical axes in brackets, see axes.py):
  token_embedding/embedding        [vocab, embed]
  relative_position_bias/embedding [relpos, heads]
  layers_i/attention/{query,key,value}/kernel [embed, heads, kv]
  layers_i/attention/out/kernel    [heads, kv, embed]
  layers_i/mlp/{wi | wi_0, wi_1}/kernel [embed, mlp];  layers_i/mlp/wo/kernel [mlp, embed]
  layers_i/{attention_norm, mlp_norm}/scale, final_norm/scale [embed]
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.text.axes import HIDDEN_AXES
from imagen_jax.text.config import T5EncoderConfig

Dtype = Any


def relative_position_bucket(relative_position, *, num_buckets: int = 32, max_distance: int = 128):
    """Bidirectional T5 bucket of each relative position (key - query), int32, same shape.

    Half the buckets are for keys after the query, half for keys before; within each half,
    distances below num_buckets/4 get their own bucket and larger ones share log-spaced
    buckets up to max_distance (Mesh TensorFlow `_relative_position_bucket`).
    """
    num_buckets //= 2
    bucket = (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # Float32 log, as the reference computes it; max(., 1) only keeps log finite where is_small.
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


def _activation(name: str):
    return {
        "relu": jax.nn.relu,
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "silu": jax.nn.silu,
        "swish": jax.nn.silu,
    }[name]


class HeadProjection(nn.Module):
    """A bias-free projection to or from heads: einsum(`equation`, x, kernel), the kernel of
    `shape` [embed, heads, kv] or [heads, kv, embed] with its logical axis `names`, drawn from
    N(0, std^2). (nn.DenseGeneral draws its kernel flat and constrains that rank-2 array with
    the rank-3 names, which fails when traced under logical axis rules and a mesh, as
    inside the train step.)"""

    shape: tuple[int, ...]
    names: tuple[str, ...]
    std: float
    equation: str
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.with_logical_partitioning(nn.initializers.normal(self.std), self.names)
        kernel = self.param("kernel", init, self.shape, self.param_dtype)
        return jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))


class T5LayerNorm(nn.Module):
    """T5's RMS norm: x / sqrt(mean(x^2) + eps) * scale, no mean subtraction, no bias.

    The mean square is accumulated in float32 whatever the compute dtype.
    """

    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return normed.astype(self.dtype) * scale.astype(self.dtype)


class T5Attention(nn.Module):
    """Bidirectional multi-head self-attention with T5's unscaled dot product.

    x [B, L, D], position_bias [1, H, L, L] float32, mask [B, L] bool -> [B, L, D].
    logits = q k^T + position_bias (no 1/sqrt(d_kv): T5 folds it into the initialization),
    masked keys get the most negative float32, softmax in float32.
    """

    config: T5EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, position_bias, mask):
        cfg = self.config
        d_model, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
        # Mesh TensorFlow initialization, as Hugging Face's T5PreTrainedModel._init_weights.
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        shape, names = (d_model, cfg.num_heads, cfg.d_kv), ("embed", "heads", "kv")
        query = HeadProjection(shape, names, (d_model * cfg.d_kv) ** -0.5, "bld,dhk->blhk", name="query", **kw)(x)
        key = HeadProjection(shape, names, d_model**-0.5, "bld,dhk->blhk", name="key", **kw)(x)
        value = HeadProjection(shape, names, d_model**-0.5, "bld,dhk->blhk", name="value", **kw)(x)

        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        logits = logits + position_bias
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)

        out_shape, out_names = (cfg.num_heads, cfg.d_kv, d_model), ("heads", "kv", "embed")
        return HeadProjection(out_shape, out_names, inner**-0.5, "blhk,hkd->bld", name="out", **kw)(attended)


class T5MLP(nn.Module):
    """T5 feed-forward: wo(act(wi x)) (T5 1.0) or wo(act(wi_0 x) * wi_1 x) (gated, v1.1). [B, L, D] -> [B, L, D]."""

    config: T5EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dense = lambda features, axes, std, name: nn.Dense(  # noqa: E731
            features,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std), axes),
            name=name,
        )
        act = _activation(cfg.activation)
        std_in = cfg.d_model**-0.5
        if cfg.is_gated:
            gate = act(dense(cfg.d_ff, ("embed", "mlp"), std_in, "wi_0")(x))
            hidden = gate * dense(cfg.d_ff, ("embed", "mlp"), std_in, "wi_1")(x)
        else:
            hidden = act(dense(cfg.d_ff, ("embed", "mlp"), std_in, "wi")(x))
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
        return dense(cfg.d_model, ("mlp", "embed"), cfg.d_ff**-0.5, "wo")(hidden)


class T5Block(nn.Module):
    """One pre-norm encoder block: x + attn(norm(x)), then x + mlp(norm(x)). [B, L, D] -> [B, L, D]."""

    config: T5EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, position_bias, mask):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        normed = T5LayerNorm(cfg.layer_norm_epsilon, name="attention_norm", **kw)(x)
        x = x + T5Attention(cfg, name="attention", **kw)(normed, position_bias, mask)
        x = nn.with_logical_constraint(x, HIDDEN_AXES)
        normed = T5LayerNorm(cfg.layer_norm_epsilon, name="mlp_norm", **kw)(x)
        x = x + T5MLP(cfg, name="mlp", **kw)(normed)
        return nn.with_logical_constraint(x, HIDDEN_AXES)


class T5Encoder(nn.Module):
    """T5 encoder stack: token ids [B, L] int32, mask [B, L] bool -> hidden states [B, L, D] in `dtype`.

    Equal to Hugging Face's `T5EncoderModel(...).last_hidden_state` at every position
    (padding positions included: padded queries still attend to the unmasked keys).
    `dtype` is the compute dtype (bfloat16 on accelerators), `param_dtype` the storage dtype.
    """

    config: T5EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids, mask):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
            name="token_embedding",
            **kw,
        )(token_ids)
        x = nn.with_logical_constraint(x, HIDDEN_AXES)

        # One bias table, used by every layer (Hugging Face stores it in layer 0).
        length = token_ids.shape[1]
        positions = jnp.arange(length)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None],
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
        )
        bias_table = nn.Embed(
            cfg.relative_attention_num_buckets,
            cfg.num_heads,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.d_model**-0.5), ("relpos", "heads")),
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            name="relative_position_bias",
        )
        position_bias = jnp.transpose(bias_table(buckets), (2, 0, 1))[None]  # [1, H, L, L] float32

        mask = mask.astype(bool)
        for i in range(cfg.num_layers):
            x = T5Block(cfg, name=f"layers_{i}", **kw)(x, position_bias, mask)
        return T5LayerNorm(cfg.layer_norm_epsilon, name="final_norm", **kw)(x)


def abstract_params(config: T5EncoderConfig, param_dtype: Dtype = jnp.float32):
    """Parameter pytree of ShapeDtypeStructs boxed in nn.LogicallyPartitioned (no allocation).

    `nn.get_partition_spec(abstract_params(cfg))` gives each parameter's logical axes, which
    `nn.logical_to_mesh_sharding` turns into NamedShardings for FSDP (e.g. T5-XXL).
    """
    model = T5Encoder(config, param_dtype=param_dtype)
    init = lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), bool))  # noqa: E731
    return jax.eval_shape(init)["params"]


def param_shapes(config: T5EncoderConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flat {parameter path: shape} of T5Encoder(config)."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(nn.unbox(abstract_params(config)))
    return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def init_params(config: T5EncoderConfig, seed: int, param_dtype: Dtype = jnp.float32):
    """Random parameters (Mesh TensorFlow / Hugging Face initialization) from an integer seed, unboxed."""
    model = T5Encoder(config, param_dtype=param_dtype)
    variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), bool))
    return nn.unbox(variables["params"])


def encode_tokens(params, token_ids, mask, *, config: T5EncoderConfig, dtype: Dtype = jnp.float32):
    """Pure T5 encoding for use inside other jitted programs; the encoder is frozen.

    params: T5Encoder params (plain or boxed arrays); token_ids [B, L] int32; mask [B, L] bool.
    Returns hidden states [B, L, D] float32 with padding positions set to 0. Gradients never
    flow into `params` (stop_gradient), so a train step that calls this keeps T5 frozen.
    """
    params = jax.lax.stop_gradient(params)
    hidden = T5Encoder(config, dtype=dtype).apply({"params": params}, token_ids, mask)
    return jnp.where(mask[..., None], hidden.astype(jnp.float32), 0.0)
