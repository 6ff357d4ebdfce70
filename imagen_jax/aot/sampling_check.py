"""Will a cascade's sampling fit on a TPU slice, and how fast would it run? Compile it here.

`sampling_check(configs, "v4-8")` compiles, for the slice's compile-only devices (libtpu),
exactly what `imagen-jax sample` runs: each stage's whole sampler program (sample_stage:
guided, thresholded, its committed sampler and step count) with its params FSDP-sharded on
a (data 1, fsdp all) mesh by the training's logical rules and the batch split over the
chips, and the T5 encoder the stages were trained with (its own logical rules). It reads
per-chip memory (memory_analysis) and cost (cost_analysis) of each program.

Memory of the cascade per chip: every stage's params (and T5's) stay resident while the
stages run one after another, so the cascade needs all resident params plus the largest
program's own inputs, outputs and temporaries.

Time: XLA's cost analysis counts a while loop's body once, and the sampler is one loop over
its steps, so a program's cost is one step's (plus the loop's prologue, a small overcount).
Step time is XLA's estimate (optimal_seconds) where the TPU compiler gives one, else the
roofline max(flops / peak, bytes / HBM bandwidth) per chip (no communication): a bound,
not a measurement. Images/s of a stage = batch / (steps x step time); of the cascade,
1 / the sum over stages (and T5) of 1 / images/s.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from imagen_jax.aot.compile_check import shard_bytes, try_compile
from imagen_jax.aot.tpu_slices import TpuSlice, parse_slice, topology_devices
from imagen_jax.config import to_dict, upgrade_saved_config
from imagen_jax.parallel import DEFAULT_RULES, activation_sharding, logical_shardings, make_mesh


@dataclasses.dataclass
class ProgramReport:
    """One compiled program's per-chip figures (bytes, FLOPs, seconds) on the slice."""

    name: str
    what: str  # e.g. "sampler: 64 px, dpm_solver_pp_2m 32 steps, guided"
    batch: int
    steps: int  # loop iterations the program runs (1 for T5)
    params: int
    param_bytes_per_chip: int
    argument_bytes: int | None = None
    output_bytes: int | None = None
    temp_bytes: int | None = None
    generated_code_bytes: int | None = None
    total_bytes: int | None = None
    flops_per_step_per_chip: float | None = None
    bytes_per_step_per_chip: float | None = None
    step_s: float | None = None
    step_s_source: str | None = None
    images_per_sec: float | None = None
    compile_s: float = 0.0
    error: str | None = None

    @property
    def working_bytes(self) -> int:
        """What the program needs besides its own params: the rest of its arguments, outputs,
        temporaries and code."""
        return max(0, (self.total_bytes or 0) - self.param_bytes_per_chip)


@dataclasses.dataclass
class SamplingReport:
    """The cascade on one slice: its programs and what they need together."""

    topology: str
    physical_topology: str
    chip: str
    chips: int
    hbm_bytes: int
    param_dtype: str
    programs: list[ProgramReport]
    resident_param_bytes: int = 0  # every program's params, resident together
    total_bytes: int = 0  # resident params + the largest working set
    fits: bool = False
    images_per_sec: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _abstract(shapes, shardings, dtype=None):
    """ShapeDtypeStructs carrying shardings; floating leaves cast to `dtype` when given."""

    def one(s, sh):
        cast = dtype is not None and jnp.issubdtype(s.dtype, jnp.floating)
        return jax.ShapeDtypeStruct(s.shape, dtype if cast else s.dtype, sharding=sh)

    return jax.tree.map(one, shapes, shardings)


def _compile(report: ProgramReport, lowered, chip) -> ProgramReport:
    compiled, report.compile_s, report.error, numbers = try_compile(lowered)
    if compiled is None:
        report.total_bytes = (numbers[0] + report.param_bytes_per_chip) if numbers else None
        return report
    memory = compiled.memory_analysis()
    report.argument_bytes = int(memory.argument_size_in_bytes)
    report.output_bytes = int(memory.output_size_in_bytes) - int(memory.alias_size_in_bytes)
    report.temp_bytes = int(memory.temp_size_in_bytes)
    report.generated_code_bytes = int(memory.generated_code_size_in_bytes)
    peak = int(getattr(memory, "peak_memory_in_bytes", 0) or 0)
    parts = report.argument_bytes + report.output_bytes + report.temp_bytes + report.generated_code_bytes
    report.total_bytes = max(parts, peak)
    costs = compiled.cost_analysis()
    costs = (costs[0] if isinstance(costs, (list, tuple)) else costs) or {}
    report.flops_per_step_per_chip = float(costs.get("flops", 0.0))
    report.bytes_per_step_per_chip = float(costs.get("bytes accessed", 0.0))
    optimal = float(costs.get("optimal_seconds", -1.0))
    roofline = max(
        report.flops_per_step_per_chip / (chip.peak_tflops * 1e12),
        report.bytes_per_step_per_chip / (chip.hbm_gbytes_per_s * 1e9),
    )
    if optimal > 0:
        report.step_s, report.step_s_source = optimal, "XLA estimate (optimal_seconds)"
    else:
        report.step_s, report.step_s_source = roofline, "roofline (flops, HBM bytes; no comms)"
    if report.step_s > 0:
        report.images_per_sec = report.batch / (report.steps * report.step_s)
    return report


def _key_dtype():
    return jax.eval_shape(lambda: jax.random.key(0)).dtype


def stage_program(config, mesh, chip, *, name: str, batch: int, param_dtype) -> ProgramReport:
    """Compile one stage's whole sampler (sample_stage) for `mesh` and report it."""
    from imagen_jax.pipeline.stage_params import param_shardings
    from imagen_jax.pipeline.stage_sampler import StageConfig, sample_stage

    config = upgrade_saved_config(config)
    stage = StageConfig.from_config(config)
    shapes, shardings = param_shardings(config, mesh)
    params = _abstract(shapes, shardings, param_dtype)
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    length, width = int(config["data"]["max_text_length"]), int(config["model"]["text_dim"])
    inputs = [
        jax.ShapeDtypeStruct((batch, length, width), jnp.float32, sharding=rows),
        jax.ShapeDtypeStruct((batch, length), jnp.bool_, sharding=rows),
        jax.ShapeDtypeStruct((), _key_dtype(), sharding=NamedSharding(mesh, PartitionSpec())),
    ]
    if stage.is_super_resolution:
        low = stage.low_res_size
        inputs.append(jax.ShapeDtypeStruct((batch, low, low, 3), jnp.float32, sharding=rows))

    def run(params, embedding, mask, key, low_res=None):
        return sample_stage(params, embedding, mask, key, config=stage, low_res=low_res)

    guided = "guided" if stage.guidance_weight != 1.0 else "unguided"
    report = ProgramReport(
        name=name,
        what=f"sampler: {stage.image_size} px, {stage.sampler.kind} {stage.sampler.num_steps} steps, {guided}",
        batch=batch,
        steps=stage.sampler.num_steps,
        params=int(sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes))),
        param_bytes_per_chip=shard_bytes(params),
    )
    with activation_sharding(mesh, DEFAULT_RULES):
        lowered = jax.jit(run).lower(params, *inputs)
    return _compile(report, lowered, chip)


def text_encoder_program(encoder: str, mesh, chip, *, batch: int, max_length: int, param_dtype) -> ProgramReport:
    """Compile the T5 encoder of `encoder` (a built-in name, or "google/t5-v1_1-xxl" and the
    other T5 v1.1 / Flan-T5 sizes) on `batch` prompts of `max_length` tokens, its params
    FSDP-sharded by their logical axes."""
    from imagen_jax.text.builtin import BUILTIN_ENCODERS
    from imagen_jax.text.config import T5_V1_1_CONFIGS
    from imagen_jax.text.encoder import encoder_config
    from imagen_jax.text.pretrain import PRETRAINED_SHAPES_T5
    from imagen_jax.text.t5 import abstract_params, encode_tokens

    key = encoder.rsplit("/", 1)[-1].replace("flan-t5-", "t5-v1_1-")
    if encoder in BUILTIN_ENCODERS or encoder == PRETRAINED_SHAPES_T5:
        key, t5 = encoder, encoder_config(encoder)
    elif key in T5_V1_1_CONFIGS:
        t5 = T5_V1_1_CONFIGS[key]
    else:
        raise ValueError(
            f"no T5 shapes known for {encoder!r}: a built-in encoder or one of {sorted(T5_V1_1_CONFIGS)}; "
            "pass --no-text-encoder to leave it out"
        )
    boxed = abstract_params(t5)
    params = _abstract(nn.meta.unbox(boxed), logical_shardings(boxed, mesh), param_dtype)
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    ids = jax.ShapeDtypeStruct((batch, max_length), jnp.int32, sharding=rows)
    mask = jax.ShapeDtypeStruct((batch, max_length), jnp.bool_, sharding=rows)
    report = ProgramReport(
        name=key,
        what=f"T5 encoder: {max_length} tokens",
        batch=batch,
        steps=1,
        params=int(sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(params))),
        param_bytes_per_chip=shard_bytes(params),
    )
    compute = jnp.bfloat16 if param_dtype is not None else jnp.float32
    lowered = jax.jit(lambda p, i, m: encode_tokens(p, i, m, config=t5, dtype=compute)).lower(params, ids, mask)
    return _compile(report, lowered, chip)


def sampling_check(
    configs: list,
    topology: str | TpuSlice,
    *,
    batch: int | None = None,
    param_dtype: str = "bfloat16",
    names: list[str] | None = None,
    text_encoder: bool = True,
) -> SamplingReport:
    """Compile a cascade's sampling (stage configs base first, as ConfigDicts or dicts) for
    a TPU slice; batch: global images per batch (default 4 per chip)."""
    tpu_slice = parse_slice(topology) if isinstance(topology, str) else topology
    chip = tpu_slice.chip
    mesh = make_mesh(data=1, fsdp=-1, devices=topology_devices(tpu_slice))
    batch = int(batch or 4 * tpu_slice.chips)
    dtype = None if param_dtype == "float32" else jnp.dtype(param_dtype)
    configs = [to_dict(c) if isinstance(c, ml_collections.ConfigDict) else c for c in configs]
    names = names or [f"stage{i}" for i in range(len(configs))]
    programs = []
    if text_encoder:
        lengths = {int(c["data"]["max_text_length"]) for c in configs}
        encoder = configs[0]["text"]["encoder"]
        length = max(lengths)
        programs.append(text_encoder_program(encoder, mesh, chip, batch=batch, max_length=length, param_dtype=dtype))
    for name, config in zip(names, configs):
        programs.append(stage_program(config, mesh, chip, name=name, batch=batch, param_dtype=dtype))
    report = SamplingReport(
        topology=tpu_slice.name,
        physical_topology=tpu_slice.topology,
        chip=chip.generation,
        chips=tpu_slice.chips,
        hbm_bytes=chip.hbm_bytes,
        param_dtype=param_dtype,
        programs=programs,
    )
    report.resident_param_bytes = sum(p.param_bytes_per_chip for p in programs)
    report.total_bytes = report.resident_param_bytes + max(p.working_bytes for p in programs)
    report.fits = all(p.error is None for p in programs) and report.total_bytes <= chip.hbm_bytes
    if all(p.images_per_sec for p in programs):
        report.images_per_sec = 1.0 / sum(1.0 / p.images_per_sec for p in programs)
    return report
