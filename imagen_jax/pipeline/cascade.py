"""The cascade: text -> base stage -> SR stage(s), assembled from trained stage workdirs.

    cascade = Cascade.from_workdirs(["runs/base", "runs/sr"])
    out = cascade.sample(["a red circle"], seed=0)      # out.images[-1]: uint8 [1, 64, 64, 3]

A stage workdir is what `imagen-jax train` writes: config.json and checkpoints/<step>/, local
or gs://.
Only the EMA params of the checkpoint are read (design.md §3: samples use the EMA). Every stage
samples with its `sampling` section (sampler, steps, threshold, guidance weight, SR aug
level); `stage_settings` change them per stage.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from imagen_jax import storage
from imagen_jax.config import apply_overrides, to_dict, upgrade_saved_config
from imagen_jax.images import to_uint8
from imagen_jax.pipeline.stage_sampler import StageConfig, sample_stage


class WorkdirError(ValueError):
    """A stage workdir that is missing, incomplete or does not fit the cascade."""


def read_stage_config(workdir: str) -> dict:
    """The config.json a training run wrote in `workdir` (local or gs://)."""
    path = storage.path(workdir) / "config.json"
    if not path.exists():
        if not path.parent.exists():
            raise WorkdirError(
                f"Stage workdir {workdir!r} does not exist; pass the --workdir of an `imagen-jax train` run."
            )
        raise WorkdirError(f"{workdir!r} has no config.json: it is not an `imagen-jax train` workdir.")
    return upgrade_saved_config(json.loads(path.read_text()))


def load_ema_params(workdir: str, config: dict, step: int | None = None, sharding=None):
    """(EMA params, step) from the latest (or the given) checkpoint of `workdir`. Only the
    EMA subtree is read from disk; it is placed with `sharding` (default: replicated on
    all local devices)."""
    import orbax.checkpoint as ocp

    from imagen_jax.models import abstract_params, build_model

    directory = storage.path(workdir) / "checkpoints"
    steps = ocp.utils.checkpoint_steps(directory) if directory.exists() else []
    if not steps:
        raise WorkdirError(
            f"{workdir!r} has no checkpoint yet; train the stage first (imagen-jax train --workdir {workdir})."
        )
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise WorkdirError(f"{workdir!r} has no checkpoint at step {step}; it has {sorted(steps)}.")
    shapes = nn.meta.unbox(abstract_params(build_model(config), ml_collections.ConfigDict(config)))
    sharding = sharding or replicated(local_mesh())
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(
            directory / str(step) / "state",
            args=ocp.args.PyTreeRestore(
                {"ema_params": target},
                restore_args={"ema_params": ocp.checkpoint_utils.construct_restore_args(target)},
                partial_restore=True,
            ),
        )
    return restored["ema_params"], step


def local_mesh(devices=None) -> Mesh:
    """A 1-D mesh ("batch",) over `devices` (default: this process's devices)."""
    return Mesh(np.asarray(devices if devices is not None else jax.local_devices()), ("batch",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


@dataclasses.dataclass
class CascadeOutput:
    """prompts [N]; images[i]: stage i's output, uint8 [N, S_i, S_i, 3]; final = images[-1]."""

    prompts: list[str]
    images: list[np.ndarray]

    @property
    def final(self) -> np.ndarray:
        return self.images[-1]


class Cascade:
    """A text encoder and a base stage followed by any number of SR stages.

    stages[i]: StageConfig; params[i]: its (EMA) params. `sample` runs text -> stage 0 ->
    stage 1 -> ... on batches of prompts; each stage is one compiled sampler program.
    """

    def __init__(
        self,
        text_encoder,
        stages: Sequence[StageConfig],
        params: Sequence[Any],
        names: Sequence[str] = (),
        devices: Sequence[Any] | None = None,
    ):
        if not stages:
            raise ValueError("A cascade needs at least one stage (a base stage).")
        if len(stages) != len(params):
            raise ValueError(f"{len(stages)} stages but {len(params)} param trees.")
        if stages[0].is_super_resolution:
            raise ValueError("The first stage of a cascade must be a base (text -> image) stage, not an SR stage.")
        for i, (prev, stage) in enumerate(zip(stages, stages[1:]), start=1):
            if not stage.is_super_resolution:
                raise ValueError(f"Stage {i} is a base stage; every stage after the first must be super-resolution.")
            if prev.image_size != stage.low_res_size:
                raise ValueError(
                    f"Stage {i} was trained on {stage.low_res_size} px inputs but stage {i - 1} makes "
                    f"{prev.image_size} px images; order the workdirs by resolution."
                )
        self.text_encoder = text_encoder
        self.stages = list(stages)
        self.mesh = local_mesh(devices)
        self.params = [jax.device_put(p, replicated(self.mesh)) for p in params]
        self.names = list(names) or [f"stage{i}" for i in range(len(stages))]

    @classmethod
    def from_workdirs(
        cls,
        workdirs: Sequence[str],
        *,
        text_encoder=None,
        steps: Sequence[int | None] | None = None,
        stage_settings: Sequence[dict] | None = None,
        config_overrides: Sequence[Sequence[str]] | None = None,
        devices: Sequence[Any] | None = None,
    ) -> Cascade:
        """Stages from `imagen-jax train` workdirs, base first. The text encoder is the one the
        stages were trained with (config.text.encoder, the same for all), unless given.
        stage_settings[i]: StageConfig field changes for stage i (e.g. {"guidance_weight": 5.0}).
        config_overrides[i]: overrides of stage i's saved config before it is read, as in
        training (e.g. ["sampling.num_steps=64"]; `imagen-jax sample --config.I.sampling...`).
        devices: where to sample (default: all local devices; a batch that divides their number
        is split over them, others run replicated)."""
        from imagen_jax.text.encoder import load_text_encoder

        if not workdirs:
            raise WorkdirError("Pass at least one stage workdir (the base stage first).")
        configs = [read_stage_config(w) for w in workdirs]
        if config_overrides is not None:
            if len(config_overrides) != len(workdirs):
                raise ValueError(f"Give one config_overrides entry per workdir ({len(workdirs)}).")
            configs = [
                to_dict(apply_overrides(ml_collections.ConfigDict(c), items)) if items else c
                for c, items in zip(configs, config_overrides)
            ]
        encoders = {c["text"]["encoder"] for c in configs}
        lengths = {c["data"]["max_text_length"] for c in configs}
        if len(encoders) > 1:
            raise WorkdirError(
                f"The stages were trained with different text encoders {sorted(encoders)}; a cascade needs one."
            )
        stage_settings = list(stage_settings or [{}] * len(workdirs))
        steps = list(steps or [None] * len(workdirs))
        if len(stage_settings) != len(workdirs) or len(steps) != len(workdirs):
            raise ValueError(f"Give one stage_settings / steps entry per workdir ({len(workdirs)}).")
        stages, params, names = [], [], []
        for workdir, config, changes, step in zip(workdirs, configs, stage_settings, steps):
            stages.append(StageConfig.from_config(config, **changes))
            params.append(load_ema_params(workdir, config, step, replicated(local_mesh(devices)))[0])
            names.append(storage.name(workdir))
        if text_encoder is None:
            text_encoder = load_text_encoder(encoders.pop(), max_length=max(lengths))
        dims = {c["model"]["text_dim"] for c in configs}
        if dims != {text_encoder.dim}:
            raise WorkdirError(
                f"The text encoder makes {text_encoder.dim}-wide embeddings; the stages take {sorted(dims)}."
            )
        return cls(text_encoder, stages, params, names, devices)

    def sample(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
        stage_settings: Sequence[dict] | None = None,
    ) -> CascadeOutput:
        """Images for `prompts`, every stage's output kept (CascadeOutput).

        Deterministic in (prompts, seed, batch_size): batch b of stage i draws its noise from
        fold_in(fold_in(key(seed), i), b); the last batch is padded to the batch size, so
        each stage compiles once. stage_settings[i] changes stage i's StageConfig for
        this call only (e.g. [{"guidance_weight": 8.0}, {"aug_level": 0.2}]).
        """
        from tqdm.auto import tqdm

        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError("Pass a non-empty list of non-empty prompt strings.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        stages = self.stages
        if stage_settings is not None:
            if len(stage_settings) != len(stages):
                raise ValueError(f"Give one stage_settings dict per stage ({len(stages)}).")
            stages = [dataclasses.replace(s, **c) for s, c in zip(stages, stage_settings)]
        batch_size = min(batch_size, len(prompts))
        embedding, mask = self.encode(prompts)
        root = jax.random.key(seed)
        outputs, previous = [], None
        for i, stage in enumerate(stages):
            desc = f"stage {i + 1}/{len(stages)} {self.names[i]} ({stage.image_size} px)"
            with tqdm(total=len(prompts), desc=desc, unit="img", disable=not progress) as bar:
                previous = self.run_stage_batched(
                    i,
                    embedding,
                    mask,
                    jax.random.fold_in(root, i),
                    batch_size=batch_size,
                    low_res=previous,
                    config=stage,
                    on_batch=bar.update,
                )
            outputs.append(to_uint8(previous))
        return CascadeOutput(prompts, outputs)

    def encode(self, prompts: Sequence[str], chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Text embeddings [N, L, D] float32 and mask [N, L] bool for `prompts` (host arrays)."""
        parts = [self.text_encoder.encode(list(prompts[i : i + chunk])) for i in range(0, len(prompts), chunk)]
        return (np.concatenate([np.asarray(e) for e, _ in parts]), np.concatenate([np.asarray(m) for _, m in parts]))

    def run_stage(
        self, index: int, text_embedding, text_mask, key, *, low_res=None, config: StageConfig | None = None
    ) -> np.ndarray:
        """Stage `index` on one batch: float32 [B, S, S, 3] in [-1, 1] (host array).
        `config` replaces the stage's StageConfig (e.g. another guidance weight)."""
        put = functools.partial(self._put, batch=len(text_embedding))
        x = sample_stage(
            self.params[index],
            put(text_embedding),
            put(text_mask),
            key,
            config=config or self.stages[index],
            low_res=None if low_res is None else put(low_res),
        )
        return np.asarray(x)

    def run_stage_batched(
        self,
        index: int,
        text_embedding,
        text_mask,
        key,
        *,
        batch_size: int,
        low_res=None,
        config: StageConfig | None = None,
        on_batch=None,
    ) -> np.ndarray:
        """run_stage over N inputs in batches of `batch_size`; batch b uses fold_in(key, b).
        The last batch is padded to the batch size (so one compiled program serves all) and
        cut back; `on_batch(n)` is called after each batch with its number of real images."""
        n = len(text_embedding)
        batch_size = min(batch_size, n)
        outputs = []
        for b, start in enumerate(range(0, n, batch_size)):
            rows = slice(start, start + batch_size)
            parts = [text_embedding[rows], text_mask[rows]] + ([] if low_res is None else [low_res[rows]])
            real = len(parts[0])
            parts = [np.concatenate([p, np.repeat(p[-1:], batch_size - real, axis=0)]) for p in parts]
            x = self.run_stage(
                index,
                parts[0],
                parts[1],
                jax.random.fold_in(key, b),
                low_res=parts[2] if low_res is not None else None,
                config=config,
            )
            outputs.append(x[:real])
            if on_batch is not None:
                on_batch(real)
        return np.concatenate(outputs)

    def _put(self, array: np.ndarray, batch: int) -> jax.Array:
        """On the cascade's devices: split over the batch when it divides, else replicated."""
        shards = self.mesh.devices.size
        spec = PartitionSpec("batch") if batch % shards == 0 else PartitionSpec()
        return jax.device_put(array, NamedSharding(self.mesh, spec))
