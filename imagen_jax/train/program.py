"""The compiled training program: a stage's train step lowered from abstract state with
in/out shardings and donation, compiled ahead of time (design.md §7). `imagen-jax
compile-check` lowers the same program for a TPU topology."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from imagen_jax.config import is_super_resolution
from imagen_jax.models import build_model, dummy_inputs
from imagen_jax.parallel import activation_sharding, batch_axis_size, batch_sharding
from imagen_jax.train.optimizers import make_optimizer
from imagen_jax.train.state import TrainState, abstract_sharded_state, create_sharded_state
from imagen_jax.train.step import make_train_step


def encodes_tokens(config) -> bool:
    """True when the batches carry token ids that the train step encodes (data.text = 'tokens');
    else they carry cached embeddings."""
    return config.data.get("text", "embedding") == "tokens"


def abstract_batch(config, global_batch: int, text_dim: int) -> dict:
    """ShapeDtypeStructs of one global batch (the train step is compiled before any data)."""
    res, length = config.resolution, config.data.max_text_length
    batch = {"image": jax.ShapeDtypeStruct((global_batch, res, res, 3), jnp.float32)}
    if encodes_tokens(config):
        batch["text_tokens"] = jax.ShapeDtypeStruct((global_batch, length), jnp.int32)
    else:
        batch["text_embedding"] = jax.ShapeDtypeStruct((global_batch, length, text_dim), jnp.float32)
    batch["text_mask"] = jax.ShapeDtypeStruct((global_batch, length), jnp.bool_)
    if is_super_resolution(config):
        low = config.low_res_resolution
        batch["low_res"] = jax.ShapeDtypeStruct((global_batch, low, low, 3), jnp.float32)
    return batch


def flops_per_device(compiled, grad_accum_steps: int = 1) -> float:
    """FLOPs of one train step per device, from XLA's cost analysis of the compiled step.
    XLA counts a loop's body once, and gradient accumulation is a loop over the micro-batches:
    the count is scaled by their number (the optimizer update, outside the loop, is then
    counted that many times: a small overcount)."""
    costs = compiled.cost_analysis()
    costs = costs[0] if isinstance(costs, (list, tuple)) else costs
    return grad_accum_steps * float((costs or {}).get("flops", 0.0))


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
    lowered: Any  # jax.stages.Lowered of (state, batch, key[, text_params]) -> (state, metrics), state donated


def lower_training(config, mesh, rules, global_batch: int, text_encoder=None) -> LoweredTraining:
    """Build the model and optimizer from `config`, derive the state's shardings on `mesh`
    (jax.eval_shape: no memory) and lower the real train step with in/out shardings and
    donation of the state. The step is traced under `activation_sharding(mesh, rules)`, so
    the models' activation constraints (batch over data x fsdp) are in the program.
    text_encoder: a step_text.StepTextEncoder on `mesh`, needed when the batches carry
    tokens (data.text = 'tokens'): its params are the step's fourth argument, not donated."""
    accum = int(config.train.get("grad_accum_steps", 1))
    if global_batch % (batch_axis_size(mesh) * accum):
        raise ValueError(
            f"train.batch_size={global_batch} must be divisible by the {batch_axis_size(mesh)} batch shards "
            f"(mesh data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']}) times train.grad_accum_steps={accum}, "
            "so that every micro-batch spreads evenly over the shards; change --config.train.batch_size, "
            "--config.train.grad_accum_steps or --config.mesh.data / --config.mesh.fsdp"
        )
    model = build_model(config)
    optimizer, lr_schedule = make_optimizer(config.optimizer, config.train.steps)
    init_inputs = dummy_inputs(config, batch=1, text_length=config.data.max_text_length)

    def init_params_fn(rng):
        return model.init(rng, **init_inputs)["params"]

    abstract_state, shardings = abstract_sharded_state(init_params_fn, optimizer, jax.random.key(0), mesh, rules)
    batch_specs = abstract_batch(config, global_batch, config.model.text_dim)
    batch_shardings = {k: batch_sharding(mesh, v.ndim) for k, v in batch_specs.items()}
    if encodes_tokens(config) and text_encoder is None:
        raise ValueError("data.text = 'tokens' needs the T5 the step runs: pass text_encoder (step_text.py)")
    text_encoder = text_encoder if encodes_tokens(config) else None
    step_fn = make_train_step(model, optimizer, lr_schedule, config, text_encoder)
    args = (abstract_state, batch_specs, jax.eval_shape(lambda: jax.random.key(0)))
    in_shardings = (shardings, batch_shardings, None)
    if text_encoder is not None:  # the T5 params: a fourth argument
        args, in_shardings = args + (text_encoder.param_specs,), in_shardings + (text_encoder.shardings,)
    with activation_sharding(mesh, rules):
        lowered = jax.jit(step_fn, in_shardings=in_shardings, out_shardings=(shardings, None), donate_argnums=0).lower(
            *args
        )
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
    step: Any  # compiled: (state, batch, key[, text_params]) -> (state, metrics), state donated
    flops_per_device: float


def compile_training(config, mesh, rules, global_batch: int, init_key, text_encoder=None) -> TrainingProgram:
    """Lower the train step (`lower_training`), compile it ahead of time and create the
    state it takes, sharded on `mesh`."""
    program = lower_training(config, mesh, rules, global_batch, text_encoder)
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
        flops_per_device(compiled, int(config.train.get("grad_accum_steps", 1))),
    )
