"""Experiment configs: Python files in configs/ with `get_config()` returning an
ml_collections ConfigDict (design.md §11). Code reads configs; nothing writes them
except the run's saved copy (<workdir>/config.json).

`load_config("configs/shapes_base32.py")`, or with an argument `"configs/x.py:arg"`,
then `apply_overrides(config, ["train.steps=100", "optimizer.name=adam"])`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys

import ml_collections


def load_config(spec) -> ml_collections.ConfigDict:
    """Load `path[:arg]`: runs the file's get_config(arg) (get_config() without arg)."""
    path, _, arg = str(spec).partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found; pass --config configs/<name>.py (see configs/)")
    name = f"_imagen_jax_config_{abs(hash(os.path.abspath(path)))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    config_dir = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, config_dir)  # config files may import siblings (e.g. data_shapes)
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.path.remove(config_dir)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} defines no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
    _refuse_retired_fields(config, path)
    return config


# Fields that config files set beside their source in older versions, and what replaced them.
_RETIRED_FIELDS = {
    "stage": "low_res_resolution (0: a base stage; else the side of the SR stage's low-res input)",
    "model.low_res_conditioning": "low_res_resolution (the model conditions on a low-res image exactly in SR stages)",
    "optimizer.total_steps": "train.steps (the lr schedule decays over the whole run)",
    "data.image_size": "data.resize_to (0: the stage's resolution)",
    "data.crop_size": "resolution (the crop is the stage's training size)",
    "data.low_res_size": "low_res_resolution",
    "data.batch_size_per_host": "train.batch_size (the global batch; each host reads its share)",
}


def _refuse_retired_fields(config, path: str) -> None:
    """One clear error for a config file written for an older version (its workdirs' saved
    config.json still load: upgrade_saved_config)."""
    for key, replacement in _RETIRED_FIELDS.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if hasattr(node, "get") else None
        if hasattr(node, "get") and leaf in node:
            raise ValueError(f"config file {path!r} sets {key}, which is no longer a field: use {replacement}.")


def _parse_value(text: str, current):
    """Parse an override value to the type of the field it replaces; "None" turns an
    optional float field off (e.g. diffusion.min_snr_gamma=None)."""
    if isinstance(current, float) and text.strip() == "None":
        return None
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """Apply ["a.b=value", ...] in place; unknown keys are an error that lists the valid ones."""
    for item in overrides or ():
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like --config.{item}=VALUE")
        key = key.removeprefix("--").removeprefix("config.")
        *parents, leaf = key.split(".")
        node = config
        for i, part in enumerate(parents):
            if part not in node:
                raise ValueError(f"unknown config key {'.'.join(parents[: i + 1])!r}; valid: {sorted(node.keys())}")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"unknown config key {key!r}; valid keys here: {sorted(node.keys())}")
        current = node[leaf]
        try:
            value = _parse_value(text, current)
        except ValueError as e:
            raise ValueError(f"bad value for config.{key}: {e}") from None
        with node.ignore_type():
            node[leaf] = value
    return config


# A stage's `sampling` section, in one place: configs/stage_defaults.py builds every preset's
# section from it, and upgrade_saved_config fills in what an older config.json lacks.
# (SamplerConfig's own defaults are the library's, for direct use of diffusion.sample.)
SAMPLING_DEFAULTS = dict(
    sampler="dpm_solver_pp_2m",
    num_steps=32,
    threshold="dynamic",
    quantile=0.995,  # dynamic thresholding's percentile p (design.md §3)
    gamma=0.0,  # ancestral: posterior (0) .. transition (1) variance
    eta=0.0,  # DDIM: 0 deterministic
    guidance_weight=3.0,
    aug_level=0.0,  # SR stages: noise-conditioning level of the low-res input (0 = clean)
    image_size=0,  # 0: the training resolution (an SR stage may sample larger)
    start_logsnr=None,
    guidance_logsnr_min=None,
    guidance_logsnr_max=None,
)
# In-loop evaluation (imagen_jax/train/in_loop_eval.py): every `every` steps (0 = never),
# `num_images` samples of the data split's first captions (a multiple of the device count),
# FID against `reference_images` images of `reference_split` ('' = data.split) with the
# Inception weights file `inception_weights`, CLIP score with the checkpoint `clip` ('' = off).
EVAL_DEFAULTS = dict(
    every=0,
    num_images=64,
    batch_size=64,
    inception_weights="",
    clip="",
    reference_split="",
    reference_images=10_000,
)
# Fields of the `diffusion` section older config.json files may lack, at their values then.
_DIFFUSION_DEFAULTS = dict(prediction="eps", aug_schedule={"kind": "cosine"})


def is_super_resolution(config) -> bool:
    """Whether a stage config (ConfigDict, or a workdir's config.json dict) is an SR stage: the
    one switch is `low_res_resolution` (the side of the low-res input it is trained on; 0 for
    a base stage). The model's low-res conditioning and the data's low-res image follow it."""
    return int(config.get("low_res_resolution") or 0) > 0


def upgrade_saved_config(saved: dict) -> dict:
    """A stage config as a dict of today's fields: a workdir's config.json (the one reader of
    older workdirs; they still resume and sample) or a ConfigDict. Fields added since fill in
    with their defaults (SAMPLING_DEFAULTS, EVAL_DEFAULTS, the diffusion prediction and augmentation
    schedule). Values older versions set beside their source are dropped when they agree with
    it (an unequal one stays and shows as a config difference): optimizer.total_steps
    (train.steps), stage and model.low_res_conditioning (low_res_resolution), data.crop_size
    (resolution), data.low_res_size (low_res_resolution), data.batch_size_per_host (the
    trainer always used train.batch_size); data.image_size becomes data.resize_to (0 when it
    is the resolution)."""
    saved = to_dict(saved) if isinstance(saved, ml_collections.ConfigDict) else json.loads(json.dumps(saved))
    for key, value in SAMPLING_DEFAULTS.items():
        saved.setdefault("sampling", {}).setdefault(key, value)
    for key, value in _DIFFUSION_DEFAULTS.items():
        saved.setdefault("diffusion", {}).setdefault(key, value)
    for key, value in EVAL_DEFAULTS.items():
        saved.setdefault("eval", {}).setdefault(key, value)
    optimizer, train = saved.get("optimizer") or {}, saved.get("train") or {}
    if "total_steps" in optimizer and optimizer["total_steps"] == train.get("steps"):
        del optimizer["total_steps"]
    if "resolution" in saved:
        _upgrade_stage_switch(saved)
        _upgrade_data_sizes(saved)
    return saved


def _drop_if(section: dict, key: str, value) -> None:
    if key in section and section[key] == value:
        del section[key]


def _upgrade_stage_switch(saved: dict) -> None:
    """`stage: base | sr` (older configs) -> low_res_resolution alone (0: base)."""
    stage = saved.pop("stage", None)
    if stage == "base":
        saved["low_res_resolution"] = 0  # a base stage ignored it
    elif stage == "sr" and not is_super_resolution(saved):
        saved["stage"] = stage  # an SR stage without a low-res size: shows as a difference
    _drop_if(saved.get("model") or {}, "low_res_conditioning", is_super_resolution(saved))


def _upgrade_data_sizes(saved: dict) -> None:
    data = saved.get("data")
    if not isinstance(data, dict):
        return
    resolution = saved["resolution"]
    if "image_size" in data and "resize_to" not in data:
        data["resize_to"] = 0 if data["image_size"] == resolution else data["image_size"]
        if not data.get("crop_size"):
            data["crop_size"] = data["image_size"]
        del data["image_size"]
    _drop_if(data, "crop_size", resolution)
    _drop_if(data, "low_res_size", int(saved.get("low_res_resolution") or 0))
    data.pop("batch_size_per_host", None)


def to_dict(config) -> dict:
    """A JSON-compatible plain dict (tuples become lists) of a ConfigDict."""
    return json.loads(config.to_json_best_effort() if hasattr(config, "to_json_best_effort") else json.dumps(config))


def config_diff(saved: dict, given: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two config dicts ('a.b: 1 -> 2')."""
    lines = []
    for key in sorted(set(saved) | set(given)):
        path = f"{prefix}{key}"
        a, b = saved.get(key, "<absent>"), given.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_diff(a, b, path + ".")
        elif a != b:
            lines.append(f"{path}: {a!r} -> {b!r}")
    return lines
