"""Checkpoints with orbax's CheckpointManager: the train state, the data iterator and the
config, saved together per step; async; last K kept; restored onto the current mesh.

Layout: <workdir>/checkpoints/<step>/{state, data, config}, local or gs:// (orbax and
tensorstore write Cloud Storage themselves). `state` is the whole
TrainState (params, optimizer state, EMA, step, counters); `data` the Grain iterator's
state (one JSON per process); `config` the run's config as JSON. Orbax writes each step
to a temporary directory and renames it when complete, so a crash mid-save never leaves
a checkpoint that looks whole (on gs://, where there is no rename, a step counts only once
its commit_success.txt is written).
"""

from __future__ import annotations

import grain
import jax
import orbax.checkpoint as ocp

from imagen_jax import storage


def abstract_like(state_shapes, shardings):
    """ShapeDtypeStructs carrying the TARGET shardings: what a restore should produce."""
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, shardings
    )


class Checkpoints:
    """A thin, typed front to ocp.CheckpointManager for this project's three items."""

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
            "data": grain.checkpoint.CheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, config: dict, data_iterator=None, *, force: bool = False) -> bool:
        """Save if `step` is due (every `save_every`) or `force`; returns whether it saved."""
        items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state, data_iterator=None):
        """(state laid out as `abstract_state`'s shardings, config dict). The iterator, if
        given, is set to its saved position in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "config": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["config"]

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
