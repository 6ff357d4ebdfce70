"""Warm start (`train.init_from`): a fresh run takes its params and EMA params from the
latest checkpoint of another stage's workdir, e.g. a base stage trained at 16 px and
trained on at 32 px (the UNet's params do not depend on the image size, as in Stable
Diffusion's 256 -> 512 px training). The step, the optimizer state and the data order
start fresh; with `train.ema_warmup` the EMA's decay restarts too, so the EMA soon follows
the new run's params. Only a run with no checkpoint of its own warm-starts; once it has saved, it
resumes from its own checkpoints, so preemption replays the same run.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp

from imagen_jax import storage
from imagen_jax.train.checkpoints import CheckpointUnreadableError, abstract_like, unreadable_reason

_ITEMS = ("params", "ema_params")
log = logging.getLogger("imagen_jax.train")


def _source_state_path(source: str) -> tuple[str, int]:
    directory = storage.path(source) / "checkpoints"
    step = None
    if directory.exists():
        manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
        step = manager.latest_step()
        manager.close()
    if step is None:
        raise FileNotFoundError(
            f"train.init_from={source!r} has no checkpoint under {directory}; point it at "
            "the workdir of a trained stage (or set train.init_from='' to start from scratch)"
        )
    return os.fspath(directory / str(step) / "state"), step


def _shapes(tree) -> dict[str, tuple]:
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _check_shapes(source: str, saved, wanted) -> None:
    """One clear error naming the first param whose presence or shape differs."""
    saved_flat, wanted_flat = _shapes(saved), _shapes(wanted)
    for name in sorted(saved_flat.keys() | wanted_flat.keys()):
        there, here = saved_flat.get(name), wanted_flat.get(name)
        if there != here:
            raise ValueError(
                f"train.init_from={source!r}: param {name} is {there or 'absent'} there and "
                f"{here or 'absent'} in this config's model; the source stage must have the "
                "same model section (only the resolution may differ)"
            )


def warm_start(source: str, state, shardings):
    """`state` (a fresh TrainState) with params and ema_params restored from `source`'s
    latest checkpoint, laid out as `shardings` (the run's TrainState shardings)."""
    path, step = _source_state_path(source)
    saved = ocp.PyTreeCheckpointer().metadata(path).item_metadata
    _check_shapes(source, {k: saved[k] for k in _ITEMS}, {k: getattr(state, k) for k in _ITEMS})
    target = abstract_like({k: getattr(state, k) for k in _ITEMS}, {k: getattr(shardings, k) for k in _ITEMS})
    try:
        restored = ocp.PyTreeCheckpointer().restore(
            path,
            args=ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
            ),
        )
    except Exception as error:  # a truncated or missing array file, a partial copy
        raise CheckpointUnreadableError(
            f"train.init_from={source!r}: its latest checkpoint (step {step}, {path}) does not restore "
            f"({unreadable_reason(error)}). Resume that run once (`imagen-jax train` moves an unreadable latest "
            "checkpoint aside) or copy a good checkpoint there."
        ) from error
    log.info("params and EMA params from %s, step %d", source, step)
    return state.replace(**{k: restored[k] for k in _ITEMS})
