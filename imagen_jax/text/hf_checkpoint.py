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

# How one HF tensor becomes one of our parameters: (our path, layout kind), see ParamView.
_Rule = tuple[tuple[str, ...], str]


def hf_to_params_rules(config: T5EncoderConfig) -> dict[str, _Rule]:
    """HF tensor name -> (our parameter path, layout) for every encoder weight.

    torch Linear weights are [out, in]; ours are [in, out] (attention split into heads):
    "same" (as stored), "transpose" ([out, in] -> [in, out]), "split_heads" ([h*k, d] ->
    [d, h, k]), "merge_heads" ([d, h*k] -> [h, k, d]).
    """
    rules: dict[str, _Rule] = {
        "shared.weight": (("token_embedding", "embedding"), "same"),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (
            ("relative_position_bias", "embedding"),
            "same",
        ),
        "encoder.final_layer_norm.weight": (("final_norm", "scale"), "same"),
    }
    ff_names = ("wi_0", "wi_1") if config.is_gated else ("wi",)
    for i in range(config.num_layers):
        hf, ours = f"encoder.block.{i}.layer", f"layers_{i}"
        for hf_name, name in (("q", "query"), ("k", "key"), ("v", "value")):
            rules[f"{hf}.0.SelfAttention.{hf_name}.weight"] = ((ours, "attention", name, "kernel"), "split_heads")
        rules[f"{hf}.0.SelfAttention.o.weight"] = ((ours, "attention", "out", "kernel"), "merge_heads")
        rules[f"{hf}.0.layer_norm.weight"] = ((ours, "attention_norm", "scale"), "same")
        for name in (*ff_names, "wo"):
            rules[f"{hf}.1.DenseReluDense.{name}.weight"] = ((ours, "mlp", name, "kernel"), "transpose")
        rules[f"{hf}.1.layer_norm.weight"] = ((ours, "mlp_norm", "scale"), "same")
    return rules


class StoredTensor:
    """One checkpoint tensor, read on demand: `rows(begin, end)` reads only those rows of
    the stored (row-major) array; each range is read once (kept while this object lives)."""

    def __init__(self, shape: tuple[int, ...], dtype, read_rows: Callable[[int, int], np.ndarray]):
        self.shape, self.dtype, self._read_rows, self._read = tuple(shape), np.dtype(dtype), read_rows, {}

    @classmethod
    def in_memory(cls, array: np.ndarray) -> StoredTensor:
        array = np.asarray(array)
        return cls(array.shape, array.dtype, lambda begin, end: array[begin:end])

    def rows(self, begin: int, end: int) -> np.ndarray:
        if (begin, end) not in self._read:
            self._read[(begin, end)] = self._read_rows(begin, end)
        return self._read[(begin, end)]


def _bounds(index: slice, size: int) -> tuple[int, int]:
    r = range(size)[index]
    return (r.start, r.stop) if r.step == 1 else (0, size)


class ParamView:
    """One of our parameters as a view of its stored HF tensor: `view[index]` (a tuple of
    slices, as jax.make_array_from_callback asks for a device's shard) reads only the
    stored rows that the shard needs, in `dtype`; np.asarray(view) reads it whole.

    A shard split along the stored tensor's first axis reads just its rows; one split along
    its second axis (e.g. our wo [mlp, embed] split on mlp is stored [embed, mlp]) reads
    whole rows, each row range once per process."""

    def __init__(self, stored: StoredTensor, layout: str, config: T5EncoderConfig, dtype):
        self.stored, self.layout, self.dtype = stored, layout, np.dtype(dtype)
        h, k = config.num_heads, config.d_kv
        self._hk = (h, k)
        rows, cols = (stored.shape + (1, 1))[:2]
        self.shape = {
            "same": stored.shape,
            "transpose": stored.shape[::-1],
            "split_heads": (cols, h, k) if rows == h * k else (cols, rows),
            "merge_heads": (h, k, rows) if cols == h * k else (cols, rows),
        }[layout]
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (self.ndim - len(tuple(index)))
        h, k = self._hk
        if self.layout == "same":
            begin, end = _bounds(index[0], self.shape[0])
            value = self.stored.rows(begin, end)[(slice(None),) + index[1:]]
        elif self.layout == "transpose":  # ours [a, b] = stored [b, a].T
            begin, end = _bounds(index[1], self.shape[1])
            value = self.stored.rows(begin, end)[:, index[0]].T
        elif self.layout == "split_heads":  # ours [d, h, k] = stored [h*k, d].T, heads major
            begin, end = _bounds(index[1], h)
            value = self.stored.rows(begin * k, end * k)[:, index[0]].T
            value = value.reshape(value.shape[0], end - begin, k)[:, :, index[2]]
        else:  # merge_heads: ours [h, k, d] = stored [d, h*k].T
            begin, end = _bounds(index[2], self.shape[2])
            value = self.stored.rows(begin, end).T.reshape(h, k, end - begin)[index[0], index[1]]
        return np.ascontiguousarray(value.astype(self.dtype))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        value = self[(slice(None),) * self.ndim]
        return value if dtype is None else value.astype(dtype)


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


def _iter_safetensors(path: str) -> Iterator[tuple[str, StoredTensor]]:
    """The tensors of a .safetensors file (local or gs://) in file order, each a
    StoredTensor that reads its rows with ranged reads when asked (the format: u64
    little-endian header size N, an N-byte JSON header of {name: {dtype, shape,
    data_offsets: [begin, end]}}, then the data, row-major); decoder tensors are skipped."""
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
            dtype, shape = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]]), tuple(entry["shape"])
            begin = start + entry["data_offsets"][0]
            row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            if entry["data_offsets"][1] - entry["data_offsets"][0] != row_bytes * (shape[0] if shape else 1):
                raise ValueError(f"{path}: tensor {name}'s size does not match its shape {shape}; download it again.")

            def read_rows(first, last, f=f, begin=begin, row_bytes=row_bytes, dtype=dtype, shape=shape, name=name):
                f.seek(begin + first * row_bytes)
                data = f.read((last - first) * row_bytes if shape else dtype.itemsize)
                if len(data) != ((last - first) * row_bytes if shape else dtype.itemsize):
                    raise ValueError(f"{path} is truncated (tensor {name}); download it again.")
                return np.frombuffer(data, dtype).reshape(((last - first),) + shape[1:] if shape else ())

            yield name, StoredTensor(shape, dtype, read_rows)


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
        yield name, StoredTensor.in_memory(tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy())


def iter_hf_tensors(checkpoint_dir: str) -> Iterator[tuple[str, StoredTensor]]:
    """(name, StoredTensor) for every encoder tensor of the checkpoint, one at a time, read
    on demand (bounded host memory)."""
    files, fmt = _weight_files(checkpoint_dir)
    read = _iter_safetensors if fmt == "safetensors" else _iter_torch_bin
    for path in files:
        if not storage.path(path).exists():
            raise FileNotFoundError(f"Checkpoint shard {path} listed in the index is missing; download it again.")
        yield from read(path)


def params_from_hf_tensors(
    tensors: Iterator[tuple[str, StoredTensor | np.ndarray]] | dict[str, np.ndarray],
    config: T5EncoderConfig,
    param_dtype: Any = np.float32,
    place: Callable[[tuple[str, ...], ParamView], Any] | None = None,
) -> dict[str, Any]:
    """Our T5Encoder params (nested dict of numpy arrays in `param_dtype`) from HF tensors.

    place(path, view): where each parameter goes as soon as it is met (e.g. onto its shards
    on a mesh), reading from its ParamView only what it needs (view[index]: the rows of one
    shard), so that host memory holds at most one tensor at a time; default: read whole,
    kept as numpy. Raises ValueError listing every missing and unexpected encoder weight,
    and every shape mismatch.
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
        path, layout = rules[name]
        stored = array if isinstance(array, StoredTensor) else StoredTensor.in_memory(array)
        view = ParamView(stored, layout, config, param_dtype)
        if view.shape != expected_shapes[path]:
            bad_shapes.append(f"{name}: {stored.shape} does not give {expected_shapes[path]}")
            found.add(name)
            continue
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.asarray(view) if place is None else place(path, view)
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
