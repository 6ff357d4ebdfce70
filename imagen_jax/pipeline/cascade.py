"""The cascade: text -> base stage -> SR stage(s), assembled from trained stage workdirs.

    cascade = Cascade.from_workdirs(["runs/base", "runs/sr"])
    out = cascade.sample(["a red circle"], seed=0)      # out.images[-1]: uint8 [1, 64, 64, 3]
    for batch in cascade.sample_batches(prompts, seed=0, batch_size=64): ...   # streaming

A stage workdir is what `imagen-jax train` writes: config.json and checkpoints/<step>/, local
or gs://. Only the EMA params of the checkpoint are read (design.md §3: samples use the EMA),
placed on a (data, fsdp) mesh over every device of every process by the training's logical
rules (FSDP-sharded params: the paper cascade does not fit replicated on a chip). Each
global batch is split over the devices; each process encodes and receives only the rows its
devices hold (batch_rows.py), so hosts share the prompt list. Every stage samples with its
`sampling` section (sampler, steps, threshold, guidance weight, SR aug level, and its output
size: an SR stage may sample larger than its training crop); `stage_settings` change them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from imagen_jax import storage
from imagen_jax.config import apply_overrides, to_dict
from imagen_jax.data.image_ops import downsample, to_signed_unit
from imagen_jax.diffusion.editing import Repaint
from imagen_jax.images import to_uint8
from imagen_jax.parallel import DEFAULT_RULES, activation_sharding, make_mesh
from imagen_jax.pipeline.batch_rows import host_rows, local_rows, rows_sharding, to_global
from imagen_jax.pipeline.stage_params import WorkdirError, load_ema_params, read_stage_config
from imagen_jax.pipeline.stage_sampler import StageConfig, edit_stage, sample_stage


@dataclasses.dataclass
class CascadeOutput:
    """prompts [N]; images[i]: stage i's output, uint8 [N, S_i, S_i, 3]; final = images[-1]."""

    prompts: list[str]
    images: list[np.ndarray]

    @property
    def final(self) -> np.ndarray:
        return self.images[-1]


@dataclasses.dataclass
class SampledBatch:
    """One global batch, this process's part: `indices` [r] into the prompt list (padding
    rows left out), images[i]: stage i's uint8 [r, S_i, S_i, 3] for them."""

    number: int
    indices: np.ndarray
    images: list[np.ndarray]


@dataclasses.dataclass
class _Edits:
    """What `Cascade.edit_batches` starts from: uint8 images [N, H, W, 3], masks [N, H, W]
    (nonzero = generate) or None, and where and how editing applies."""

    images: np.ndarray
    masks: np.ndarray | None
    strength: float
    repaint: Repaint
    start_stage: int

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"images must be uint8 [N, S, S, 3] (square), got shape {self.images.shape}.")
        if self.masks is not None and self.masks.shape != self.images.shape[:3]:
            raise ValueError(
                f"masks must be [N, H, W] like the images {self.images.shape[:3]}, got {self.masks.shape}."
            )
        if not 0.0 < float(self.strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}.")

    def edits_stage(self, index: int) -> bool:
        """Inpainting: every stage from the first; image-to-image: the first stage only."""
        return self.masks is not None or (index == self.start_stage and self.strength < 1.0)

    def images_at(self, size: int, indices: np.ndarray) -> np.ndarray:
        """float32 [r, size, size, 3] in [-1, 1] of the rows `indices` (antialiased bicubic)."""
        return np.stack([to_signed_unit(downsample(self.images[i], size)) for i in indices])

    def masks_at(self, size: int, indices: np.ndarray) -> np.ndarray:
        """float32 [r, size, size, 1] in {0, 1}: 1 where any part of the pixel is to be generated."""
        out = []
        for i in indices:
            generate = np.where(self.masks[i] > 0, 255, 0).astype(np.uint8)
            area = downsample(np.repeat(generate[..., None], 3, axis=-1), size, method="bilinear")[..., :1]
            out.append((area > 0).astype(np.float32))
        return np.stack(out)


def _check_order(stages: Sequence[StageConfig]) -> None:
    if not stages:
        raise ValueError("A cascade needs at least one stage (a base stage).")
    if stages[0].is_super_resolution:
        raise ValueError("The first stage of a cascade must be a base (text -> image) stage, not an SR stage.")
    for i, (prev, stage) in enumerate(zip(stages, stages[1:]), start=1):
        if not stage.is_super_resolution:
            raise ValueError(f"Stage {i} is a base stage; every stage after the first must be super-resolution.")
        if prev.image_size != stage.low_res_size:
            raise ValueError(
                f"Stage {i} samples from {stage.low_res_size} px inputs but stage {i - 1} makes "
                f"{prev.image_size} px images; order the workdirs by resolution, or set the SR stage's "
                "output size with --config.STAGE.sampling.image_size (its input size follows from it)."
            )


class Cascade:
    """A text encoder and a base stage followed by any number of SR stages.

    stages[i]: StageConfig; params[i]: its (EMA) params (arrays placed on `mesh` are kept as
    they are; others are replicated on it). Each stage is one compiled sampler program.
    mesh: a parallel.make_mesh mesh (default: every device of every process, fsdp).
    """

    def __init__(
        self,
        text_encoder,
        stages: Sequence[StageConfig],
        params: Sequence[Any],
        names: Sequence[str] = (),
        mesh: Mesh | None = None,
        rules=DEFAULT_RULES,
    ):
        _check_order(stages)
        if len(stages) != len(params):
            raise ValueError(f"{len(stages)} stages but {len(params)} param trees.")
        self.text_encoder = text_encoder
        self.stages = list(stages)
        self.mesh = mesh if mesh is not None else make_mesh(data=1, fsdp=-1)
        self.rules = rules
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def place(x):
            on_mesh = isinstance(getattr(x, "sharding", None), NamedSharding) and x.sharding.mesh == self.mesh
            return x if on_mesh else jax.device_put(x, replicated)

        self.params = [jax.tree.map(place, p) for p in params]
        self.names = list(names) or [f"stage{i}" for i in range(len(stages))]
        self.checkpoint_steps: list[int | None] = [None] * len(stages)  # from_workdirs: the steps read

    @classmethod
    def from_workdirs(
        cls,
        workdirs: Sequence[str],
        *,
        text_encoder=None,
        steps: Sequence[int | None] | None = None,
        stage_settings: Sequence[dict] | None = None,
        config_overrides: Sequence[Sequence[str]] | None = None,
        mesh: Mesh | None = None,
        param_dtype=None,
    ) -> Cascade:
        """Stages from `imagen-jax train` workdirs, base first. The text encoder is the one the
        stages were trained with (config.text.encoder, the same for all), unless given.
        stage_settings[i]: StageConfig field changes for stage i (e.g. {"guidance_weight": 5.0}).
        config_overrides[i]: overrides of stage i's saved config before it is read, as in
        training (e.g. ["sampling.num_steps=64"]; `imagen-jax sample --config.I.sampling...`).
        mesh: where to sample (default: every device, params FSDP-sharded by the training's
        rules; the text encoder's too, each tensor placed as it is read); param_dtype: cast the
        stages' params for sampling (e.g. jnp.bfloat16)."""
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
        stages = [StageConfig.from_config(c, **changes) for c, changes in zip(configs, stage_settings)]
        _check_order(stages)  # before any checkpoint is read
        mesh = mesh if mesh is not None else make_mesh(data=1, fsdp=-1)
        loaded = [load_ema_params(w, c, s, mesh=mesh, dtype=param_dtype) for w, c, s in zip(workdirs, configs, steps)]
        if text_encoder is None:
            text_encoder = load_text_encoder(encoders.pop(), max_length=max(lengths), mesh=mesh)
        dims = {c["model"]["text_dim"] for c in configs}
        if dims != {text_encoder.dim}:
            raise WorkdirError(
                f"The text encoder makes {text_encoder.dim}-wide embeddings; the stages take {sorted(dims)}."
            )
        cascade = cls(text_encoder, stages, [p for p, _ in loaded], [storage.name(w) for w in workdirs], mesh)
        cascade.checkpoint_steps = [step for _, step in loaded]
        return cascade

    def sample(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
        stage_settings: Sequence[dict] | None = None,
    ) -> CascadeOutput:
        """Images for `prompts`, every stage's output kept in memory (CascadeOutput; with
        several processes, this process's rows only). For long prompt lists use
        `sample_batches` and write each batch as it comes (`imagen-jax sample` does)."""
        prompts = list(prompts)
        batches = list(
            self.sample_batches(
                prompts, seed=seed, batch_size=batch_size, progress=progress, stage_settings=stage_settings
            )
        )
        indices = np.concatenate([b.indices for b in batches])
        images = [np.concatenate([b.images[i] for b in batches]) for i in range(len(self.stages))]
        return CascadeOutput([prompts[i] for i in indices], images)

    def sample_batches(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
        stage_settings: Sequence[dict] | None = None,
        skip: Callable[[int, np.ndarray], bool] | None = None,
    ) -> Iterator[SampledBatch]:
        """Global batches of `batch_size` prompts through every stage, one at a time: host
        memory holds one batch. Batch b holds prompts [b B, (b + 1) B) (the last padded by
        repeating its last prompt, so each stage compiles once) and its stage i draws noise from
        fold_in(fold_in(key(seed), i), b): the images depend on (prompts, seed, batch_size)
        and not on the number of devices or processes whenever batch_size is a multiple of
        the devices (else, on one process, every device samples the whole batch).
        skip(b, indices): True when this process already has batch b's images (a resumed
        job); the batch is skipped when every process says so. stage_settings[i] changes stage
        i's StageConfig for this call (e.g. [{"guidance_weight": 8.0}, {"aug_level": 0.2}]).
        """
        return self._batches(prompts, seed, batch_size, progress, stage_settings, skip, edits=None)

    def edit_batches(
        self,
        prompts: Sequence[str],
        images: np.ndarray,
        *,
        masks: np.ndarray | None = None,
        strength: float = 1.0,
        repaint: Repaint = Repaint(),
        start_stage: int = 0,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
        stage_settings: Sequence[dict] | None = None,
        skip: Callable[[int, np.ndarray], bool] | None = None,
    ) -> Iterator[SampledBatch]:
        """`sample_batches` that starts from user images: images uint8 [N, H, W, 3] (square,
        any size; resized to each stage's size), one per prompt.

        start_stage K: the stages before K are skipped; an SR stage K takes the images as
        its low-res input (e.g. K = 1: super-resolve 64 px images through sr256 and sr1024).
        strength < 1: stage K starts from the images noised to that strength
        (image-to-image); later stages sample from its output. masks [N, H, W] (1 / True =
        generate, 0 = keep): every stage from K on inpaints (RePaint resampling `repaint`),
        the mask and the images resized to its size (a mask pixel is generated at a stage
        when any part of it is), each SR stage conditioned on the inpainted output before it;
        the kept region of every stage's output is the resized input. SampledBatch.images
        holds the outputs of stages K, K + 1, ...
        """
        if not 0 <= start_stage < len(self.stages):
            raise ValueError(f"start_stage must be in [0, {len(self.stages)}), got {start_stage}.")
        edits = _Edits(np.asarray(images), None if masks is None else np.asarray(masks), strength, repaint, start_stage)
        if len(edits.images) != len(prompts):
            raise ValueError(f"{len(edits.images)} images for {len(prompts)} prompts; give one image per prompt.")
        if start_stage > 0 and not self.stages[start_stage].is_super_resolution:
            raise ValueError(f"stage {start_stage} is not a super-resolution stage.")
        return self._batches(prompts, seed, batch_size, progress, stage_settings, skip, edits=edits)

    def _batches(self, prompts, seed, batch_size, progress, stage_settings, skip, edits) -> Iterator[SampledBatch]:
        from tqdm.auto import tqdm

        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError("Pass a non-empty list of non-empty prompt strings.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        stages = self._with_settings(stage_settings)
        first = 0 if edits is None else edits.start_stage
        batch_size = min(batch_size, len(prompts))
        sharding = rows_sharding(self.mesh, batch_size)
        rows = host_rows(sharding, batch_size)
        root = jax.random.key(seed)
        num_batches = -(-len(prompts) // batch_size)
        show = progress and jax.process_index() == 0
        with tqdm(total=len(prompts), desc="sampling", unit="img", disable=not show) as bar:
            for b in range(num_batches):
                start = b * batch_size
                indices = np.minimum(start + rows, len(prompts) - 1)
                real = start + rows < len(prompts)
                if skip is not None and self._all_processes(skip(b, indices[real])):
                    bar.update(min(batch_size, len(prompts) - start))
                    continue
                embedding, mask = self._encode_rows([prompts[i] for i in indices], rows, sharding, batch_size)

                def put(local):
                    return to_global(local, rows, sharding, batch_size)

                images, x = [], None
                if first > 0:  # an SR stage starts from the user's images
                    x = put(edits.images_at(stages[first].low_res_size, indices))
                for i in range(first, len(stages)):
                    stage = stages[i]
                    key = jax.random.fold_in(jax.random.fold_in(root, i), b)
                    with activation_sharding(self.mesh, self.rules):
                        if edits is not None and edits.edits_stage(i):
                            size = stage.image_size
                            x = edit_stage(
                                self.params[i],
                                embedding,
                                mask,
                                key,
                                config=stage,
                                image=put(edits.images_at(size, indices)),
                                mask=None if edits.masks is None else put(edits.masks_at(size, indices)),
                                strength=edits.strength if i == first else 1.0,
                                repaint=edits.repaint,
                                low_res=x,
                            )
                        else:
                            x = sample_stage(self.params[i], embedding, mask, key, config=stage, low_res=x)
                    images.append(to_uint8(local_rows(x, rows)[real]))
                bar.update(min(batch_size, len(prompts) - start))
                yield SampledBatch(b, indices[real], images)

    def _encode_rows(self, prompts, rows, sharding, batch_size):
        """Global text embedding and mask of a batch from this process's rows' prompts. An
        encoder on the cascade's mesh (from_workdirs: FSDP-sharded T5) encodes the global
        batch with all devices together; another encodes this process's rows by itself."""
        if getattr(self.text_encoder, "mesh", None) == self.mesh:
            ids, mask = (to_global(a, rows, sharding, batch_size) for a in self.text_encoder.tokenize(prompts))
            return self.text_encoder.encode_arrays(ids, mask), mask
        embedding, mask = self.text_encoder.encode(prompts)
        return tuple(to_global(np.asarray(a), rows, sharding, batch_size) for a in (embedding, mask))

    def _with_settings(self, stage_settings) -> list[StageConfig]:
        if stage_settings is None:
            return self.stages
        if len(stage_settings) != len(self.stages):
            raise ValueError(f"Give one stage_settings dict per stage ({len(self.stages)}).")
        stages = [dataclasses.replace(s, **c) for s, c in zip(self.stages, stage_settings)]
        _check_order(stages)
        return stages

    @staticmethod
    def _all_processes(flag: bool) -> bool:
        if jax.process_count() == 1:
            return bool(flag)
        return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(flag)))))

    def encode(self, prompts: Sequence[str], chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Text embeddings [N, L, D] float32 and mask [N, L] bool for `prompts` (host arrays)."""
        parts = [self.text_encoder.encode(list(prompts[i : i + chunk])) for i in range(0, len(prompts), chunk)]
        return (np.concatenate([np.asarray(e) for e, _ in parts]), np.concatenate([np.asarray(m) for _, m in parts]))

    def run_stage(
        self, index: int, text_embedding, text_mask, key, *, low_res=None, config: StageConfig | None = None
    ) -> np.ndarray:
        """Stage `index` on one batch of host arrays (one process): float32 [B, S, S, 3] in
        [-1, 1]. `config` replaces the stage's StageConfig (e.g. another guidance weight)."""
        batch = len(text_embedding)
        sharding = rows_sharding(self.mesh, batch)
        rows = np.arange(batch)

        def put(a):
            return to_global(np.asarray(a), rows, sharding, batch)

        with activation_sharding(self.mesh, self.rules):
            x = sample_stage(
                self.params[index],
                put(text_embedding),
                put(text_mask),
                key,
                config=config or self.stages[index],
                low_res=None if low_res is None else put(low_res),
            )
        return local_rows(x, rows)

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
