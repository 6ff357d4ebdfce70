"""Multi-host start-up through JAX's own multi-controller runtime (design.md §7).

Which cluster a process is in is found by JAX's own cluster detection, the one behind
`jax.distributed.initialize()` with no arguments: Cloud TPU VMs (the metadata server),
GKE TPU pods, SLURM (srun), Open MPI. Other clusters, and two local CPU processes in
tests, set IMAGEN_JAX_COORDINATOR (host:port), IMAGEN_JAX_NUM_PROCESSES and
IMAGEN_JAX_PROCESS_ID, which take precedence. A cluster of several processes that cannot
be joined stops the start-up with one message (never N independent single-host runs);
so does an environment that says "several processes" (SLURM_NTASKS > 1, a
TPU_WORKER_HOSTNAMES list) where JAX's detection finds no cluster.

A lost process ends the others: JAX's coordination service expects a heartbeat from every
process, and when one stops (killed, preempted, its host gone) the others abort (non-zero,
naming the lost task: "Task 1 heartbeat timeout") instead of waiting in a collective
forever. IMAGEN_JAX_HEARTBEAT_SECONDS sets that bound (JAX's default: 100 s);
IMAGEN_JAX_INIT_TIMEOUT_SECONDS how long start-up waits for every process to join (JAX's
default: 300 s). Checkpoints are committed atomically, so the last committed one stays intact.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import jax

_initialized = False


class MultiHostStartupError(RuntimeError):
    """A multi-host environment that this process could not join."""


@dataclass(frozen=True)
class DetectedCluster:
    """What JAX's own cluster detection found: the environment's name ('gcetpu',
    'gketpu', 'slurm', 'ompi', ...) and its number of processes."""

    name: str
    num_processes: int


def detect_cluster() -> DetectedCluster | None:
    """The cluster `jax.distributed.initialize()` would join with no arguments, or None.

    Uses JAX's cluster environments in JAX's order (opt-in ones such as mpi4py skipped, as
    JAX does). On a Cloud TPU VM this asks the metadata server (a few ms)."""
    from jax._src import clusters  # JAX's detection has no public entry point

    for env in clusters.ClusterEnv._cluster_types:
        if env.opt_in_only_method or not env.is_env_present():
            continue
        try:
            count = int(env.get_process_count())
        except Exception as error:  # the environment is there but incomplete
            raise MultiHostStartupError(
                f"multi-host: JAX detected a {env.name or env.__name__} cluster but could not read its process "
                f"count ({type(error).__name__}: {error}). Fix the environment, or set IMAGEN_JAX_COORDINATOR, "
                "IMAGEN_JAX_NUM_PROCESSES and IMAGEN_JAX_PROCESS_ID."
            ) from error
        return DetectedCluster(env.name or env.__name__, count)
    return None


def _multi_host_hint() -> str | None:
    """An environment variable saying this job has several processes, if one does."""
    tasks = os.environ.get("SLURM_NTASKS", "1")
    if tasks.isdigit() and int(tasks) > 1:
        return f"SLURM_NTASKS={tasks}"
    for name in ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
        if "," in os.environ.get(name, ""):
            return f"{name} lists {len(os.environ[name].split(','))} hosts"
    return None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str | None = None,
) -> None:
    """Join the multi-process runtime once, before any other JAX call touches devices.

    Given arguments or IMAGEN_JAX_* variables: join that job (all three are needed).
    Otherwise JAX's cluster detection decides: a cluster of several processes is joined
    (failure: MultiHostStartupError), anything else stays one process (no-op).
    cpu_collectives: "gloo" to run cross-process collectives on CPU devices (tests).
    """
    global _initialized
    if _initialized:
        return
    coordinator = coordinator or os.environ.get("IMAGEN_JAX_COORDINATOR")
    num_processes = num_processes if num_processes is not None else _env_int("IMAGEN_JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("IMAGEN_JAX_PROCESS_ID")
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    timeouts = {}
    if (heartbeat := _env_int("IMAGEN_JAX_HEARTBEAT_SECONDS")) is not None:
        timeouts["heartbeat_timeout_seconds"] = heartbeat
    if (init_timeout := _env_int("IMAGEN_JAX_INIT_TIMEOUT_SECONDS")) is not None:
        timeouts["initialization_timeout"] = init_timeout
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
        _join(
            f"the job of IMAGEN_JAX_COORDINATOR={coordinator}",
            num_processes,
            timeouts,
            coordinator,
            num_processes,
            process_id,
        )
    else:
        cluster = detect_cluster()
        if cluster is not None and cluster.num_processes > 1:
            _join(f"the {cluster.name} cluster JAX detected", cluster.num_processes, timeouts)
        elif hint := _multi_host_hint():
            found = f"a {cluster.name} cluster of 1 process" if cluster else "no cluster"
            raise MultiHostStartupError(
                f"multi-host: {hint}, but JAX's cluster detection finds {found} to join; these processes "
                "would train as independent single-host runs. Start them the way the cluster expects (SLURM: "
                "one srun task per host; Cloud TPU: on every worker of the slice), or set IMAGEN_JAX_COORDINATOR, "
                "IMAGEN_JAX_NUM_PROCESSES and IMAGEN_JAX_PROCESS_ID."
            )
    _initialized = True


def _join(what: str, expected: int, timeouts: dict, *args) -> None:
    """jax.distributed.initialize(*args, **timeouts), with one message on failure and a
    check that the runtime holds `expected` processes.

    A peer that never arrives makes JAX abort the process from C++ (DEADLINE_EXCEEDED:
    nothing Python can catch), so the message is printed first, then the attempt."""
    init_timeout = timeouts.get("initialization_timeout", 300)
    print(
        f"imagen-jax: joining {what} ({expected} processes); if this process aborts below with "
        f"DEADLINE_EXCEEDED, not every process reached the coordinator within {init_timeout} s "
        "(IMAGEN_JAX_INIT_TIMEOUT_SECONDS): start the run on every host, or check that they can reach each other.",
        file=sys.stderr,
        flush=True,
    )
    try:
        jax.distributed.initialize(*args, **timeouts)
    except Exception as error:
        raise MultiHostStartupError(
            f"multi-host: could not join {what} ({expected} processes): {type(error).__name__}: "
            f"{(str(error).strip().splitlines() or [''])[0][:500]}"
        ) from error
    if jax.process_count() != expected:
        raise MultiHostStartupError(
            f"multi-host: joined {what} but the runtime has {jax.process_count()} processes, not {expected}."
        )
