"""Training: state, step, optimizer, checkpoints, previews and the loop."""

from ditjax.training.config import (
    ConfigError,
    build_model,
    resolve_dataset_fields,
    validate_config,
)
from ditjax.training.optimizer import learning_rate_schedule, make_optimizer
from ditjax.training.state import TrainState, create_train_state
from ditjax.training.step import make_train_step

_LOOP_NAMES = ("NonFiniteLossError", "TrainResult", "train_and_evaluate")


def __getattr__(name: str):
    # The loop and the checkpointer pull in the data, logging and checkpoint stacks (grain,
    # TFDS, clu, orbax); import them only when asked for, so that a train step alone (the
    # benchmark) runs without them.
    if name in _LOOP_NAMES:
        from ditjax.training import loop

        return getattr(loop, name)
    if name == "Checkpointer":
        from ditjax.training.checkpoint import Checkpointer

        return Checkpointer
    raise AttributeError(f"module 'ditjax.training' has no attribute {name!r}")


__all__ = [
    "Checkpointer",
    "ConfigError",
    "NonFiniteLossError",
    "TrainResult",
    "TrainState",
    "build_model",
    "create_train_state",
    "learning_rate_schedule",
    "make_optimizer",
    "make_train_step",
    "resolve_dataset_fields",
    "train_and_evaluate",
    "validate_config",
]
