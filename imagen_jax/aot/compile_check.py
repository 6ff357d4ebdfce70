"""Will a config's training fit on a TPU slice? Compile the real train step for it, here.

`compile_check(config, "v4-256")` builds the config's mesh over the slice's compile-only
devices (libtpu, jax.experimental.topologies), lowers the train step exactly as
`imagen-jax train` does (`lower_training`: abstract state, in/out shardings, donation; no
parameter is materialized) and compiles it with XLA's TPU compiler. From the compiled
program it reads per-chip memory (memory_analysis) and per-chip cost (cost_analysis);
a program that cannot fit is refused by XLA at compile time (RESOURCE_EXHAUSTED), and
that refusal is reported with XLA's numbers.

Step time: XLA's own estimate (cost_analysis "optimal_seconds") where the TPU compiler
reports one (it reports a negative value when it has none), and always a roofline
bound max(flops / peak FLOP/s, bytes accessed / HBM bandwidth) per chip, which ignores
communication. Model FLOPs (for MFU) are 3x the forward pass on the global batch (the
backward pass counted as twice the forward, rematerialization not counted); XLA's own
count of the compiled program (rematerialization included) is reported beside them.

Text mode 'tokens' (data.text): the step encodes the batch's token ids with the frozen T5
of `text.encoder` (its shape from its config: no weights are read), params in bfloat16
FSDP-sharded by the same rules; the report gives the encoder's params per chip and its
forward FLOPs, which the model FLOPs include (once: no backward through a frozen encoder).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import jax
import numpy as np

from imagen_jax.aot.tpu_slices import TpuSlice, parse_slice, topology_devices
from imagen_jax.models import build_model, dummy_inputs
from imagen_jax.parallel import make_mesh, rules_from_config
from imagen_jax.train.program import encodes_tokens, flops_per_device, lower_training
from imagen_jax.train.step_text import StepTextEncoder


@dataclasses.dataclass
class CompileReport:
    """Per-chip numbers of one config's train step compiled for one TPU slice (bytes, FLOPs, seconds)."""

    topology: str  # as given, e.g. "v4-256"
    physical_topology: str  # libtpu's, e.g. "v4:4x4x8"
    chip: str
    chips: int
    mesh: dict
    global_batch: int
    params: int
    grad_accum_steps: int
    hbm_bytes: int
    fits: bool
    state_bytes_per_chip: int  # params, EMA and optimizer state: this chip's shards
    argument_bytes: int | None = None
    output_bytes: int | None = None
    alias_bytes: int | None = None  # outputs living in donated argument buffers
    temp_bytes: int | None = None
    generated_code_bytes: int | None = None
    xla_peak_bytes: int | None = None  # memory_analysis().peak_memory_in_bytes (0: not reported)
    total_bytes: int | None = None  # max(XLA peak, arguments + outputs - aliased + temporaries + code)
    flops_per_chip: float | None = None  # XLA's count of the compiled step, remat included, x micro-batches
    bytes_accessed_per_chip: float | None = None
    model_flops_per_step: float | None = None  # 3 x forward FLOPs on the global batch
    xla_step_s: float | None = None  # XLA's estimate (cost_analysis optimal_seconds); None if not given
    roofline_step_s: float | None = None
    step_s: float | None = None  # xla_step_s if given, else roofline_step_s
    step_s_source: str | None = None
    images_per_sec: float | None = None
    mfu: float | None = None
    text_encoder: str | None = None  # data.text = 'tokens': the T5 run inside the step
    text_params: int | None = None
    text_param_bytes_per_chip: int | None = None  # this chip's shards of the T5 params (bf16)
    text_flops_per_step: float | None = None  # the T5 forward on the global batch
    compile_s: float = 0.0
    error: str | None = None  # XLA's out-of-memory message when it refused to compile
    xla_available_bytes: int | None = None  # the HBM XLA said it had, when it refused

    @property
    def over_by_bytes(self) -> int:
        """How much more memory than the chip has (than XLA had, when it refused to compile)."""
        return max(0, (self.total_bytes or 0) - (self.xla_available_bytes or self.hbm_bytes))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "over_by_bytes": self.over_by_bytes}


_OOM = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_hbm_oom(message: str) -> tuple[int, int] | None:
    """(required, available) bytes from XLA's compile-time HBM OOM message, or None."""
    match = _OOM.search(message)
    if not match:
        return None
    required = float(match.group(1)) * _UNITS[match.group(2)]
    available = float(match.group(3)) * _UNITS[match.group(4)]
    return int(required), int(available)


def _is_oom(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text


def try_compile(lowered):
    """(compiled or None, seconds, XLA's first error line, (required, available) bytes or None):
    a program that cannot fit in HBM is refused by XLA at compile time; other errors raise."""
    start = time.perf_counter()
    try:
        return lowered.compile(), time.perf_counter() - start, None, None
    except Exception as error:
        if not _is_oom(error):
            raise
        return None, time.perf_counter() - start, str(error).strip().splitlines()[0], parse_hbm_oom(str(error))


def shard_bytes(abstract_tree) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs carrying NamedShardings."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(abstract_tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def model_flops_per_step(config, global_batch: int, params) -> float:
    """3 x the forward pass's FLOPs on the global batch (XLA's count of the un-optimized
    forward, on the default backend; rematerialization not counted). `params`: abstract, unboxed."""
    model = build_model(config)
    params = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    inputs = dummy_inputs(config, batch=global_batch, text_length=config.data.max_text_length, abstract=True)
    lowered = jax.jit(lambda p, x: model.apply({"params": p}, **x)).lower(params, inputs)
    costs = lowered.cost_analysis()
    costs = costs[0] if isinstance(costs, (list, tuple)) else costs
    return 3.0 * float(costs["flops"])


def text_flops_per_step(text: StepTextEncoder, global_batch: int, length: int) -> float:
    """The frozen T5's forward FLOPs on the global batch (XLA's count, default backend)."""
    params = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), text.params)
    ids = jax.ShapeDtypeStruct((global_batch, length), np.int32)
    mask = jax.ShapeDtypeStruct((global_batch, length), np.bool_)
    costs = jax.jit(text.encode).lower(params, ids, mask).cost_analysis()
    costs = costs[0] if isinstance(costs, (list, tuple)) else costs
    return float(costs["flops"])


def compile_check(config, topology: str | TpuSlice, *, global_batch: int | None = None) -> CompileReport:
    """Compile `config`'s train step for the TPU slice `topology` ("v4-256", "v4:4x4x8", ...)
    on this machine and report whether it fits and how fast XLA expects it to run."""
    tpu_slice = parse_slice(topology) if isinstance(topology, str) else topology
    chip = tpu_slice.chip
    devices = topology_devices(tpu_slice)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
    rules = rules_from_config(config.mesh.get("rules", None))
    global_batch = int(global_batch or config.train.batch_size)
    text = None
    if encodes_tokens(config):
        from imagen_jax.text.encoder import encoder_config

        text = StepTextEncoder.abstract(encoder_config(config.text.encoder), mesh, rules)
    program = lower_training(config, mesh, rules, global_batch, text)
    params = program.abstract_state.params
    report = CompileReport(
        topology=tpu_slice.name,
        physical_topology=tpu_slice.topology,
        chip=chip.generation,
        chips=tpu_slice.chips,
        mesh=dict(mesh.shape),
        global_batch=global_batch,
        params=int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))),
        grad_accum_steps=int(config.train.get("grad_accum_steps", 1)),
        hbm_bytes=chip.hbm_bytes,
        fits=False,
        state_bytes_per_chip=shard_bytes(program.abstract_state),
    )
    if text is not None:
        report.text_encoder = config.text.encoder
        report.text_params = int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(text.params)))
        report.text_param_bytes_per_chip = shard_bytes(text.params)
    compiled, report.compile_s, report.error, numbers = try_compile(program.lowered)
    if compiled is None:
        if numbers:
            report.total_bytes, report.xla_available_bytes = numbers
        return report

    memory = compiled.memory_analysis()
    report.argument_bytes = int(memory.argument_size_in_bytes)
    report.output_bytes = int(memory.output_size_in_bytes)
    report.alias_bytes = int(memory.alias_size_in_bytes)
    report.temp_bytes = int(memory.temp_size_in_bytes)
    report.generated_code_bytes = int(memory.generated_code_size_in_bytes)
    report.xla_peak_bytes = int(getattr(memory, "peak_memory_in_bytes", 0) or 0)
    parts = (
        report.argument_bytes
        + report.output_bytes
        - report.alias_bytes
        + report.temp_bytes
        + report.generated_code_bytes
    )
    report.total_bytes = max(parts, report.xla_peak_bytes)
    report.fits = report.total_bytes <= chip.hbm_bytes

    costs = compiled.cost_analysis()
    costs = (costs[0] if isinstance(costs, (list, tuple)) else costs) or {}
    # Counted per micro-batch by XLA (a loop body once): scaled by their number, as the trainer's
    # logged TFLOP/s and MFU are (program.flops_per_device).
    loops = report.grad_accum_steps
    report.flops_per_chip = flops_per_device(compiled, loops)
    report.bytes_accessed_per_chip = loops * float(costs.get("bytes accessed", 0.0))
    optimal = loops * float(costs.get("optimal_seconds", -1.0))
    report.xla_step_s = optimal if optimal > 0 else None
    report.roofline_step_s = max(
        report.flops_per_chip / (chip.peak_tflops * 1e12),
        report.bytes_accessed_per_chip / (chip.hbm_gbytes_per_s * 1e9),
    )
    if report.xla_step_s is not None:
        report.step_s, report.step_s_source = report.xla_step_s, "XLA estimate (optimal_seconds)"
    else:
        report.step_s, report.step_s_source = report.roofline_step_s, "roofline (flops, HBM bytes; no comms)"
    report.model_flops_per_step = model_flops_per_step(config, global_batch, params)
    if text is not None:
        report.text_flops_per_step = text_flops_per_step(text, global_batch, config.data.max_text_length)
        report.model_flops_per_step += report.text_flops_per_step
    if report.step_s > 0:
        report.images_per_sec = global_batch / report.step_s
        report.mfu = report.model_flops_per_step / (report.step_s * report.chips * chip.peak_tflops * 1e12)
    return report
