"""The device mesh ('data', 'fsdp') and the rules that map logical axis names onto it."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")

# Logical parameter axes -> mesh axes. Weights are sharded along their model width over
# 'fsdp' and replicated over 'data'; with fsdp = 1 everything is replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", None),
    ("vocab", None),
    ("layers", None),
)


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, int]:
    """Fills one -1 entry of (data, fsdp) so the product is `num_devices`."""
    shape = [int(s) for s in mesh_shape]
    if len(shape) != 2:
        raise ValueError(f"mesh_shape must have 2 entries (data, fsdp), got {mesh_shape}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh_shape entries must be positive with at most one -1: {mesh_shape}")
    known = int(np.prod([s for s in shape if s != -1]))
    if num_devices % known:
        raise ValueError(f"mesh_shape {mesh_shape} does not divide {num_devices} devices")
    shape = [num_devices // known if s == -1 else s for s in shape]
    if shape[0] * shape[1] != num_devices:
        raise ValueError(
            f"mesh_shape {tuple(shape)} uses {shape[0] * shape[1]} devices, "
            f"but {num_devices} are available"
        )
    return shape[0], shape[1]


def create_mesh(mesh_shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp') mesh over `devices` (all devices by default)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_shape, len(devices))
    # Auto axes: XLA propagates shardings from the params and batch through the model.
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def logical_shardings(abstract_tree, mesh: Mesh):
    """NamedShardings for a tree whose leaves may carry logical axis names (Flax boxes)."""
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a global batch: its first axis split over every device."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())
