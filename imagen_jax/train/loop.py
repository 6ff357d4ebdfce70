"""The training loop: `train(config, workdir)` for one cascade stage (design.md §7).

It joins the multi-host runtime, builds the mesh, the text-embedding cache (encoded once,
on first use), the Grain input pipeline and the train state (born sharded), restores the
latest checkpoint (state AND data iterator) if the workdir has one, compiles the train
step once ahead of time, and runs it with a progress bar, TensorBoard scalars, a metrics
log, sample grids, periodic async checkpoints, and a final checkpoint. SIGTERM
(preemption) saves at the next step boundary and returns normally.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from imagen_jax import config as config_lib
from imagen_jax import storage
from imagen_jax.config import is_super_resolution
from imagen_jax.images import make_grid, save_png, to_uint8
from imagen_jax.models import build_model, dummy_inputs
from imagen_jax.parallel import (
    activation_sharding,
    batch_axis_size,
    batch_sharding,
    initialize,
    make_mesh,
    rules_from_config,
)
from imagen_jax.pipeline.stage_sampler import StageConfig, sample_stage
from imagen_jax.train.checkpoints import Checkpoints, abstract_like
from imagen_jax.train.hardware import peak_tflops
from imagen_jax.train.optimizers import make_optimizer
from imagen_jax.train.state import (
    TrainState,
    abstract_sharded_state,
    create_sharded_state,
)
from imagen_jax.train.step import make_train_step
from imagen_jax.train.warm_start import warm_start

log = logging.getLogger("imagen_jax.train")


class ConfigMismatchError(ValueError):
    """The workdir holds a run made with another config."""


class TrainingDivergedError(FloatingPointError):
    """Too many non-finite losses in a row."""


def check_workdir_config(config, workdir: str, override: bool) -> None:
    """Refuse a workdir whose saved config.json differs from `config` unless `override`;
    write config.json (process 0) for a new run or an accepted override."""
    path = storage.path(workdir) / "config.json"
    given = config_lib.to_dict(config)
    if path.exists():
        saved = config_lib.upgrade_saved_config(json.loads(path.read_text()))
        diff = config_lib.config_diff(saved, given)
        if diff and not override:
            raise ConfigMismatchError(
                f"{workdir} holds a run with another config ({len(diff)} difference(s)):\n  "
                + "\n  ".join(diff[:20])
                + "\nUse another --workdir, or pass --override to continue this run with the new config."
            )
        if not diff:
            return
    if jax.process_index() == 0:
        storage.write_text(path, json.dumps(given, indent=2, sort_keys=True))


def check_storage(config, workdir: str) -> None:
    """Every path the run will touch, checked at start-up before any compile (storage.StorageError
    names the path and the fix): the workdir is writable; the dataset's folder (writable when
    the embedding cache is kept there), a given embedding cache, `init_from` and a T5
    directory are readable; datasets and caches on gs:// have their mount."""
    from imagen_jax.data.sources import resolve_data_dir

    storage.check_access(workdir, write=True)
    data_dir = resolve_data_dir(config.data.data_dir or None)
    own_cache = not config.data.text_embedding_dir  # written beside the dataset by process 0 if missing
    storage.check_access(data_dir, write=own_cache and jax.process_index() == 0)
    storage.local_view(data_dir)
    if not own_cache:
        storage.check_access(config.data.text_embedding_dir, write=False)
        storage.local_view(config.data.text_embedding_dir)
    for source in (config.train.get("init_from"), config.text.encoder):  # local ones: only the scheme
        if source:
            storage.check_access(source, write=False)


def text_embedding_cache(config, encoder) -> str:
    """The directory of the dataset's text-embedding cache for this encoder, encoded now
    (by process 0, with a progress bar) if it does not exist yet."""
    from imagen_jax.data.sources import open_builder
    from imagen_jax.text.embed_cli import caption_records
    from imagen_jax.text.embedding_cache import (
        embedding_cache_dir,
        write_embedding_cache,
    )

    data = config.data
    if data.text_embedding_dir:
        return data.text_embedding_dir
    builder = open_builder(data.name, data_dir=data.data_dir or None, prepare_shapes=data.prepare_shapes)
    cache_dir = embedding_cache_dir(str(builder.data_dir), encoder.name, data.split)
    if jax.process_index() == 0 and not (storage.path(cache_dir) / "metadata.json").exists():
        log.info("encoding the captions of %s/%s once into %s", data.name, data.split, cache_dir)
        write_embedding_cache(
            caption_records(builder, data.split, data.text_key),
            encoder,
            cache_dir,
            caption_key=data.text_key,
            dtype=config.text.get("cache_dtype", "float16"),
        )
    multihost_utils.sync_global_devices("text_embedding_cache")
    return cache_dir


def abstract_batch(config, global_batch: int, text_dim: int) -> dict:
    """ShapeDtypeStructs of one global batch (the train step is compiled before any data)."""
    res, length = config.resolution, config.data.max_text_length
    batch = {
        "image": jax.ShapeDtypeStruct((global_batch, res, res, 3), jnp.float32),
        "text_embedding": jax.ShapeDtypeStruct((global_batch, length, text_dim), jnp.float32),
        "text_mask": jax.ShapeDtypeStruct((global_batch, length), jnp.bool_),
    }
    if is_super_resolution(config):
        low = config.low_res_resolution
        batch["low_res"] = jax.ShapeDtypeStruct((global_batch, low, low, 3), jnp.float32)
    return batch


def _flops_per_device(compiled) -> float:
    costs = compiled.cost_analysis()
    costs = costs[0] if isinstance(costs, (list, tuple)) else costs
    return float((costs or {}).get("flops", 0.0))


class Preemption:
    """SIGTERM read at step boundaries. One process: our own handler sets a flag (the previous
    handler is restored on exit). Several: JAX's coordination service gets the signal and
    `reached_preemption_sync_point` makes every host stop at the SAME step."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self._previous = None

    def requested_at(self, step: int) -> bool:
        if self.enabled:
            return self.requested
        return multihost_utils.reached_preemption_sync_point(step)

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class MetricsWriter:
    """metrics.jsonl and TensorBoard scalars/images, on process 0 only, local or gs://
    (there, metrics.jsonl is uploaded at most every METRICS_UPLOAD_SECONDS and at close)."""

    METRICS_UPLOAD_SECONDS = 30.0

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter

        storage.register_tensorboard_writer()
        self.jsonl = storage.AppendFile(
            storage.join(workdir, "metrics.jsonl"), upload_every=self.METRICS_UPLOAD_SECONDS
        )
        self.tb = SummaryWriter(storage.join(workdir, "tensorboard"))

    def scalars(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write((json.dumps({"step": step, **values}) + "\n").encode())
        self.jsonl.flush()
        for name, value in values.items():
            self.tb.add_scalar(f"train/{name}", value, step)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        if self.enabled:
            self.tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def preview_inputs(config, encoder):
    """Fixed inputs for the sample grids: the configured prompts encoded; for SR stages the
    first examples of the (unshuffled) data split as low-res inputs and ground truth."""
    from imagen_jax.data.pipeline import dataset_from_config

    prompts = list(config.train.sample_prompts)
    embedding, mask = encoder.encode(prompts)
    inputs = {"prompts": prompts, "text_embedding": np.asarray(embedding), "text_mask": np.asarray(mask)}
    if is_super_resolution(config):
        data = config.data.copy_and_resolve_references()
        data.shuffle, data.num_workers, data.random_crop = False, 0, False
        it = iter(
            dataset_from_config(
                data,
                batch_size=len(prompts),
                process_index=0,
                process_count=1,
                text_embeddings=_cache_source(config, encoder),
            )
        )
        batch = next(it)
        inputs.update(
            text_embedding=batch["text_embedding"],
            text_mask=batch["text_mask"],
            low_res=batch["low_res"],
            truth=batch["image"],
        )
    return inputs


def _cache_source(config, encoder):
    from imagen_jax.text.embedding_cache import EmbeddingCacheSource

    return EmbeddingCacheSource(text_embedding_cache(config, encoder))


def write_sample_grid(
    config, stage: StageConfig, params, preview, step: int, workdir: str, writer: MetricsWriter, mesh
) -> str | None:
    """Sample the preview prompts with `params` (the EMA) through the stage sampler (`stage`:
    the config's model and `sampling` section) and save a PNG grid; returns its path. Every
    process runs it (the params are global arrays); the inputs are replicated on `mesh`."""
    replicated = NamedSharding(mesh, PartitionSpec())
    put = lambda name: jax.device_put(np.asarray(preview[name]), replicated)  # noqa: E731
    images = sample_stage(
        params,
        put("text_embedding"),
        put("text_mask"),
        jax.random.key(config.seed),
        config=stage,
        low_res=put("low_res") if "low_res" in preview else None,
    )
    cells = to_uint8(multihost_utils.process_allgather(images, tiled=True))
    columns = None
    if "low_res" in preview:  # rows of (low-res, sample, truth)
        factor = config.resolution // preview["low_res"].shape[1]
        low = to_uint8(preview["low_res"]).repeat(factor, axis=1).repeat(factor, axis=2)
        cells = np.stack([low, cells, to_uint8(preview["truth"])], axis=1).reshape((-1,) + cells.shape[1:])
        columns = 3
    grid = make_grid(cells, columns=columns, upscale_to=96)
    if jax.process_index() != 0:
        return None
    path = save_png(grid, storage.join(workdir, "samples", f"step_{step:07d}.png"))
    writer.image(step, "samples", grid)
    return path


@dataclasses.dataclass
class LoweredTraining:
    """A stage's train step lowered for one mesh and global batch from abstract state only
    (no parameter is materialized): what `compile_training` compiles for the local devices
    and `imagen-jax compile-check` compiles for a TPU topology."""

    model: Any
    optimizer: Any
    init_params_fn: Any  # rng -> boxed params
    abstract_state: TrainState  # jax.ShapeDtypeStruct leaves carrying their shardings
    shardings: Any
    batch_specs: dict
    batch_shardings: dict
    lowered: Any  # jax.stages.Lowered of (state, batch, key) -> (state, metrics), state donated


def lower_training(config, mesh, rules, global_batch: int) -> LoweredTraining:
    """Build the model and optimizer from `config`, derive the state's shardings on `mesh`
    (jax.eval_shape: no memory) and lower the real train step with in/out shardings and
    donation of the state. The step is traced under `activation_sharding(mesh, rules)`, so
    the models' activation constraints (batch over data x fsdp) are in the program."""
    accum = int(config.train.get("grad_accum_steps", 1))
    if global_batch % (batch_axis_size(mesh) * accum):
        raise ValueError(
            f"train.batch_size={global_batch} must be divisible by the {batch_axis_size(mesh)} batch shards "
            f"(mesh data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']}) times train.grad_accum_steps={accum}, "
            "so that every micro-batch spreads evenly over the shards; change --config.train.batch_size, "
            "--config.train.grad_accum_steps or --config.mesh.data / --config.mesh.fsdp"
        )
    model = build_model(config.model)
    optimizer, lr_schedule = make_optimizer(config.optimizer, config.train.steps)
    init_inputs = dummy_inputs(config, batch=1, text_length=config.data.max_text_length)

    def init_params_fn(rng):
        return model.init(rng, **init_inputs)["params"]

    abstract_state, shardings = abstract_sharded_state(init_params_fn, optimizer, jax.random.key(0), mesh, rules)
    batch_specs = abstract_batch(config, global_batch, config.model.text_dim)
    batch_shardings = {k: batch_sharding(mesh, v.ndim) for k, v in batch_specs.items()}
    step_fn = make_train_step(model, optimizer, lr_schedule, config)
    key_spec = jax.eval_shape(lambda: jax.random.key(0))
    with activation_sharding(mesh, rules):
        lowered = jax.jit(
            step_fn, in_shardings=(shardings, batch_shardings, None), out_shardings=(shardings, None), donate_argnums=0
        ).lower(abstract_state, batch_specs, key_spec)
    return LoweredTraining(
        model, optimizer, init_params_fn, abstract_state, shardings, batch_specs, batch_shardings, lowered
    )


@dataclasses.dataclass
class TrainingProgram:
    """A stage's model, its fresh sharded state and the train step compiled for one global batch."""

    model: Any
    state: TrainState
    shardings: Any
    batch_specs: dict
    batch_shardings: dict
    step: Any  # compiled: (state, batch, key) -> (state, metrics), state donated
    flops_per_device: float


def compile_training(config, mesh, rules, global_batch: int, init_key) -> TrainingProgram:
    """Lower the train step (`lower_training`), compile it ahead of time and create the
    state it takes, sharded on `mesh`."""
    program = lower_training(config, mesh, rules, global_batch)
    compiled = program.lowered.compile()
    state, shardings = create_sharded_state(
        program.init_params_fn, program.optimizer, init_key, mesh, rules, program.shardings
    )
    return TrainingProgram(
        program.model,
        state,
        shardings,
        program.batch_specs,
        program.batch_shardings,
        compiled,
        _flops_per_device(compiled),
    )


def train(config, workdir: str, *, override: bool = False, progress: bool = True) -> dict:
    """Train one stage to config.train.steps; resumable. Returns the last logged metrics."""
    from imagen_jax.data.pipeline import dataset_from_config
    from imagen_jax.text.encoder import load_text_encoder

    initialize()
    workdir = os.fspath(storage.path(workdir))
    check_storage(config, workdir)
    check_workdir_config(config, workdir, override)

    mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
    rules = rules_from_config(config.mesh.get("rules", None))
    global_batch = config.train.batch_size
    if global_batch % batch_axis_size(mesh) or global_batch % jax.process_count():
        raise ValueError(
            f"train.batch_size={global_batch} must be divisible by the {batch_axis_size(mesh)} batch shards "
            f"(mesh data x fsdp) and the {jax.process_count()} processes"
        )
    if jax.process_index() == 0:  # generate a missing built-in dataset once, before the others open it
        from imagen_jax.data.sources import open_builder

        open_builder(config.data.name, data_dir=config.data.data_dir or None, prepare_shapes=config.data.prepare_shapes)
    multihost_utils.sync_global_devices("dataset_prepared")
    encoder = load_text_encoder(config.text.encoder, max_length=config.data.max_text_length)
    if encoder.dim != config.model.text_dim:
        raise ValueError(
            f"model.text_dim={config.model.text_dim} but the text encoder {encoder.name!r} "
            f"outputs {encoder.dim}; set --config.model.text_dim={encoder.dim}"
        )

    root = jax.random.key(config.seed)
    program = compile_training(config, mesh, rules, global_batch, jax.random.fold_in(root, 0))
    state, shardings, compiled = program.state, program.shardings, program.step
    batch_specs, batch_shardings, flops = program.batch_specs, program.batch_shardings, program.flops_per_device
    train_key = jax.random.fold_in(root, 1)

    dataset = dataset_from_config(
        config.data, batch_size=global_batch // jax.process_count(), text_embeddings=_cache_source(config, encoder)
    )
    iterator = iter(dataset)
    ckpt_cfg = config.checkpoint
    checkpoints = Checkpoints(
        storage.join(workdir, "checkpoints"),
        max_to_keep=ckpt_cfg.keep,
        save_every=ckpt_cfg.every,
        async_save=ckpt_cfg.get("async_save", True),
    )
    start = checkpoints.latest_step() or 0
    if start:
        state_shapes = jax.eval_shape(lambda: state)
        state, _ = checkpoints.restore(start, abstract_like(state_shapes, shardings), iterator)
        log.info("resumed from step %d", start)
    elif config.train.get("init_from"):
        state = warm_start(config.train.init_from, state, shardings)

    peak = peak_tflops(jax.devices()[0].device_kind)
    preview = preview_inputs(config, encoder) if config.train.sample_every else None
    preview_stage = StageConfig.from_config(config) if preview else None
    writer = MetricsWriter(workdir)
    config_json = config_lib.to_dict(config)
    total = config.train.steps
    last: dict = {}

    from tqdm import tqdm

    bar = tqdm(
        total=total, initial=start, disable=not progress or jax.process_index() != 0, desc="train", dynamic_ncols=True
    )
    try:
        with Preemption(enabled=jax.process_count() == 1) as preemption:
            tick, tick_step = time.perf_counter(), start
            step = start
            while step < total:
                local = next(iterator)
                batch = {
                    k: jax.make_array_from_process_local_data(batch_shardings[k], np.asarray(local[k]))
                    for k in batch_specs
                }
                state, metrics = compiled(state, batch, train_key)
                step += 1
                bar.update(1)
                if step % config.train.log_every == 0 or step == total:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    now = time.perf_counter()
                    seconds_per_step = (now - tick) / max(step - tick_step, 1)
                    tick, tick_step = now, step
                    values["images_per_sec"] = global_batch / seconds_per_step
                    values["tflops_per_device"] = flops / seconds_per_step / 1e12
                    if peak:
                        values["mfu"] = values["tflops_per_device"] / peak
                    writer.scalars(step, values)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{values['images_per_sec']:.1f}")
                    last = values
                    if values["nonfinite_streak"] >= config.train.max_nonfinite_streak:
                        raise TrainingDivergedError(
                            f"{int(values['nonfinite_streak'])} non-finite losses in a row at step {step}; updates "
                            f"were skipped and the last good checkpoint (step {checkpoints.latest_step()}) is "
                            "intact. Lower --config.optimizer.peak_lr or set --config.optimizer.grad_clip_norm."
                        )
                saved = checkpoints.save(step, state, config_json, iterator, force=step == total)
                if config.train.sample_every and (step % config.train.sample_every == 0 or step == total):
                    write_sample_grid(config, preview_stage, state.ema_params, preview, step, workdir, writer, mesh)
                if preemption.requested_at(step):
                    log.warning("SIGTERM: saving step %d and stopping", step)
                    if not saved:
                        checkpoints.save(step, state, config_json, iterator, force=True)
                    break
    finally:
        bar.close()
        checkpoints.close()
        writer.close()
        if hasattr(iterator, "close"):
            iterator.close()
    return last
