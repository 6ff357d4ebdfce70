"""Checkpoints with orbax's CheckpointManager: the train state, the input position and the
config, saved together per step; async; last K kept; restored onto the current mesh.

Layout: <workdir>/checkpoints/<step>/{state, data_position, config}, local or gs:// (orbax
and tensorstore write Cloud Storage themselves). `state` is the whole TrainState (params,
optimizer state, EMA, step, counters), restored onto whatever mesh the run has now;
`data_position` the input stream's GLOBAL position ({"next_element": elements consumed,
"global_batch_size": ...}, one JSON written by process 0), so a run saved on 2 hosts
resumes on 1 or 4 (data/pipeline.py); `config` the run's config as JSON. Checkpoints of
earlier versions hold `data` (Grain's per-host iterator state) instead: their position is
taken as step x train.batch_size. Orbax writes each step
to a temporary directory and renames it when complete, so a crash mid-save never leaves
a checkpoint that looks whole (on gs://, where there is no rename, a step counts only once
its commit_success.txt is written). A committed checkpoint that does not restore (a
truncated array file, a partial copy) is moved aside to unreadable-<step>-<time> and the
run resumes from the one before (`restore_latest`).
"""

from __future__ import annotations

import logging
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from imagen_jax import storage

log = logging.getLogger("imagen_jax.train")


class CheckpointUnreadableError(ValueError):
    """A checkpoint that is there (committed) but does not restore: a truncated or missing
    array file, a partial copy, a disk error."""


def unreadable_reason(error: BaseException) -> str:
    """`ExceptionType: its first line`, short enough for one log line."""
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first[:300]}"


def _all_processes_agree(ok: bool) -> bool:
    """True only when `ok` on every process (a checkpoint one host cannot read is unreadable)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def abstract_like(state_shapes, shardings):
    """ShapeDtypeStructs carrying the TARGET shardings: what a restore should produce."""
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, shardings
    )


class Checkpoints:
    """A thin, typed front to ocp.CheckpointManager for this project's three items."""

    DATA_POSITION = "data_position"

    def __init__(self, directory: str, *, max_to_keep: int = 3, save_every: int = 1000, async_save: bool = True):
        self.directory = storage.path(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            # Exactly every `save_every` steps (orbax's default would also save the first step).
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
            enable_async_checkpointing=async_save,
            create=True,
        )
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
            self.DATA_POSITION: ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, config: dict, data_position: dict | None = None, *, force: bool = False) -> bool:
        """Save if `step` is due (every `save_every`) or `force`; returns whether it saved.
        data_position: the input's global position, e.g. {"next_element": n, ...}."""
        items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config)}
        if data_position is not None:
            items[self.DATA_POSITION] = ocp.args.JsonSave(data_position)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state):
        """(state laid out as `abstract_state`'s shardings, config dict, data position dict
        or None when the checkpoint has none)."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "config": ocp.args.JsonRestore()}
        has_position = (self.directory / str(step) / self.DATA_POSITION).exists()
        if has_position:
            items[self.DATA_POSITION] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["config"], restored[self.DATA_POSITION] if has_position else None

    def restore_latest(self, abstract_state, *, fallback: bool = True):
        """(state, step, data position) from the newest checkpoint that restores, or
        (None, 0, None) when there is none. One that does not (on any process) is named in
        one warning with the reason and moved aside (`move_aside`, never deleted), and the
        one before it is tried; with fallback=False the first failure raises
        CheckpointUnreadableError instead."""
        for step in sorted(self.all_steps(), reverse=True):
            state = position = None
            try:
                state, _, position = self.restore(step, abstract_state)
                reason = None
            except Exception as error:  # tensorstore, orbax: any failure to read it back
                reason = unreadable_reason(error)
            if _all_processes_agree(reason is None):
                return state, step, position
            reason = reason or "another process could not read its part"
            where = storage.join(self.directory, str(step))
            if not fallback:
                raise CheckpointUnreadableError(
                    f"checkpoint step {step} at {where} does not restore ({reason}). Run without "
                    "--no-checkpoint-fallback to move it aside and resume from the newest earlier checkpoint."
                )
            aside = self.move_aside(step)
            log.warning("checkpoint step %d does not restore (%s); moved it aside to %s", step, reason, aside)
        if self.all_steps() == [] and any(self.directory.glob("unreadable-*")):
            raise CheckpointUnreadableError(
                f"no checkpoint under {self.directory} restores; each was moved aside (unreadable-*). Run "
                "again to start from scratch, or put a good copy of one back under its step number."
            )
        return None, 0, None

    def move_aside(self, step: int) -> str:
        """Rename checkpoint `step` to unreadable-<step>-<unix time> beside it (process 0;
        every process waits), so that it is kept but no longer counts as a checkpoint."""
        aside = storage.join(self.directory, f"unreadable-{step}-{int(time.time())}")
        if jax.process_index() == 0:
            storage.move_tree(self.directory / str(step), aside)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint_{step}_moved_aside")
        self.manager.reload()
        return aside

    def saved_config(self, step: int | None = None) -> dict | None:
        """The config stored with `step` (default: the latest), without touching the state."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    def wait(self):
        """Block until any async save in flight is committed."""
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
