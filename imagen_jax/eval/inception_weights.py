"""The FID Inception's weights: pytorch-fid's file (pt_inception-2015-12-05-6726825d.pth,
the TensorFlow FID graph's weights in torchvision's layout) or the same tensors as
safetensors, to and from our params (inception.py).

torchvision name                      our param
Mixed_5b.branch1x1.conv.weight        Mixed_5b/branch1x1/kernel  [out, in, kh, kw] -> [kh, kw, in, out]
Mixed_5b.branch1x1.bn.weight / .bias  .../scale, .../bias
Mixed_5b.branch1x1.bn.running_mean    .../mean        (running_var -> var)
The 1008-class classifier (fc.*) and batch-norm counters are not used; any other missing or
unexpected tensor is an error that names them.
"""

from __future__ import annotations

import hashlib
import io

import jax
import numpy as np

from imagen_jax import storage
from imagen_jax.eval.inception import param_shapes

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.",)


def _param_path(name: str) -> tuple[str, ...] | None:
    """'Mixed_5b.branch1x1.conv.weight' -> ('Mixed_5b', 'branch1x1', 'kernel'); None if unused."""
    if name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES):
        return None
    *module, layer, tensor = name.split(".")
    if layer == "conv" and tensor == "weight":
        return (*module, "kernel")
    if layer == "bn" and tensor in _BN_NAMES:
        return (*module, _BN_NAMES[tensor])
    return ("?", name)


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
    data = storage.path(path).read_bytes()
    if str(path).endswith(".safetensors"):
        from safetensors.numpy import load

        return load(data)
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"Reading {path!r} (a torch file) needs torch; install it, or convert the file once to safetensors "
            "elsewhere: imagen_jax.eval.inception_weights.save_safetensors(load_inception_params(path), out)."
        ) from None
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() for k, v in state.items()}


def params_from_state_dict(state: dict[str, np.ndarray]) -> dict:
    """torchvision-layout tensors -> our params (float32), checked against the architecture."""
    expected = param_shapes()
    flat_expected = {tuple(k.key for k in path): s.shape for path, s in jax.tree_util.tree_leaves_with_path(expected)}
    params: dict = {}
    unexpected, wrong_shape = [], []
    for name, value in state.items():
        path = _param_path(name)
        if path is None:
            continue
        if path not in flat_expected:
            unexpected.append(name)
            continue
        value = np.asarray(value, np.float32)
        if path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)
        if value.shape != tuple(flat_expected[path]):
            wrong_shape.append(f"{name} {value.shape} (expected {tuple(flat_expected[path])})")
            continue
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    found = {tuple(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    missing = sorted(".".join(p) for p in flat_expected if p not in found)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            "These are not the FID InceptionV3 weights (pytorch-fid's "
            f"{PYTORCH_FID_FILE}): missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shape {wrong_shape[:5]} ({len(wrong_shape)})."
        )
    return params


def load_inception_params(path: str) -> dict:
    """Our params from pytorch-fid's .pth (torch.load(weights_only=True)) or a .safetensors
    holding the same tensors; local or gs://."""
    if not storage.path(path).exists():
        raise FileNotFoundError(
            f"Inception weights {path!r} do not exist. FID uses pytorch-fid's {PYTORCH_FID_FILE} (from its "
            "GitHub release 'fid_weights'); download it once and pass its path."
        )
    return params_from_state_dict(_read_state_dict(path))


def state_dict_from_params(params: dict) -> dict[str, np.ndarray]:
    """Our params -> torchvision-layout float32 tensors (the inverse of params_from_state_dict)."""
    inverse_bn = {ours: theirs for theirs, ours in _BN_NAMES.items()}
    state = {}
    for path, value in jax.tree_util.tree_leaves_with_path(params):
        *module, leaf = (k.key for k in path)
        value = np.asarray(value, np.float32)
        if leaf == "kernel":
            state[".".join([*module, "conv", "weight"])] = value.transpose(3, 2, 0, 1)
        else:
            state[".".join([*module, "bn", inverse_bn[leaf]])] = value
    return state


def save_safetensors(params: dict, path: str) -> str:
    """Write params as a torchvision-layout .safetensors (loadable without torch)."""
    from safetensors.numpy import save

    state = {k: np.ascontiguousarray(v) for k, v in state_dict_from_params(params).items()}
    return storage.write_bytes(path, save(state))


def fingerprint(params: dict) -> str:
    """sha256 (first 16 hex digits) of the params' bytes in a fixed order: which weights
    made a set of reference statistics."""
    digest = hashlib.sha256()
    for path, value in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(value, np.float32)).tobytes())
    return digest.hexdigest()[:16]
