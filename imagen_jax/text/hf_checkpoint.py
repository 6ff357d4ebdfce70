"""Reading (and writing) Hugging Face T5 checkpoints as our T5Encoder's parameters.

A checkpoint is a directory with config.json plus weights in one of: model.safetensors,
a sharded model.safetensors.index.json, or (only when torch is installed)
pytorch_model.bin / its sharded index, read with torch.load(weights_only=True).
Full encoder-decoder checkpoints (T5ForConditionalGeneration, Flan-T5) work too: their
decoder.* and lm_head.* weights are skipped. Any other missing or unexpected weight is
an error that lists them. The directory may be local or gs:// (storage): safetensors files
are read tensor by tensor with ranged reads (decoder tensors are never read).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any

import ml_dtypes
import numpy as np

from imagen_jax import storage
from imagen_jax.text.config import T5EncoderConfig
from imagen_jax.text.t5 import param_shapes

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"

# Weights of the decoder half of encoder-decoder checkpoints; never needed by the encoder.
_DECODER_PREFIXES = ("decoder.", "lm_head.")

# safetensors dtype names (its format spec) -> numpy dtypes.
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip

# How one HF tensor becomes one of our parameters: (our path, transform of the HF array).
_Rule = tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]


def _identity(w):
    return w


def hf_to_params_rules(config: T5EncoderConfig) -> dict[str, _Rule]:
    """HF tensor name -> (our parameter path, array transform) for every encoder weight.

    torch Linear weights are [out, in]; ours are [in, out] (attention split into heads).
    """
    h, k, d = config.num_heads, config.d_kv, config.d_model
    split_heads = lambda w: w.T.reshape(d, h, k)  # noqa: E731  [h*k, d] -> [d, h, k]
    merge_heads = lambda w: w.T.reshape(h, k, d)  # noqa: E731  [d, h*k] -> [h, k, d]
    rules: dict[str, _Rule] = {
        "shared.weight": (("token_embedding", "embedding"), _identity),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (
            ("relative_position_bias", "embedding"),
            _identity,
        ),
        "encoder.final_layer_norm.weight": (("final_norm", "scale"), _identity),
    }
    ff_names = ("wi_0", "wi_1") if config.is_gated else ("wi",)
    for i in range(config.num_layers):
        hf, ours = f"encoder.block.{i}.layer", f"layers_{i}"
        for hf_name, name in (("q", "query"), ("k", "key"), ("v", "value")):
            rules[f"{hf}.0.SelfAttention.{hf_name}.weight"] = ((ours, "attention", name, "kernel"), split_heads)
        rules[f"{hf}.0.SelfAttention.o.weight"] = ((ours, "attention", "out", "kernel"), merge_heads)
        rules[f"{hf}.0.layer_norm.weight"] = ((ours, "attention_norm", "scale"), _identity)
        for name in (*ff_names, "wo"):
            rules[f"{hf}.1.DenseReluDense.{name}.weight"] = ((ours, "mlp", name, "kernel"), np.transpose)
        rules[f"{hf}.1.layer_norm.weight"] = ((ours, "mlp_norm", "scale"), _identity)
    return rules


def read_hf_config(checkpoint_dir: str) -> T5EncoderConfig:
    """T5EncoderConfig from `checkpoint_dir`/config.json."""
    path = storage.path(checkpoint_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"No config.json in {checkpoint_dir!r}. Pass a Hugging Face T5 checkpoint directory "
            "(config.json plus model.safetensors), e.g. one written by `save_pretrained`."
        )
    return T5EncoderConfig.from_hf_dict(json.loads(path.read_text()))


def _weight_files(checkpoint_dir: str) -> tuple[list[str], str]:
    """The weight files of a checkpoint directory and their format ("safetensors" or "torch")."""
    for index_name, single_name, fmt in (
        (SAFETENSORS_INDEX, SAFETENSORS, "safetensors"),
        (TORCH_BIN_INDEX, TORCH_BIN, "torch"),
    ):
        index_path = storage.path(checkpoint_dir) / index_name
        if index_path.exists():
            shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
            return [storage.join(checkpoint_dir, s) for s in shards], fmt
        if (storage.path(checkpoint_dir) / single_name).exists():
            return [storage.join(checkpoint_dir, single_name)], fmt
    raise FileNotFoundError(
        f"No weights in {checkpoint_dir!r}: expected {SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN} or "
        f"{TORCH_BIN_INDEX}. Save the model with `save_pretrained(dir)` (safetensors is the default)."
    )


def _iter_safetensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """The tensors of a .safetensors file (local or gs://) in file order, each read by itself
    (the format: u64 little-endian header size N, an N-byte JSON header of
    {name: {dtype, shape, data_offsets: [begin, end]}}, then the data); decoder tensors
    are skipped without being read."""
    with storage.path(path).open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        header.pop("__metadata__", None)
        start = 8 + size
        for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if name.startswith(_DECODER_PREFIXES):
                continue
            if entry["dtype"] not in _SAFETENSORS_DTYPES:
                raise ValueError(
                    f"{path}: tensor {name} has dtype {entry['dtype']}, which the T5 loader does not read."
                )
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            data = f.read(end - begin)
            if len(data) != end - begin:
                raise ValueError(f"{path} is truncated (tensor {name}); download it again.")
            yield name, np.frombuffer(data, _SAFETENSORS_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def _iter_torch_bin(path: str) -> Iterator[tuple[str, np.ndarray]]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{path} is a PyTorch checkpoint, which needs torch to read. Install torch, or convert the "
            "checkpoint to safetensors (`model.save_pretrained(dir)` writes model.safetensors)."
        ) from e
    with storage.path(path).open("rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    for name, tensor in state.items():
        yield name, tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


def iter_hf_tensors(checkpoint_dir: str) -> Iterator[tuple[str, np.ndarray]]:
    """(name, numpy array) for every tensor of the checkpoint, one at a time (bounded host memory)."""
    files, fmt = _weight_files(checkpoint_dir)
    read = _iter_safetensors if fmt == "safetensors" else _iter_torch_bin
    for path in files:
        if not storage.path(path).exists():
            raise FileNotFoundError(f"Checkpoint shard {path} listed in the index is missing; download it again.")
        yield from read(path)


def params_from_hf_tensors(
    tensors: Iterator[tuple[str, np.ndarray]] | dict[str, np.ndarray],
    config: T5EncoderConfig,
    param_dtype: Any = np.float32,
    place: Callable[[tuple[str, ...], np.ndarray], Any] | None = None,
) -> dict[str, Any]:
    """Our T5Encoder params (nested dict of numpy arrays in `param_dtype`) from HF tensors.

    place(path, array): where each parameter goes as soon as it is read (e.g. onto its
    shards on a mesh), so that host memory holds one tensor at a time; default: kept as numpy.
    Raises ValueError listing every missing and unexpected encoder weight, and every shape mismatch.
    """
    rules = hf_to_params_rules(config)
    expected_shapes = param_shapes(config)
    if isinstance(tensors, dict):
        tensors = iter(tensors.items())
    params: dict[str, Any] = {}
    found, unexpected, bad_shapes = set(), [], []
    for name, array in tensors:
        if name == "encoder.embed_tokens.weight":  # tied copy of shared.weight in some checkpoints
            if "shared.weight" in found:
                continue
            name = "shared.weight"
        if name.startswith(_DECODER_PREFIXES):
            continue
        if name not in rules:
            unexpected.append(name)
            continue
        path, transform = rules[name]
        value = np.asarray(transform(np.asarray(array)))
        if value.shape != expected_shapes[path]:
            bad_shapes.append(f"{name}: {tuple(np.shape(array))} does not give {expected_shapes[path]}")
            found.add(name)
            continue
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        value = value.astype(param_dtype)
        node[path[-1]] = value if place is None else place(path, value)
        found.add(name)
    missing = sorted(set(rules) - found, key=_natural_key)
    if missing or unexpected or bad_shapes:
        lines = ["The checkpoint does not match its config.json as a T5 encoder:"]
        if missing:
            lines.append(f"  missing weights ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected weights ({len(unexpected)}): {', '.join(sorted(unexpected, key=_natural_key))}")
        if bad_shapes:
            lines.append(f"  wrong shapes ({len(bad_shapes)}): {'; '.join(bad_shapes)}")
        lines.append("Check that config.json belongs to these weights and that the checkpoint is a T5/mT5/ByT5 model.")
        raise ValueError("\n".join(lines))
    return params


def load_hf_checkpoint(
    checkpoint_dir: str, param_dtype: Any = np.float32, place_for: Callable | None = None
) -> tuple[T5EncoderConfig, dict[str, Any]]:
    """(config, params) of the T5 encoder in a Hugging Face checkpoint directory (local or gs://).
    place_for(config) -> place: see params_from_hf_tensors (e.g. text.encoder.sharded_placer)."""
    config = read_hf_config(checkpoint_dir)
    place = None if place_for is None else place_for(config)
    return config, params_from_hf_tensors(iter_hf_tensors(checkpoint_dir), config, param_dtype, place)


def hf_state_dict(params: dict[str, Any], config: T5EncoderConfig) -> dict[str, np.ndarray]:
    """Inverse of params_from_hf_tensors: HF tensor name -> numpy array (T5EncoderModel layout)."""
    h, k, d = config.num_heads, config.d_kv, config.d_model
    inverse = {
        ("attention", "query"): lambda w: w.reshape(d, h * k).T,
        ("attention", "key"): lambda w: w.reshape(d, h * k).T,
        ("attention", "value"): lambda w: w.reshape(d, h * k).T,
        ("attention", "out"): lambda w: w.reshape(h * k, d).T,
        ("mlp",): np.transpose,
    }
    state = {}
    for name, (path, _) in hf_to_params_rules(config).items():
        value = params
        for key in path:
            value = value[key]
        value = np.asarray(value)
        for prefix, fn in inverse.items():
            if path[1 : 1 + len(prefix)] == prefix:
                value = fn(value)
                break
        state[name] = np.ascontiguousarray(value)
    return state


def save_hf_checkpoint(checkpoint_dir: str, params: dict[str, Any], config: T5EncoderConfig) -> None:
    """Writes config.json + model.safetensors that Hugging Face's T5EncoderModel and our loader read."""
    from safetensors.numpy import save

    storage.write_text(storage.join(checkpoint_dir, "config.json"), json.dumps(config.to_hf_dict(), indent=2))
    storage.write_bytes(
        storage.join(checkpoint_dir, SAFETENSORS), save(hf_state_dict(params, config), metadata={"format": "pt"})
    )


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
