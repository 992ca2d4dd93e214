"""Which config changes a resumed run may make, and which would not fit its checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ditjax.training.config import ConfigError

# Fields that fix the shapes or structure of the saved state (params, optimizer state).
INCOMPATIBLE_FIELDS = (
    "model",
    "model_overrides",
    "block_type",
    "num_classes",
    "learn_sigma",
    "latent_size",
    "latent_channels",
    "scan_blocks",
    "grad_clip_norm",
    "diffusion_steps",
)


def _normalise(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def check_resume_compatible(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Raises ConfigError naming a field whose change the checkpoint cannot take.

    Gradient clipping counts as incompatible only when switched on or off (it changes the
    optimizer state's structure). Returns the changed compatible fields, which are logged.
    """
    for field in INCOMPATIBLE_FIELDS:
        if field not in saved:
            continue
        before, after = _normalise(saved[field]), _normalise(current.get(field))
        if field == "grad_clip_norm":
            before, after = bool(before), bool(after)
        if before != after:
            raise ConfigError(
                field,
                f"the checkpoint was trained with {field}={saved[field]!r}, the config asks "
                f"for {current.get(field)!r}; start a new --workdir to change it",
            )
    changed = sorted(
        k for k in current if k in saved and _normalise(saved[k]) != _normalise(current[k])
    )
    for field in changed:
        logging.info("config.%s changed on resume: %r -> %r", field, saved[field], current[field])
    return changed
