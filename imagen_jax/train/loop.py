"""The training loop: `train(config, workdir)` for one cascade stage (design.md §7).

Read top to bottom: join the multi-host runtime and check the workdir and every path
(workdir.py); build the mesh; prepare the data and its text-embedding cache once, and load
the frozen T5 where it is used (inputs.py: text mode 'tokens' runs it inside the step,
step_text.py); compile the train step ahead of time with the state born sharded
(program.py); restore the latest checkpoint (state AND the input's global position) or
warm-start, and start the input there; then
step, with a progress bar, metrics (metrics.py), sample grids (preview.py), periodic async
checkpoints and a final one. SIGTERM (preemption.py) saves at the next step boundary and
returns normally.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np

from imagen_jax import config as config_lib
from imagen_jax import storage
from imagen_jax.parallel import batch_axis_size, initialize, make_mesh, rules_from_config
from imagen_jax.pipeline.stage_sampler import StageConfig
from imagen_jax.train.checkpoints import Checkpoints, abstract_like
from imagen_jax.train.hardware import peak_tflops
from imagen_jax.train.in_loop_eval import TrainingEval, check_eval_config
from imagen_jax.train.inputs import load_encoder, prepare_data, train_iterator
from imagen_jax.train.metrics import MetricsWriter, finished_step, last_logged
from imagen_jax.train.preemption import Preemption
from imagen_jax.train.preview import preview_inputs, write_sample_grid
from imagen_jax.train.program import compile_training, encodes_tokens
from imagen_jax.train.step_text import StepTextEncoder
from imagen_jax.train.warm_start import warm_start
from imagen_jax.train.workdir import ConfigMismatchError, check_storage, check_workdir_config

__all__ = ["ConfigMismatchError", "TrainingDivergedError", "train"]

log = logging.getLogger("imagen_jax.train")


class TrainingDivergedError(FloatingPointError):
    """Too many non-finite losses in a row."""


def _check_batch(config, mesh) -> None:
    global_batch = config.train.batch_size
    if global_batch % batch_axis_size(mesh) or global_batch % jax.process_count():
        raise ValueError(
            f"train.batch_size={global_batch} must be divisible by the {batch_axis_size(mesh)} batch shards "
            f"(mesh data x fsdp) and the {jax.process_count()} processes"
        )


def resume_element(step: int, position: dict | None, global_batch: int) -> int:
    """Global input elements consumed before `step`: the checkpoint's data position, or for
    a checkpoint of an earlier version (no position) step x global_batch (exact unless the
    batch size changed during the run)."""
    if position is not None:
        return int(position["next_element"])
    if step:
        log.warning(
            "checkpoint step %d has no data position (an earlier version's checkpoint): the input resumes "
            "at element %d = step x train.batch_size",
            step,
            step * global_batch,
        )
    return step * global_batch


def train(
    config, workdir: str, *, override: bool = False, progress: bool = True, checkpoint_fallback: bool = True
) -> dict:
    """Train one stage to config.train.steps; resumable. Returns the last logged metrics.
    A latest checkpoint that does not restore is moved aside and the one before is used;
    checkpoint_fallback=False stops with the reason instead."""
    initialize()
    workdir = os.fspath(storage.path(workdir))
    check_storage(config, workdir)
    check_workdir_config(config, workdir, override)
    done = finished_step(workdir)
    if done >= config.train.steps:  # nothing to train: no data, encoder or compile
        log.info("%s is already trained to step %d", workdir, done)
        return last_logged(workdir)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
    rules = rules_from_config(config.mesh.get("rules", None))
    _check_batch(config, mesh)
    check_eval_config(config, mesh)
    cache_dir = prepare_data(config, mesh, rules, progress=progress)
    tokens = encodes_tokens(config)
    # The encoder is loaded only where it is used: by the step (tokens) or for the preview prompts.
    encoder = load_encoder(config, mesh, rules) if tokens or config.train.sample_every else None
    text = StepTextEncoder.from_encoder(encoder) if tokens else None

    root = jax.random.key(config.seed)
    program = compile_training(config, mesh, rules, config.train.batch_size, jax.random.fold_in(root, 0), text)
    state, shardings, compiled = program.state, program.shardings, program.step
    batch_specs, batch_shardings, flops = program.batch_specs, program.batch_shardings, program.flops_per_device
    global_batch = config.train.batch_size
    train_key = jax.random.fold_in(root, 1)

    step_args = (text.params,) if text is not None else ()
    ckpt_cfg = config.checkpoint
    checkpoints = Checkpoints(
        storage.join(workdir, "checkpoints"),
        max_to_keep=ckpt_cfg.keep,
        save_every=ckpt_cfg.every,
        async_save=ckpt_cfg.get("async_save", True),
    )
    abstract_state = abstract_like(jax.eval_shape(lambda: state), shardings)
    restored, start, position = checkpoints.restore_latest(abstract_state, fallback=checkpoint_fallback)
    if start:
        state = restored
        log.info("resumed from step %d", start)
    elif config.train.get("init_from"):
        state = warm_start(config.train.init_from, state, shardings)
    next_element = resume_element(start, position, global_batch)
    # The input resumes at its global position, on however many hosts this run has now.
    iterator = train_iterator(config, cache_dir, encoder, start_element=next_element)

    peak = peak_tflops(jax.devices()[0].device_kind)
    preview = preview_inputs(config, encoder, cache_dir) if config.train.sample_every else None
    evaluation = TrainingEval(config, encoder, cache_dir, mesh) if config.get("eval") and config.eval.every else None
    if not tokens:
        encoder = None  # the preview prompts are encoded: free the encoder's memory
    preview_stage = StageConfig.from_config(config) if preview else None
    writer = MetricsWriter(workdir, start_step=start)
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
                state, metrics = compiled(state, batch, train_key, *step_args)
                step += 1
                next_element += global_batch
                position = {"next_element": next_element, "global_batch_size": global_batch}
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
                saved = checkpoints.save(step, state, config_json, position, force=step == total)
                if config.train.sample_every and (step % config.train.sample_every == 0 or step == total):
                    write_sample_grid(config, preview_stage, state.ema_params, preview, step, workdir, writer, mesh)
                if evaluation is not None and evaluation.due(step, total):
                    writer.scalars(step, evaluation(state.ema_params), section="eval")
                if preemption.requested_at(step):
                    log.warning("SIGTERM: saving step %d and stopping", step)
                    if not saved:
                        checkpoints.save(step, state, config_json, position, force=True)
                    break
    finally:
        bar.close()
        checkpoints.close()
        writer.close()
        if hasattr(iterator, "close"):
            iterator.close()
    return last
