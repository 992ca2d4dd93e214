"""Device mesh, logical-axis rules and global-batch assembly."""

from ditjax.parallel.batch import make_global_batch
from ditjax.parallel.distributed import initialize_distributed, wait_for_all_processes
from ditjax.parallel.mesh import (
    LOGICAL_AXIS_RULES,
    MESH_AXES,
    batch_sharding,
    create_mesh,
    logical_shardings,
    replicated,
    resolve_mesh_shape,
)

__all__ = [
    "LOGICAL_AXIS_RULES",
    "MESH_AXES",
    "batch_sharding",
    "create_mesh",
    "initialize_distributed",
    "logical_shardings",
    "make_global_batch",
    "replicated",
    "resolve_mesh_shape",
    "wait_for_all_processes",
]
