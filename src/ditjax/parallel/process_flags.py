"""The command-line flags that place a process in a multi-process job, shared by the entry
points that run on every host (train, extract_latents, sample), defined once."""

from __future__ import annotations

from absl import flags

from ditjax.parallel.distributed import initialize_distributed

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for clusters JAX cannot detect."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in the job.")


def initialize_from_flags() -> None:
    """`jax.distributed` start-up from --coordinator_address, --num_processes, --process_id
    (or the cluster JAX detects); nothing for a lone process."""
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
