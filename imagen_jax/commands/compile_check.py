"""`imagen-jax compile-check --config configs/X.py --topology v4-256 [--config.key=value ...]`
`imagen-jax compile-check --sample --config BASE.py --config SR.py ... --topology v4-8`

Compiles the config's real train step for a TPU slice on this machine (CPU is enough;
needs libtpu: pip install 'imagen-jax[tpu-aot]') and prints per-chip memory against the
chip's HBM, FLOPs per step, the estimated step time, images/s and MFU. Exit status 0 when
it fits, 1 when it does not (the output says by how much), 2 for a usage error. With
--config.data.text=tokens the step includes the frozen T5 of text.encoder (its shape from
its config.json or known hub id; bf16, FSDP-sharded), and its params and FLOPs are shown.
With --sample: the stage configs (base first) form a cascade; compiles what `imagen-jax
sample` runs (the T5 encoder and each stage's whole sampler, params FSDP-sharded, the batch
split over the chips) and prints each program's per-chip memory and estimated images/s, and
the cascade's (all params resident). Overrides: --config.STAGE.sampling.FIELD=VALUE.
Topologies: v4-N and v5p-N (N TensorCores, N/2 chips), v5e-N / v5litepod-N and v6e-N
(N chips), or an explicit physical topology such as v4:4x4x8.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from imagen_jax import storage
from imagen_jax.aot.tpu_slices import GIB
from imagen_jax.cli import log_to_stderr


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compile-check",
        help="compile the train step for a TPU slice here and report whether it fits (needs libtpu)",
        description=__doc__ + "\nAny --config.a.b=VALUE overrides that config field (typed like the field).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", action="append", required=True, help="config file, optionally path.py:ARG (--sample: one per stage)"
    )
    parser.add_argument("--sample", action="store_true", help="compile the cascade's sampling instead of training")
    parser.add_argument(
        "--param-dtype", choices=("bfloat16", "float32"), default="bfloat16", help="--sample: params' dtype"
    )
    parser.add_argument("--no-text-encoder", action="store_true", help="--sample: leave the T5 encoder out")
    parser.add_argument("--topology", required=True, help="TPU slice: v4-256, v5p-128, v5e-256, v6e-256, v4:4x4x8, ...")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="global batch (default: train.batch_size; --sample: 4 images per chip)",
    )
    parser.add_argument("--output", default=None, help="also write the report as JSON to this file")
    parser.set_defaults(run=run, accepts_config_overrides=True)


def _gib(n) -> str:
    if n is None:
        return "-"
    return f"{n / GIB:.2f} GiB" if n >= GIB / 4 else f"{n / 1024**2:.1f} MiB"


def format_report(report, config_name: str = "") -> str:
    """A readable two-column table of a CompileReport."""
    mesh = " x ".join(f"{k} {v}" for k, v in report.mesh.items())
    rows = [
        ("config", config_name or "-"),
        ("topology", f"{report.topology} ({report.physical_topology}, {report.chips} {report.chip} chips)"),
        ("mesh", mesh),
        (
            "global batch",
            f"{report.global_batch} ({report.grad_accum_steps} micro-batch(es) of "
            f"{report.global_batch // report.chips // report.grad_accum_steps} per chip)",
        ),
        ("parameters", f"{report.params:,}"),
        ("state per chip", _gib(report.state_bytes_per_chip) + "  (params, EMA, optimizer: this chip's shards)"),
    ]
    if report.text_encoder:
        rows.append(
            (
                "text encoder",
                f"{report.text_encoder}, {report.text_params:,} params, "
                f"{_gib(report.text_param_bytes_per_chip)} per chip (bfloat16, FSDP), run inside the step",
            )
        )
    if report.error is None:
        used = (
            f"{_gib(report.total_bytes)} of {_gib(report.hbm_bytes)} HBM ({report.total_bytes / report.hbm_bytes:.0%})"
        )
        xla_step = f"{report.xla_step_s:.3f} s" if report.xla_step_s is not None else "not reported"
        model = "3 x UNet forward" + (" + T5 forward" if report.text_encoder else "")
        flops = (
            f"{report.model_flops_per_step / 1e12:,.1f} TFLOP model ({model}); "
            f"XLA: {report.flops_per_chip / 1e12:,.2f} TFLOP per chip, remat included"
            + (f" ({report.grad_accum_steps} x the micro-batch loop)" if report.grad_accum_steps > 1 else "")
        )
        rows += [
            ("arguments", _gib(report.argument_bytes)),
            ("temporaries", _gib(report.temp_bytes)),
            ("outputs not aliased", _gib(report.output_bytes - report.alias_bytes)),
            ("generated code", _gib(report.generated_code_bytes)),
            ("XLA peak", _gib(report.xla_peak_bytes or None)),
            ("total per chip", used),
            ("FLOPs per step", flops),
            *(
                [("T5 forward", f"{report.text_flops_per_step / 1e12:,.1f} TFLOP per step")]
                if report.text_encoder
                else []
            ),
            ("XLA step estimate", xla_step),
            ("roofline step time", f"{report.roofline_step_s:.3f} s (flops, HBM bytes; no communication)"),
            ("images/s", f"{report.images_per_sec:,.0f}  (at {report.step_s:.3f} s/step, {report.step_s_source})"),
            ("MFU", f"{report.mfu:.1%}"),
        ]
    else:
        needed = (
            f"{_gib(report.total_bytes)} of temporaries alone, against the {_gib(report.xla_available_bytes)} "
            "of HBM XLA can use"
        )
        rows += [("total per chip", needed), ("XLA", report.error)]
    rows.append(("compile time", f"{report.compile_s:.0f} s"))
    if report.fits:
        verdict = "FITS"
    elif report.total_bytes:
        verdict = f"DOES NOT FIT: over by {_gib(report.over_by_bytes)}"
    else:
        verdict = "DOES NOT FIT"
    rows.append(("verdict", verdict))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:>{width}}  {v}" for k, v in rows)


def run(args) -> int:
    import jax

    # The slice's devices are compile-only; this machine's accelerator (if any) is not used.
    if "JAX_PLATFORMS" not in os.environ:
        jax.config.update("jax_platforms", "cpu")
    from imagen_jax.aot.compile_check import compile_check
    from imagen_jax.aot.tpu_slices import parse_slice
    from imagen_jax.config import apply_overrides, load_config, to_dict

    log_to_stderr(logging.WARNING)
    tpu_slice = parse_slice(args.topology)
    if args.sample:
        return run_sampling(args, tpu_slice)
    if len(args.config) != 1:
        raise ValueError("compile-check takes one --config (several only with --sample: a cascade's stages)")
    args.config = args.config[0]
    config = apply_overrides(load_config(args.config), args.config_overrides)
    report = compile_check(config, tpu_slice, global_batch=args.batch_size)
    print(format_report(report, args.config))
    if args.output:
        record = {
            "config": args.config,
            "overrides": list(args.config_overrides),
            **report.to_dict(),
            "jax_version": jax.__version__,
            "config_values": to_dict(config),
        }
        storage.write_text(args.output, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return 0 if report.fits else 1


def format_sampling_report(report, configs: list[str]) -> str:
    """One row per program and the cascade's line."""
    head = (
        f"cascade sampling on {report.topology} ({report.physical_topology}, {report.chips} {report.chip} chips), "
        f"params {report.param_dtype}, FSDP over all chips"
    )
    header = f"{'program':<14} {'what':<48} {'batch':>5} {'params/chip':>11} {'working':>10} {'images/s':>9}"
    lines = [head, header]
    for p in report.programs:
        rate = f"{p.images_per_sec:,.1f}" if p.images_per_sec else "-"
        working = _gib(p.working_bytes) if p.error is None else "OOM"
        lines.append(
            f"{p.name:<14} {p.what:<48} {p.batch:>5} {_gib(p.param_bytes_per_chip):>11} {working:>10} {rate:>9}"
        )
        if p.error:
            lines.append(f"{'':<14} XLA: {p.error}")
    rate = f"{report.images_per_sec:,.2f} images/s" if report.images_per_sec else "-"
    lines.append(
        f"cascade: {_gib(report.total_bytes)} of {_gib(report.hbm_bytes)} per chip "
        f"(params of every program {_gib(report.resident_param_bytes)} + the largest working set); {rate}"
    )
    lines.append("verdict: " + ("FITS" if report.fits else "DOES NOT FIT"))
    lines.append("stages: " + ", ".join(configs))
    return "\n".join(lines)


def run_sampling(args, tpu_slice) -> int:
    import jax

    from imagen_jax.aot.sampling_check import sampling_check
    from imagen_jax.commands.sample import stage_overrides
    from imagen_jax.config import apply_overrides, load_config, to_dict

    per_stage = stage_overrides(args.config_overrides, len(args.config))
    configs = [apply_overrides(load_config(c), o) for c, o in zip(args.config, per_stage)]
    names = [os.path.splitext(os.path.basename(c.partition(":")[0]))[0] for c in args.config]
    report = sampling_check(
        configs,
        tpu_slice,
        batch=args.batch_size,
        param_dtype=args.param_dtype,
        names=names,
        text_encoder=not args.no_text_encoder,
    )
    print(format_sampling_report(report, args.config))
    if args.output:
        record = {
            "configs": args.config,
            "overrides": list(args.config_overrides),
            **report.to_dict(),
            "jax_version": jax.__version__,
            "config_values": [to_dict(c) for c in configs],
        }
        storage.write_text(args.output, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return 0 if report.fits else 1
