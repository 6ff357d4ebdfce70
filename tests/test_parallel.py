"""Mesh construction and logical-axis shardings on 8 fake CPU devices."""

import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P
from multihost import free_port, slurm_env, without_cluster_variables

from imagen_jax.parallel import (
    DEFAULT_RULES,
    batch_sharding,
    logical_shardings,
    make_mesh,
    rules_from_config,
)


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        w1 = self.param(
            "w1", nn.with_logical_partitioning(nn.initializers.normal(), ("embed", "mlp")), (x.shape[-1], 64)
        )
        w2 = self.param(
            "w2", nn.with_logical_partitioning(nn.initializers.normal(), ("mlp", "embed")), (64, x.shape[-1])
        )
        odd = self.param("odd", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (6,))
        plain = self.param("plain", nn.initializers.zeros, (3,))
        qkv = self.param(
            "qkv", nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "heads", "kv")), (x.shape[-1], 3, 8)
        )
        heads = self.param(
            "heads", nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "heads", "kv")), (x.shape[-1], 4, 8)
        )
        return jax.nn.relu(x @ w1) @ w2 + odd.sum() + plain.sum() + qkv.sum() + heads.sum()


def test_make_mesh_shapes_and_errors():
    assert jax.device_count() == 8
    mesh = make_mesh(data=2, fsdp=4)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    assert dict(make_mesh(fsdp=-1, data=1).shape) == {"data": 1, "fsdp": 8}
    assert dict(make_mesh().shape) == {"data": 8, "fsdp": 1}
    with pytest.raises(ValueError, match="data \\* fsdp == 8"):
        make_mesh(data=3, fsdp=2)
    with pytest.raises(ValueError, match="data \\* fsdp == 8"):
        make_mesh(data=-1, fsdp=3)


def test_logical_shardings_follow_rules_and_fall_back_when_indivisible():
    mesh = make_mesh(data=2, fsdp=4)
    abstract = jax.eval_shape(TinyMLP().init, jax.random.key(0), jnp.zeros((2, 16)))
    shardings = logical_shardings(abstract, mesh, DEFAULT_RULES)["params"]
    assert shardings["w1"].spec == P(None, "fsdp")  # 'mlp' outranks 'embed'
    assert shardings["w2"].spec == P("fsdp", None)
    assert shardings["odd"].spec == P(None)  # 6 is not divisible by fsdp=4: replicated
    assert shardings["plain"].spec == P(None)  # no names: replicated
    assert shardings["heads"].spec == P(None, "fsdp", None)  # 'heads' outranks 'embed'
    assert shardings["qkv"].spec == P("fsdp", None, None)  # 3 heads do not divide fsdp=4: 'embed' takes it
    assert batch_sharding(mesh, 4).spec == P(("data", "fsdp"), None, None, None)


def test_rules_from_config_accepts_json_lists():
    rules = rules_from_config([["batch", ["data", "fsdp"]], ["embed", "fsdp"], ["mlp", None]])
    assert rules == (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", None))
    assert rules_from_config(None) == DEFAULT_RULES


def test_partial_multihost_settings_are_one_clear_error(monkeypatch):
    from imagen_jax.parallel import distributed, initialize

    # An earlier in-process `train` (the demo test) has already initialized this process.
    monkeypatch.setattr(distributed, "_initialized", False)
    monkeypatch.setenv("IMAGEN_JAX_COORDINATOR", "127.0.0.1:1234")
    monkeypatch.delenv("IMAGEN_JAX_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("IMAGEN_JAX_PROCESS_ID", raising=False)
    with pytest.raises(ValueError, match="num_processes, process_id missing.*IMAGEN_JAX_NUM_PROCESSES"):
        initialize()


def test_a_multi_host_job_that_jax_cannot_detect_is_one_clear_error(monkeypatch):
    """SLURM_NTASKS=2 outside srun (no step node list): JAX's detection finds no cluster, and
    the start-up stops instead of training two independent single-host runs."""
    from imagen_jax.parallel import distributed, initialize

    monkeypatch.setattr(distributed, "_initialized", False)
    for name in ("IMAGEN_JAX_COORDINATOR", "IMAGEN_JAX_NUM_PROCESSES", "IMAGEN_JAX_PROCESS_ID", "SLURM_STEP_NODELIST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert distributed.detect_cluster() is None
    with pytest.raises(distributed.MultiHostStartupError, match="SLURM_NTASKS=2, but JAX's cluster detection finds no"):
        initialize()
    assert not distributed._initialized


def test_a_process_whose_peers_never_come_stops_at_start_up(tmp_path):
    """JAX detects a 2-process SLURM job; only process 0 starts: it stops within the init
    timeout, after our one line saying what it was joining and what the abort means."""
    import subprocess
    import sys
    import time

    env = dict(
        without_cluster_variables(os.environ),
        **slurm_env(free_port(), 0),
        IMAGEN_JAX_INIT_TIMEOUT_SECONDS="3",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", "from imagen_jax.parallel import initialize; initialize(); print('joined')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "joined" not in proc.stdout
    assert time.monotonic() - started < 3 + 30
    assert "joining the slurm cluster JAX detected (2 processes)" in proc.stderr, proc.stderr[-2000:]
    assert "DEADLINE_EXCEEDED" in proc.stderr


def test_train_step_pins_activations_to_the_batch_shards():
    """Without a rules context the models' nn.with_logical_constraint calls vanish from the
    program; `lower_training` traces under `activation_sharding`, so every ResNet block's
    output is constrained to batch over (data, fsdp) and nothing else."""
    import re

    from imagen_jax.config import load_config
    from imagen_jax.train.program import lower_training

    config = load_config("configs/demo.py:smoke").base
    mesh = make_mesh(data=2, fsdp=4)
    text = lower_training(config, mesh, DEFAULT_RULES, global_batch=8).lowered.as_text()
    constraints = re.findall(r"sdy\.sharding_constraint[^<]*<@mesh, \[([^\]]*)\]>", text)
    image_features = [c for c in constraints if c.count("{") == 4]  # [B, H, W, C]
    assert len(image_features) >= 10, constraints
    assert set(image_features) == {'{"data", "fsdp"}, {}, {}, {}'}
    assert all(c.startswith('{"data", "fsdp"}') for c in constraints)

    config.train.grad_accum_steps = 2  # micro-batches of 4 cannot spread over 8 shards
    with pytest.raises(ValueError, match="grad_accum_steps=2"):
        lower_training(config, mesh, DEFAULT_RULES, global_batch=8)


LOST_PEER = """
import time
import numpy as np
from jax.experimental import multihost_utils
from imagen_jax.parallel import initialize

initialize(cpu_collectives="gloo")
print("joined", flush=True)
step = 0
while True:  # a collective every 0.1 s, as a training loop's steps are
    multihost_utils.process_allgather(np.int32(step))
    step += 1
    time.sleep(0.1)
"""


def test_a_lost_process_ends_the_other_within_the_heartbeat_bound(tmp_path):
    """Two processes in collectives; one is SIGKILLed: the other exits non-zero within
    IMAGEN_JAX_HEARTBEAT_SECONDS (plus slack), naming the lost task, instead of hanging."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        IMAGEN_JAX_COORDINATOR=f"127.0.0.1:{port}",
        IMAGEN_JAX_NUM_PROCESSES="2",
        IMAGEN_JAX_HEARTBEAT_SECONDS="5",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOST_PEER],
            env=dict(env, IMAGEN_JAX_PROCESS_ID=str(i)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "joined"
        time.sleep(1)
        killed = time.monotonic()
        procs[1].send_signal(signal.SIGKILL)
        _, err = procs[0].communicate(timeout=60)
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode != 0
    assert waited < 5 + 10, waited
    assert "Task 1 heartbeat timeout" in err or "task 1" in err.lower(), err[-3000:]
