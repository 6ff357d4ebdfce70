"""Helpers for the tests that start several JAX processes on this machine."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_env(port: int, process_id: int, num_processes: int = 2) -> dict:
    """What srun gives each task (the variables JAX's own SlurmCluster detection reads),
    with the coordinator on this host at `port`."""
    return dict(
        SLURM_JOB_ID="7",
        SLURM_STEP_NODELIST="localhost",
        SLURM_NTASKS=str(num_processes),
        SLURM_PROCID=str(process_id),
        SLURM_LOCALID="0",
        JAX_COORDINATOR_PORT=str(port),
    )


def without_cluster_variables(env: dict) -> dict:
    """`env` without IMAGEN_JAX_* and SLURM_* variables (the test chooses them)."""
    return {k: v for k, v in env.items() if not k.startswith(("IMAGEN_JAX_", "SLURM_"))}
