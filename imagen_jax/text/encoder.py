"""TextEncoder: prompts -> (embeddings [B, L, D] float32, mask [B, L] bool), jitted and
sharded over the batch across all local devices (design.md §2: frozen, encoded once per prompt).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from imagen_jax import storage
from imagen_jax.text.builtin import BUILTIN_ENCODERS, WORDS
from imagen_jax.text.config import T5EncoderConfig
from imagen_jax.text.hf_checkpoint import load_hf_checkpoint
from imagen_jax.text.pretrain import PRETRAINED_SHAPES_T5, PretrainSettings, ensure_pretrained
from imagen_jax.text.t5 import abstract_params, encode_tokens, init_params
from imagen_jax.text.tokenizer import (
    byt5_tokenizer,
    load_tokenizer,
    tokenize,
    word_tokenizer,
)

DEFAULT_MAX_LENGTH = 128


def default_compute_dtype():
    """bfloat16 on accelerators, float32 on CPU."""
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


def logical_param_shardings(config: T5EncoderConfig, mesh: Mesh, rules) -> Any:
    """NamedSharding per parameter from logical axis rules, e.g. (("embed", "fsdp"), ("mlp", None), ...)."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_params(config)), mesh, rules)


def sharded_placer(mesh: Mesh, rules=None):
    """place_for(config) -> (place(path, view) -> jax.Array on its shards): the parameters
    FSDP-sharded on `mesh` by the UNets' logical rules (parallel.logical_shardings; default
    parallel.DEFAULT_RULES); each process reads (view[index], hf_checkpoint.ParamView) and
    puts only the slices its devices hold."""
    from imagen_jax.parallel import DEFAULT_RULES, logical_shardings

    def place_for(config: T5EncoderConfig):
        shardings = logical_shardings(abstract_params(config), mesh, rules or DEFAULT_RULES)

        def place(path, value):
            sharding = functools.reduce(lambda node, key: node[key], path, shardings)
            return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

        return place

    return place_for


def _place_tree(params, place) -> Any:
    return jax.tree_util.tree_map_with_path(lambda p, v: place(tuple(k.key for k in p), np.asarray(v)), params)


class TextEncoder:
    """A frozen T5 encoder with its tokenizer.

    encode(prompts) -> (embeddings [B, max_length, d_model] float32 jax.Array, zero at padding;
                        mask [B, max_length] bool jax.Array), both sharded over the batch.
    The batch is padded up to a multiple of the number of batch shards and cut back after.
    For use inside other jitted programs, `encode_tokens(params, ids, mask, config=...)`
    (imagen_jax.text.t5) is the same computation as a pure function.
    """

    def __init__(
        self,
        name: str,
        config: T5EncoderConfig,
        params: Any,
        tokenizer: Any,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        dtype: Any = None,
        mesh: Mesh | None = None,
        batch_axes: str | tuple[str, ...] = "batch",
        param_shardings: Any = None,
    ):
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}.")
        self.name = name
        self.config = config
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dtype = default_compute_dtype() if dtype is None else dtype
        self.mesh = mesh if mesh is not None else Mesh(np.asarray(jax.local_devices()), ("batch",))
        if any(t != jax.sharding.AxisType.Auto for t in self.mesh.axis_types):
            raise ValueError(
                f"TextEncoder needs a mesh with Auto axis types (got {self.mesh.axis_types}); build it with "
                "jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))."
            )
        batch_axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes)
        self.num_shards = math.prod(self.mesh.shape[axis] for axis in batch_axes)
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(batch_axes))
        if param_shardings is None:
            param_shardings = jax.tree.map(lambda _: NamedSharding(self.mesh, PartitionSpec()), params)
        self.params = jax.device_put(params, param_shardings)
        encode = functools.partial(encode_tokens, config=config, dtype=self.dtype)
        self._encode = jax.jit(
            encode,
            in_shardings=(param_shardings, self.batch_sharding, self.batch_sharding),
            out_shardings=self.batch_sharding,
        )
        self._encode_arrays = jax.jit(encode)

    @property
    def dim(self) -> int:
        return self.config.d_model

    def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [B, max_length] int32 and mask [B, max_length] bool (numpy)."""
        return tokenize(self.tokenizer, prompts, self.max_length)

    def encode_ids(self, token_ids, mask) -> tuple[jax.Array, jax.Array]:
        """Embeddings [B, L, D] float32 and mask [B, L] bool from token ids and mask [B, L]."""
        token_ids, mask = np.asarray(token_ids, np.int32), np.asarray(mask, bool)
        batch = token_ids.shape[0]
        padded = -(-batch // self.num_shards) * self.num_shards
        if padded != batch:  # whole shards only; padding rows are fully masked and cut off below
            token_ids = np.pad(token_ids, ((0, padded - batch), (0, 0)))
            mask = np.pad(mask, ((0, padded - batch), (0, 0)))
        token_ids = jax.device_put(token_ids, self.batch_sharding)
        mask = jax.device_put(mask, self.batch_sharding)
        embeddings = self._encode(self.params, token_ids, mask)
        if padded != batch:
            embeddings, mask = embeddings[:batch], mask[:batch]
        return embeddings, mask

    def encode_arrays(self, token_ids: jax.Array, mask: jax.Array) -> jax.Array:
        """Embeddings [B, L, D] float32 of token ids and mask [B, L] that are already global
        arrays on this encoder's mesh (any batch sharding; several processes each holding
        their rows): the whole batch is encoded by all devices together."""
        return self._encode_arrays(self.params, token_ids, mask)

    def encode(self, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
        """Embeddings [B, max_length, D] float32 (0 at padding) and mask [B, max_length] bool."""
        if len(prompts) == 0:
            raise ValueError("encode() got no prompts; pass a non-empty list of strings.")
        return self.encode_ids(*self.tokenize(prompts))


def load_text_encoder(
    name_or_path: str,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    dtype: Any = None,
    param_dtype: Any = None,
    mesh: Mesh | None = None,
    rules=None,
    **encoder_kwargs,
) -> TextEncoder:
    """A TextEncoder from a built-in name (BUILTIN_ENCODERS; or PRETRAINED_SHAPES_T5,
    pretrained on first use by text.pretrain and cached in pretrained_dir), a Hugging Face
    checkpoint directory (local or gs://), or a Hugging Face hub id (downloaded when the network allows).

    param_dtype: the params' dtype (default: bfloat16 on accelerators, float32 on CPU).
    mesh: a parallel.make_mesh (data, fsdp) mesh: the params are FSDP-sharded on it by the
    logical rules (`rules`, default parallel.DEFAULT_RULES), each tensor placed on its shards
    as it is read (host memory: one tensor), and batches split over data x fsdp. Default:
    replicated on this process's devices."""
    param_dtype = default_compute_dtype() if param_dtype is None else param_dtype
    place_for, shardings = None, None
    if mesh is not None:
        place_for = sharded_placer(mesh, rules)
        encoder_kwargs = dict(encoder_kwargs, mesh=mesh, batch_axes=("data", "fsdp"))
    if name_or_path in BUILTIN_ENCODERS:
        recipe = BUILTIN_ENCODERS[name_or_path]
        params = builtin_params(name_or_path, param_dtype)
        if place_for is not None:
            params = _place_tree(params, place_for(recipe.config))
            shardings = jax.tree.map(lambda x: x.sharding, params)
        kwargs = dict(max_length=max_length, dtype=dtype, param_shardings=shardings, **encoder_kwargs)
        tokenizer = word_tokenizer(WORDS) if recipe.tokenizer == "words" else byt5_tokenizer()
        return TextEncoder(name_or_path, recipe.config, params, tokenizer, **kwargs)
    if name_or_path == PRETRAINED_SHAPES_T5:  # pretrained here on first use, then read as any T5 checkpoint
        checkpoint_dir = ensure_pretrained(pretrained_dir(name_or_path))
    elif _is_checkpoint_dir(name_or_path):
        checkpoint_dir = name_or_path
    else:
        checkpoint_dir = download_checkpoint(name_or_path)
    config, params = load_hf_checkpoint(checkpoint_dir, param_dtype, place_for)
    if place_for is not None:
        encoder_kwargs = dict(encoder_kwargs, param_shardings=jax.tree.map(lambda x: x.sharding, params))
    tokenizer = load_tokenizer(checkpoint_dir)
    return TextEncoder(
        encoder_name(name_or_path), config, params, tokenizer, max_length=max_length, dtype=dtype, **encoder_kwargs
    )


def pretrained_dir(name: str) -> str:
    """Where a built-in pretrained encoder is cached: <data dir>/text_encoders/<name>
    ($IMAGEN_JAX_DATA_DIR or ~/imagen_jax_data), beside the datasets."""
    from imagen_jax.data.sources import resolve_data_dir

    return storage.join(resolve_data_dir(None), "text_encoders", name)


def builtin_params(name: str, param_dtype: Any = np.float32) -> dict:
    """The random weights of built-in encoder `name` (BUILTIN_ENCODERS), numpy arrays."""
    recipe = BUILTIN_ENCODERS[name]
    params = jax.tree.map(np.asarray, init_params(recipe.config, recipe.seed, param_dtype))
    if recipe.position_bias_std is not None:  # T5's init draws them at std d_model^-0.5
        scale = recipe.position_bias_std / recipe.config.d_model**-0.5
        params["relative_position_bias"]["embedding"] = params["relative_position_bias"]["embedding"] * scale
    return params


def _is_checkpoint_dir(name_or_path: str) -> bool:
    return storage.is_remote(name_or_path) or os.path.isdir(name_or_path)


def encoder_name(name_or_path: str) -> str:
    """The name a TextEncoder loaded from `name_or_path` has (it names its embedding cache),
    known without loading it: a built-in name as is, a directory's last component, a hub
    id with '/' as '--'."""
    if name_or_path in BUILTIN_ENCODERS or name_or_path == PRETRAINED_SHAPES_T5:
        return name_or_path
    if _is_checkpoint_dir(name_or_path):
        return storage.name(name_or_path)
    return name_or_path.replace("/", "--")


def encoder_config(name_or_path: str) -> T5EncoderConfig:
    """The shape of the encoder `name_or_path` names, without reading its weights: a built-in's,
    a checkpoint directory's config.json, or for a hub id of a public T5 v1.1 / Flan-T5
    checkpoint (google/t5-v1_1-xxl, google/flan-t5-xl, ...) its known shape."""
    from imagen_jax.text.config import T5_V1_1_CONFIGS
    from imagen_jax.text.hf_checkpoint import read_hf_config

    if name_or_path in BUILTIN_ENCODERS:
        return BUILTIN_ENCODERS[name_or_path].config
    if name_or_path == PRETRAINED_SHAPES_T5:
        return PretrainSettings().config
    if _is_checkpoint_dir(name_or_path):
        return read_hf_config(name_or_path)
    size = name_or_path.rsplit("-", 1)[-1]
    if name_or_path in (f"google/t5-v1_1-{size}", f"google/flan-t5-{size}") and f"t5-v1_1-{size}" in T5_V1_1_CONFIGS:
        return T5_V1_1_CONFIGS[f"t5-v1_1-{size}"]
    raise ValueError(
        f"The shape of text encoder {name_or_path!r} is not known without its checkpoint: pass a local "
        "checkpoint directory (its config.json is enough), a built-in name, or a google/t5-v1_1-* or "
        "google/flan-t5-* hub id."
    )


def download_checkpoint(hub_id: str) -> str:
    """Local snapshot directory of a hub T5 checkpoint (config, safetensors weights, tokenizer)."""
    if hub_id.count("/") != 1 or hub_id.startswith((".", "/")):
        builtins = ", ".join([*BUILTIN_ENCODERS, PRETRAINED_SHAPES_T5])
        raise FileNotFoundError(
            f"{hub_id!r} is neither a built-in encoder ({builtins}), nor a local directory, "
            "nor a Hugging Face hub id like 'google/flan-t5-xxl'."
        )
    from huggingface_hub import snapshot_download

    config_and_tokenizer = ["config.json", "tokenizer*", "spiece.model", "special_tokens_map.json", "added_tokens.json"]
    try:
        safetensors = ["*.safetensors", "*.safetensors.index.json"]
        path = snapshot_download(hub_id, allow_patterns=[*config_and_tokenizer, *safetensors])
        if not any(name.endswith(".safetensors") for name in os.listdir(path)):  # older repos: PyTorch weights only
            path = snapshot_download(hub_id, allow_patterns=["pytorch_model*.bin", "pytorch_model.bin.index.json"])
        return path
    except Exception as e:  # network errors, missing repo, gated repo: one message naming the fix
        raise FileNotFoundError(
            f"Could not download {hub_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). Download it where "
            "the network allows (`hf download <id> --local-dir DIR`) and pass DIR instead."
        ) from e
