"""Named DiT variants, DiT-S/2 ... DiT-XL/8, and `create_model`."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from ditjax.models.blocks import BLOCK_TYPES
from ditjax.models.dit import REMAT_POLICIES, DiT, input_hw

DIT_SIZES: dict[str, dict[str, int]] = {
    "S": {"depth": 12, "hidden_size": 384, "num_heads": 6},
    "B": {"depth": 12, "hidden_size": 768, "num_heads": 12},
    "L": {"depth": 24, "hidden_size": 1024, "num_heads": 16},
    "XL": {"depth": 28, "hidden_size": 1152, "num_heads": 16},
}
PATCH_SIZES = (2, 4, 8)
MODEL_NAMES: tuple[str, ...] = tuple(
    f"DiT-{size}/{patch}" for size in DIT_SIZES for patch in PATCH_SIZES
)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def parse_model_name(name: str) -> dict[str, int]:
    """'DiT-XL/2' -> {'depth': 28, 'hidden_size': 1152, 'num_heads': 16, 'patch_size': 2}."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model name {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    size, patch = name[len("DiT-") :].split("/")
    return {**DIT_SIZES[size], "patch_size": int(patch)}


def create_model(name: str, **overrides: Any) -> DiT:
    """The DiT called `name` (e.g. 'DiT-XL/2'), with any DiT field overridden.

    `dtype` may be given as a string ('bfloat16'). Raises ValueError naming a bad field.
    """
    fields = {f.name for f in dataclasses.fields(DiT)} - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown DiT field(s) {unknown}; valid fields: {sorted(fields)}")
    kwargs: dict[str, Any] = {**parse_model_name(name), **overrides}
    if isinstance(kwargs.get("dtype"), str):
        if kwargs["dtype"] not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {kwargs['dtype']!r}")
        kwargs["dtype"] = DTYPES[kwargs["dtype"]]
    model = DiT(**kwargs)
    validate_model(model)
    return model


def validate_model(model: DiT) -> None:
    """Raises ValueError naming the field of an impossible DiT configuration."""
    if model.block_type not in BLOCK_TYPES:
        raise ValueError(f"block_type must be one of {BLOCK_TYPES}, got {model.block_type!r}")
    if model.remat_policy not in REMAT_POLICIES:
        raise ValueError(
            f"remat_policy must be one of {REMAT_POLICIES}, got {model.remat_policy!r}"
        )
    if model.hidden_size % model.num_heads:
        raise ValueError(
            f"hidden_size {model.hidden_size} is not divisible by num_heads {model.num_heads}"
        )
    if model.hidden_size % 4:
        raise ValueError(f"hidden_size {model.hidden_size} must be divisible by 4")
    if any(side % model.patch_size for side in input_hw(model.input_size)):
        raise ValueError(
            f"input_size {model.input_size} is not divisible by patch_size {model.patch_size}"
        )
    if model.num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {model.num_classes}")
    if not 0.0 <= model.class_dropout_prob < 1.0:
        raise ValueError(f"class_dropout_prob must be in [0, 1), got {model.class_dropout_prob}")
