"""Host memory of loading a T5 checkpoint: the plain loader (the whole encoder as numpy, then
copied to the devices) against the sharded one (load_text_encoder(mesh=): each tensor read,
cast and put on its FSDP shards before the next). Each load runs in a fresh process; its peak
resident set (psutil, polled every 20 ms) is compared with the process's resident set before
the load and after it. On CPU the "devices" are host memory, so what the params occupy stays
resident (8 replicas for the plain loader on 8 devices, one sharded copy for the other);
the transient is the load's own overhead on top of that.

    python benchmarks/t5_load_memory.py                      # T5-XXL's 24 layers and vocab at width 1024
    python benchmarks/t5_load_memory.py --d-model 512 --devices 8

The last row loads the same checkpoint in 2 processes (jax.distributed over gloo) of
devices / 2 each: how many bytes each process reads (psutil read_chars: the checkpoint's
bytes, plus the few MiB of libraries a fresh process reads) shows that it reads only the
rows its devices' shards need (the tensors whose shards split the stored rows), and whole
tensors only where the split falls on the stored columns.

The checkpoint is generated (random weights, save_hf_checkpoint: config.json + one
model.safetensors, float32) with T5-XXL's layer count, heads' layout and vocabulary at a
reduced width. The per-device figure for the real XXL shapes is computed from its shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from results_io import RESULTS_DIR, write_results

REPO = Path(__file__).resolve().parents[1]

LOAD = """
import json, sys, time, psutil, jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from imagen_jax.parallel import make_mesh
from imagen_jax.text.encoder import sharded_placer
from imagen_jax.text.hf_checkpoint import load_hf_checkpoint
from imagen_jax.parallel import initialize
initialize()  # several processes: IMAGEN_JAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID
before = psutil.Process().memory_info().rss
read_before = psutil.Process().io_counters().read_chars
start = time.perf_counter()
mesh = make_mesh(data=1, fsdp=-1)
dtype = np.dtype(sys.argv[3])
if sys.argv[2] == "sharded":  # load_text_encoder(mesh=)'s path
    _, params = load_hf_checkpoint(sys.argv[1], dtype, sharded_placer(mesh))
else:  # load_text_encoder()'s path: numpy, then replicated on the devices
    _, params = load_hf_checkpoint(sys.argv[1], dtype)
    params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
jax.block_until_ready(params)
seconds = time.perf_counter() - start
leaves = jax.tree_util.tree_leaves(params)
shards = [s for x in leaves for s in x.addressable_shards]
per_device = max(sum(s.data.nbytes for s in shards if s.device == d) for d in jax.local_devices())
rss = psutil.Process().memory_info().rss
read = psutil.Process().io_counters().read_chars - read_before
total = sum(x.nbytes for x in leaves)
print(json.dumps(dict(before=before, after=rss, seconds=seconds, param_bytes=total, per_device_bytes=per_device,
                      read_bytes=read)))
"""


def measure(checkpoint: str, mode: str, dtype: str, devices: int, processes: int = 1) -> dict:
    """One load in `processes` fresh processes holding devices / processes CPU devices each
    (several: jax.distributed over gloo); the figures are the first process's."""
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices // processes}"
    )
    if processes > 1:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env.update(
            IMAGEN_JAX_COORDINATOR=f"127.0.0.1:{port}",
            IMAGEN_JAX_NUM_PROCESSES=str(processes),
            JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        )
    procs = [
        psutil.Popen(
            [sys.executable, "-c", LOAD, checkpoint, mode, dtype],
            env=dict(env, IMAGEN_JAX_PROCESS_ID=str(i)) if processes > 1 else env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(processes)
    ]
    proc = procs[0]
    peak = [0]

    def poll():
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)

    thread = threading.Thread(target=poll)
    thread.start()
    outputs = [p.communicate() for p in procs]
    thread.join()
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(err.decode()[-3000:])
    rows = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    row = rows[0]
    mib = lambda n: round(n / 2**20, 1)  # noqa: E731
    return {
        "loader": mode,
        "param_dtype": dtype,
        "devices": devices,
        "processes": processes,
        "params_mib": mib(row["param_bytes"]),
        "per_device_mib": mib(row["per_device_bytes"]),
        "resident_after_mib": mib(row["after"] - row["before"]),  # what the loaded params occupy
        "peak_over_start_mib": mib(peak[0] - row["before"]),
        "transient_mib": mib(peak[0] - row["after"]),  # the load's own overhead on top
        "read_mib_per_process": [mib(r["read_bytes"]) for r in rows],  # bytes read() from the checkpoint (and libs)
        "seconds": round(row["seconds"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=1024, help="width (T5-XXL: 4096)")
    parser.add_argument("--devices", type=int, default=8, help="CPU devices of the sharded loader's mesh")
    parser.add_argument("--out", default=str(RESULTS_DIR / "t5_load_memory.json"))
    args = parser.parse_args()

    import numpy as np

    from imagen_jax.text.config import T5_V1_1_CONFIGS
    from imagen_jax.text.hf_checkpoint import save_hf_checkpoint
    from imagen_jax.text.t5 import param_shapes

    xxl = T5_V1_1_CONFIGS["t5-v1_1-xxl"]
    scale = args.d_model / xxl.d_model
    config = dataclasses.replace(
        xxl, d_model=args.d_model, d_ff=int(xxl.d_ff * scale), num_heads=max(1, int(xxl.num_heads * scale))
    )
    xxl_params = sum(math.prod(s) for s in param_shapes(xxl).values())
    rng = np.random.default_rng(0)
    params = {}
    for path, shape in param_shapes(config).items():
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imagen_jax_t5_") as tmp:
        save_hf_checkpoint(tmp, params, config)
        size = (Path(tmp) / "model.safetensors").stat().st_size
        del params
        for mode in ("plain", "sharded"):
            for dtype in ("float32", "bfloat16"):
                row = measure(tmp, mode, dtype, args.devices)
                rows.append(row)
                print(row)
        row = measure(tmp, "sharded", "bfloat16", args.devices, processes=2)  # each process reads its slices
        rows.append(row)
        print(row)
    xxl_bf16_per_device = 2 * xxl_params / args.devices
    write_results(
        args.out,
        {
            "checkpoint": {
                "d_model": config.d_model,
                "d_ff": config.d_ff,
                "layers": config.num_layers,
                "heads": config.num_heads,
                "vocab": config.vocab_size,
                "safetensors_mib": size / 2**20,
            },
            "t5_xxl_params": xxl_params,
            "t5_xxl_bf16_bytes_per_device_fsdp": xxl_bf16_per_device,
            "rows": rows,
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
