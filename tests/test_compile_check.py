"""`imagen-jax compile-check`: TPU slice names, and the real train step compiled for a small
TPU topology on this CPU machine (needs libtpu; skipped with the reason where it is missing)."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest

from imagen_jax.aot.compile_check import parse_hbm_oom
from imagen_jax.aot.tpu_slices import GIB, parse_slice
from imagen_jax.cli import main

REPO = Path(__file__).resolve().parents[1]
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install 'imagen-jax[tpu-aot]')")

# A ~60k-parameter base UNet: the same code path as base64_2b, compiled in well under a minute.
TINY = [
    "--config",
    "configs/shapes_base32.py",
    "--config.model.channels=8",
    "--config.model.channel_mult=(1,2)",
    "--config.model.attention_resolutions=(16,)",
    "--config.model.head_dim=8",
    "--config.model.embed_dim=32",
    "--config.model.noise_sinusoid_dim=16",
    "--config.model.text_dim=16",
    "--config.model.text_pool_heads=2",
    "--config.model.norm_groups=4",
    "--config.data.max_text_length=8",
    "--config.mesh.data=2",
    "--config.mesh.fsdp=2",
]


@pytest.mark.parametrize(
    "name, topology, chips, megacore",
    [
        ("v4-8", "v4:2x2x1", 4, True),
        ("v4-256", "v4:4x4x8", 128, True),
        ("v4-128", "v4:4x4x4", 64, True),
        ("v5p-128", "v5:4x4x4", 64, True),
        ("v5e-256", "v5e:16x16", 256, False),
        ("v5litepod-64", "v5e:8x8", 64, False),
        ("v6e-256", "v6e:16x16", 256, False),
        ("V4:4x4x8", "v4:4x4x8", 128, True),
        ("v6e:8x16", "v6e:8x16", 128, False),
    ],
)
def test_slice_names(name, topology, chips, megacore):
    tpu_slice = parse_slice(name)
    assert (tpu_slice.topology, tpu_slice.chips) == (topology, chips)
    options = tpu_slice.topology_options()
    assert options["chip_config_name"] == ("megacore" if megacore else "default")
    assert options["topology_name"] == topology


def test_slice_chip_figures():
    assert parse_slice("v4-256").chip.hbm_bytes == 32 * GIB
    assert parse_slice("v5e-16").chip.hbm_bytes == 16 * GIB
    assert parse_slice("v5p-8").chip.peak_tflops == 459.0
    assert parse_slice("v6e-4").chip.peak_tflops == 918.0
    assert parse_slice("v4-256").wrap == (True, True, True)
    assert parse_slice("v4-8").wrap == (False, False, False)
    assert parse_slice("v5e-128").wrap == (False, True, False)


@pytest.mark.parametrize("name", ["v9-8", "v4-100", "v4", "v5e:4x4x4", "tpu"])
def test_unknown_slice_names_the_valid_ones(name):
    with pytest.raises(ValueError, match=r"unknown TPU topology .*v4-256.*v6e-256.*v4:4x4x8"):
        parse_slice(name)


def test_cli_unknown_topology(capsys):
    rc = main(["compile-check", "--config", "configs/shapes_base32.py", "--topology", "v9-8"])
    out = capsys.readouterr().err  # one line: "imagen-jax compile-check: error: ..."
    assert rc == 2
    assert "unknown TPU topology 'v9-8'" in out and "v4-256" in out


def test_parse_hbm_oom():
    message = (
        "RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: Ran out of memory on HBM, the total memory required "
        "for HLO temporaries (55.30G) exceeds available HBM (30.75G). HLO module: jit_train_step."
    )
    required, available = parse_hbm_oom(message)
    assert required == int(55.30 * GIB) and available == int(30.75 * GIB)
    assert parse_hbm_oom("something else") is None


TOKENS = ["--config.data.text=tokens", "--config.text.encoder=tiny-random-byt5", "--config.model.text_dim=256"]


def compile_check(out: Path, *extra: str) -> tuple[int, str, dict]:
    """(exit status, printed text, JSON report) of compile-check of TINY on v4-8, global batch 16."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["compile-check", *TINY, *extra, "--topology", "v4-8", "--batch-size", "16", "--output", str(out)])
    return rc, printed.getvalue(), json.loads(out.read_text()) if out.exists() else {}


@pytest.fixture(scope="module")
def tokens_report(tmp_path_factory):
    """TINY with the T5 inside the step (data.text=tokens), one micro-batch: compiled once for
    the fit test and as the accumulation test's baseline (each compile is a minute here)."""
    if not HAS_LIBTPU:
        pytest.skip("libtpu is not installed")
    return compile_check(tmp_path_factory.mktemp("compile_check") / "accum1.json", *TOKENS)


@needs_libtpu
def test_tiny_config_fits_on_v4_8(tokens_report):
    rc, printed, report = tokens_report
    assert rc == 0, printed
    assert "FITS" in printed and "v4:2x2x1" in printed
    assert report["fits"] and report["error"] is None
    assert report["chips"] == 4 and report["mesh"] == {"data": 2, "fsdp": 2} and report["global_batch"] == 16
    # params + EMA + Adam's two moments, fp32; fsdp halves the large ones, so at least a quarter of it all.
    assert report["state_bytes_per_chip"] >= 4 * 4 * report["params"] / 2 / 2
    assert report["argument_bytes"] >= report["state_bytes_per_chip"]
    assert report["alias_bytes"] >= report["state_bytes_per_chip"]  # the donated state is updated in place
    assert report["state_bytes_per_chip"] < report["total_bytes"] <= report["hbm_bytes"] == 32 * GIB
    assert report["flops_per_chip"] > 0 and report["bytes_accessed_per_chip"] > 0
    # XLA's count per chip includes the optimizer and the noise; the model's 3 x forward is below 4 chips' worth.
    assert 0 < report["model_flops_per_step"] < 4 * report["flops_per_chip"]
    assert report["step_s"] > 0 and report["roofline_step_s"] > 0
    assert report["images_per_sec"] == pytest.approx(16 / report["step_s"])
    assert 0 < report["mfu"] < 1
    assert report["config_values"]["train"]["batch_size"] == 32  # the config as loaded; --batch overrode it


@needs_libtpu
def test_huge_batch_does_not_fit(tmp_path, capsys):
    out = tmp_path / "report.json"
    rc = main(["compile-check", *TINY, "--topology", "v4-8", "--batch-size", "65536", "--output", str(out)])
    printed = capsys.readouterr().out
    assert rc == 1, printed
    report = json.loads(out.read_text())
    assert not report["fits"] and "memory" in report["error"]
    # XLA's own numbers: what the step needs against what a v4 chip offers it (under its 32 GiB).
    assert 0 < report["xla_available_bytes"] <= 32 * GIB < report["total_bytes"]
    assert report["over_by_bytes"] == report["total_bytes"] - report["xla_available_bytes"]
    assert f"DOES NOT FIT: over by {report['over_by_bytes'] / GIB:.2f} GiB" in printed


def test_format_report_of_recorded_paper_results():
    """The committed records print as tables (fits: memory breakdown and speed; refused: XLA's numbers)."""
    import dataclasses
    from pathlib import Path

    from imagen_jax.aot.compile_check import CompileReport
    from imagen_jax.commands.compile_check import format_report

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    fields = {f.name for f in dataclasses.fields(CompileReport)}

    def load(name):
        record = json.loads((results / name).read_text())
        values = {k: v for k, v in record.items() if k in fields}
        values.setdefault("grad_accum_steps", record["config_values"]["train"]["grad_accum_steps"])
        return CompileReport(**values)

    fits = load("compile_check_base64_2b_v4-256.json")
    table = format_report(fits, "configs/base64_2b.py")
    assert fits.fits and fits.total_bytes <= fits.hbm_bytes and "FITS" in table and "v4:4x4x8" in table
    assert "data 1 x fsdp 128" in table and "1 micro-batch(es) of 16 per chip" in table
    refused = load("compile_check_sr256_600m_v4-128_accum1.json")
    table = format_report(refused, "configs/sr256_600m.py")
    assert not refused.fits and refused.over_by_bytes > 0
    assert f"DOES NOT FIT: over by {refused.over_by_bytes / GIB:.2f} GiB" in table and "CompileTimeHbmOom" in table


@needs_libtpu
def test_accumulated_step_counts_every_micro_batch(tmp_path, tokens_report):
    """XLA's cost analysis counts a loop body once; with 2 micro-batches the reported FLOPs
    and bytes must still be those of the whole batch (about the un-accumulated step's). The
    trainer's logged TFLOP/s and MFU use the same count (program.flops_per_device).
    In text mode tokens (data.text=tokens): the combined T5 + UNet step, the T5's params
    bf16 and FSDP-sharded, an argument of the step, counted in the report."""
    rc, printed, accumulated = compile_check(tmp_path / "accum2.json", *TOKENS, "--config.train.grad_accum_steps=2")
    assert rc == 0, printed
    reports = {1: tokens_report[2], 2: accumulated}
    assert reports[2]["grad_accum_steps"] == 2
    # The trainer's logged TFLOP/s and MFU are this count over the measured step time: with 2
    # micro-batches they stay within 10% of the 1-micro-batch figures (measured: +0.8%).
    assert reports[2]["flops_per_chip"] == pytest.approx(reports[1]["flops_per_chip"], rel=0.10)
    assert reports[2]["bytes_accessed_per_chip"] > 0.7 * reports[1]["bytes_accessed_per_chip"]
    assert 0 < reports[2]["mfu"] < 1
    for text in (tokens_report[1], printed):
        assert "text encoder  tiny-random-byt5" in text and "T5 forward" in text
    report = reports[1]
    assert report["text_encoder"] == "tiny-random-byt5" and report["text_params"] > 2_000_000
    # bf16, split over the 2-way fsdp axis: about half of 2 bytes per param on each chip.
    assert report["text_params"] * 2 / 2 <= report["text_param_bytes_per_chip"] < report["text_params"] * 2 * 0.6
    assert report["argument_bytes"] >= report["state_bytes_per_chip"] + report["text_param_bytes_per_chip"]
    assert 0 < report["text_flops_per_step"] < report["model_flops_per_step"]


@needs_libtpu
def test_cascade_sampling_compiles_for_v4_8(tmp_path, capsys):
    """--sample: the T5 encoder and two stages' whole samplers compiled for v4-8, params
    sharded over its 4 chips; the cascade needs every program's params plus the largest
    working set, and its rate combines the programs'."""
    tiny = tmp_path / "tiny_base.py"
    tiny.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'configs')!r})\n"
        "import shapes_base32\n\n"
        "def get_config():\n"
        "    config = shapes_base32.get_config()\n"
        "    config.model.update(channels=8, channel_mult=(1, 2), attention_resolutions=(16,), head_dim=8,\n"
        "                        embed_dim=32, noise_sinusoid_dim=16, norm_groups=4)\n"
        "    config.data.max_text_length = 8\n"
        "    return config\n"
    )
    out = tmp_path / "sampling.json"
    args = ["compile-check", "--sample", "--topology", "v4-8", "--batch-size", "8", "--output", str(out)]
    rc = main(args + ["--config", str(tiny), "--config", str(tiny), "--config.1.sampling.num_steps=4"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "FITS" in printed and "tiny-random-byt5" in printed
    report = json.loads(out.read_text())
    t5, base, again = report["programs"]
    assert [p["steps"] for p in report["programs"]] == [1, 32, 4]
    assert base["what"] == "sampler: 32 px, dpm_solver_pp_2m 32 steps, guided"
    for p in report["programs"]:
        assert p["error"] is None and p["batch"] == 8 and p["images_per_sec"] > 0
        assert 0 < p["param_bytes_per_chip"] < p["total_bytes"] <= 32 * GIB
    # bf16 params sharded by fsdp over 4 chips: at most half a float32 copy per chip, at least a quarter
    assert base["params"] / 2 <= base["param_bytes_per_chip"] <= base["params"] * 2
    # one loop body counted per program: the 4-step sampler costs a step like the 32-step one
    assert again["flops_per_step_per_chip"] == pytest.approx(base["flops_per_step_per_chip"], rel=0.05)
    assert again["images_per_sec"] == pytest.approx(8 * base["images_per_sec"], rel=0.1)
    resident = sum(p["param_bytes_per_chip"] for p in report["programs"])
    working = max(p["total_bytes"] - p["param_bytes_per_chip"] for p in report["programs"])
    assert report["resident_param_bytes"] == resident and report["total_bytes"] == resident + working
    assert report["images_per_sec"] == pytest.approx(1 / sum(1 / p["images_per_sec"] for p in report["programs"]))
