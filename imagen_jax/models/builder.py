"""Build a UNet from its config section, and the dummy inputs / abstract parameters a
preset implies (no memory: jax.eval_shape)."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from imagen_jax.config import is_super_resolution
from imagen_jax.models.efficient_unet import EfficientUNet
from imagen_jax.models.unet import UNet
from imagen_jax.run_once import run_once

FAMILIES = {"unet": UNet, "efficient_unet": EfficientUNet}
_NOT_FIELDS = ("parent", "name")


def _model_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in _NOT_FIELDS]


def build_model(config: ml_collections.ConfigDict | dict) -> nn.Module:
    """A stage config (its `model` section and `low_res_resolution`) -> UNet | EfficientUNet.
    model.family picks the class; every other key of `model` is a field of it (lists become
    tuples; dtype / param_dtype are names such as "bfloat16"). The low-res conditioning is
    the stage's: on exactly when it is an SR stage (config.is_super_resolution)."""
    model_config = config["model"]
    fields = dict(model_config.to_dict() if isinstance(model_config, ml_collections.ConfigDict) else model_config)
    if "low_res_conditioning" in fields:
        raise ValueError(
            "model.low_res_conditioning is not a config field: an SR stage is one with "
            "low_res_resolution > 0 (0: a base stage); remove it from the model section."
        )
    fields["low_res_conditioning"] = is_super_resolution(config)
    family = fields.pop("family", None)
    if family not in FAMILIES:
        raise ValueError(f"model.family must be one of {sorted(FAMILIES)}, got {family!r}")
    cls = FAMILIES[family]
    allowed = _model_fields(cls)
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(f"unknown model config field(s) {unknown} for family {family!r}; valid fields: {allowed}")
    for key in ("dtype", "param_dtype"):
        if key in fields:
            fields[key] = jnp.dtype(fields[key])
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return cls(**fields)


def dummy_inputs(
    config: ml_collections.ConfigDict, batch: int = 1, text_length: int = 8, *, abstract: bool = False
) -> dict[str, Any]:
    """Zero inputs (or jax.ShapeDtypeStruct when `abstract`) for `model.apply` / `init`:
    keys z, logsnr, text_embedding, text_mask (+ low_res, aug_logsnr for SR)."""
    make = (lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)) if abstract else jnp.zeros
    res = config.resolution
    inputs = dict(
        z=make((batch, res, res, config.model.get("out_channels", 3)), jnp.float32),
        logsnr=make((batch,), jnp.float32),
        text_embedding=make((batch, text_length, config.model.text_dim), jnp.float32),
        text_mask=make((batch, text_length), jnp.bool_),
    )
    if is_super_resolution(config):
        low = config.low_res_resolution
        inputs["low_res"] = make((batch, low, low, 3), jnp.float32)
        inputs["aug_logsnr"] = make((batch,), jnp.float32)
    return inputs


def init_params(model: nn.Module, config: ml_collections.ConfigDict, rng) -> Any:
    """Initial parameters as plain arrays (the logical axis boxes removed)."""
    variables = run_once(lambda rng, inputs: model.init(rng, **inputs), rng, dummy_inputs(config))
    return nn.meta.unbox(variables["params"])


def abstract_params(model: nn.Module, config: ml_collections.ConfigDict) -> Any:
    """The parameter tree as boxed jax.ShapeDtypeStruct leaves (nn.LogicallyPartitioned),
    via jax.eval_shape: no memory. nn.get_partition_spec() of it gives the logical specs."""
    inputs = dummy_inputs(config, abstract=True)
    variables = jax.eval_shape(lambda rng, inputs: model.init(rng, **inputs), jax.random.key(0), inputs)
    return variables["params"]


def count_params(config: ml_collections.ConfigDict) -> int:
    """Number of parameters of config.model at config.resolution, by jax.eval_shape."""
    params = nn.meta.unbox(abstract_params(build_model(config), config))
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
