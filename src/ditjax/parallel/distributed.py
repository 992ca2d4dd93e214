"""Multi-process start-up through JAX's own runtime (`jax.distributed`)."""

from __future__ import annotations

import logging
import os

import jax


def _looks_multiprocess() -> bool:
    """Whether a cluster launcher (SLURM, Open MPI, a TPU pod) started several processes."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h]) > 1


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls `jax.distributed.initialize` when this is one of several processes.

    TPU VM pods, SLURM and Open MPI are detected by JAX from the environment; anything else
    passes the coordinator address, process count and id. Returns whether it initialised.
    """
    explicit = coordinator_address is not None or (num_processes or 1) > 1
    if not explicit and not _looks_multiprocess():
        return False
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        # CPU-only multi-process runs (tests, laptops) need gloo for cross-process collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if coordinator_address is not None:
        kwargs["coordinator_address"] = coordinator_address
    if num_processes is not None:
        kwargs["num_processes"] = num_processes
    if process_id is not None:
        kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
    logging.info(
        "process %d of %d; %d local and %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def wait_for_all_processes(name: str, timeout_s: int) -> None:
    """Blocks until every process has called this with the same `name` (used once per run);
    raises when `timeout_s` passes first, or a process has died. A no-op in one process.

    A barrier of the coordination service, not a device collective, so a long wait (one host
    still encoding while the others are done) is fine.
    """
    from orbax.checkpoint import multihost

    multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)
