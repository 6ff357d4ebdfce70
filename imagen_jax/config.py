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
    return config


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
# Fields of the `diffusion` section older config.json files may lack, at their values then.
_DIFFUSION_DEFAULTS = dict(prediction="eps", aug_schedule={"kind": "cosine"})


def is_super_resolution(config) -> bool:
    """Whether a stage config (ConfigDict, or a workdir's config.json dict) is an SR stage:
    the one reading of `stage` ("base" | "sr"; base when absent)."""
    return config.get("stage", "base") == "sr"


def upgrade_saved_config(saved: dict) -> dict:
    """A stage config as a dict of today's fields: a workdir's config.json (the one reader of
    older workdirs; they still resume and sample) or a ConfigDict. Fields added since fill in
    with their defaults (SAMPLING_DEFAULTS, the diffusion prediction and augmentation
    schedule). Older versions saved the lr schedule's horizon as optimizer.total_steps beside
    train.steps; it is now train.steps itself, so an equal copy is dropped (an unequal one
    stays and shows as a config difference: that run decayed over another horizon)."""
    saved = to_dict(saved) if isinstance(saved, ml_collections.ConfigDict) else json.loads(json.dumps(saved))
    for key, value in SAMPLING_DEFAULTS.items():
        saved.setdefault("sampling", {}).setdefault(key, value)
    for key, value in _DIFFUSION_DEFAULTS.items():
        saved.setdefault("diffusion", {}).setdefault(key, value)
    optimizer, train = saved.get("optimizer") or {}, saved.get("train") or {}
    if "total_steps" in optimizer and optimizer["total_steps"] == train.get("steps"):
        del optimizer["total_steps"]
    return saved


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
