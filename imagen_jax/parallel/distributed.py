"""Multi-host start-up through JAX's own multi-controller runtime (design.md §7).

On a TPU pod, `jax.distributed.initialize()` needs no arguments. Elsewhere (GPU clusters,
two local CPU processes in tests) the coordinator address, process count and process id
come from arguments or the environment: IMAGEN_JAX_COORDINATOR (host:port),
IMAGEN_JAX_NUM_PROCESSES, IMAGEN_JAX_PROCESS_ID (SLURM's variables are read by JAX's
own cluster detection when these are unset).

A lost process ends the others: JAX's coordination service expects a heartbeat from every
process, and when one stops (killed, preempted, its host gone) the others abort (non-zero,
naming the lost task: "Task 1 heartbeat timeout") instead of waiting in a collective
forever. IMAGEN_JAX_HEARTBEAT_SECONDS sets that bound (JAX's default: 100 s); checkpoints
are committed atomically, so the last committed one stays intact.
"""

from __future__ import annotations

import os

import jax

_initialized = False


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str | None = None,
) -> None:
    """Join the multi-process runtime once, before any other JAX call touches devices.

    With nothing given and no IMAGEN_JAX_* variables, a single process stays single
    (no-op) unless JAX detects a cluster (TPU pod, SLURM), which it joins.
    cpu_collectives: "gloo" to run cross-process collectives on CPU devices (tests).
    """
    global _initialized
    if _initialized:
        return
    coordinator = coordinator or os.environ.get("IMAGEN_JAX_COORDINATOR")
    if num_processes is None and "IMAGEN_JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["IMAGEN_JAX_NUM_PROCESSES"])
    if process_id is None and "IMAGEN_JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["IMAGEN_JAX_PROCESS_ID"])
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    timeouts = {}
    if os.environ.get("IMAGEN_JAX_HEARTBEAT_SECONDS"):
        timeouts["heartbeat_timeout_seconds"] = int(os.environ["IMAGEN_JAX_HEARTBEAT_SECONDS"])
    explicit = coordinator is not None or num_processes is not None or process_id is not None
    if explicit:
        missing = [
            n
            for n, v in (("coordinator", coordinator), ("num_processes", num_processes), ("process_id", process_id))
            if v is None
        ]
        if missing:
            raise ValueError(
                f"multi-host: {', '.join(missing)} missing; set all three of IMAGEN_JAX_COORDINATOR (host:port), "
                "IMAGEN_JAX_NUM_PROCESSES and IMAGEN_JAX_PROCESS_ID (or pass all three to initialize())"
            )
        jax.distributed.initialize(coordinator, num_processes, process_id, **timeouts)
    elif _cluster_detected():
        jax.distributed.initialize(**timeouts)
    _initialized = True


def _cluster_detected() -> bool:
    """A TPU pod slice with several workers, or a SLURM job with several tasks."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hostnames
