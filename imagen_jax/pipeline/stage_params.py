"""A trained stage as `imagen-jax train` left it in its workdir (local or gs://): the saved
config (config.json, read as today's fields) and the EMA params of a checkpoint, placed on a
mesh by the training's logical axis rules (FSDP-sharded when the mesh has an fsdp axis)."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from imagen_jax import storage
from imagen_jax.config import upgrade_saved_config


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


def param_shardings(config: dict, mesh):
    """NamedShardings of a stage's params on `mesh` by its logical axis rules (config
    mesh.rules, else the defaults; parallel/rules.py), from abstract shapes (no memory)."""
    from imagen_jax.models import abstract_params, build_model
    from imagen_jax.parallel import logical_shardings, rules_from_config

    boxed = abstract_params(build_model(config), ml_collections.ConfigDict(config))
    rules = rules_from_config((config.get("mesh") or {}).get("rules"))
    return nn.meta.unbox(boxed), logical_shardings(boxed, mesh, rules)


def load_ema_params(workdir: str, config: dict, step: int | None = None, *, mesh=None, dtype=None):
    """(EMA params, step) from the latest (or the given) checkpoint of `workdir`. Only the
    EMA subtree is read, each process reading the slices its devices hold: the params are
    placed on `mesh` (default: every device, as parallel.make_mesh(data=1, fsdp=-1)) by the
    stage's logical rules. dtype: cast floating params (e.g. jnp.bfloat16 for sampling)."""
    import orbax.checkpoint as ocp

    from imagen_jax.parallel import make_mesh

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
    mesh = mesh if mesh is not None else make_mesh(data=1, fsdp=-1)
    shapes, shardings = param_shardings(config, mesh)
    target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = checkpointer.restore(
                directory / str(step) / "state",
                args=ocp.args.PyTreeRestore(
                    {"ema_params": target},
                    restore_args={"ema_params": ocp.checkpoint_utils.construct_restore_args(target)},
                    partial_restore=True,
                ),
            )
    except Exception as error:  # a truncated or missing array file, a partial copy
        from imagen_jax.train.checkpoints import CheckpointUnreadableError, unreadable_reason

        earlier = sorted(s for s in steps if s < step)
        raise CheckpointUnreadableError(
            f"checkpoint step {step} of {workdir!r} does not restore ({unreadable_reason(error)}). Resume "
            "training there once (`imagen-jax train` moves an unreadable latest checkpoint aside)"
            + (f", or sample from an earlier step (it has {earlier})." if earlier else ".")
        ) from error
    params = restored["ema_params"]
    if dtype is not None:
        params = cast_floating(params, dtype, shardings)
    return params, step


def cast_floating(params, dtype, shardings):
    """Floating leaves cast to `dtype`, in place on their shardings (one compiled cast)."""

    def cast(tree):
        return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    return jax.jit(cast, out_shardings=shardings, donate_argnums=0)(params)
