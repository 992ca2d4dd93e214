"""Training: state, step, optimizer, checkpoints, previews and the loop."""

from ditjax.training.checkpoint import Checkpointer
from ditjax.training.config import ConfigError, build_model, validate_config
from ditjax.training.loop import NonFiniteLossError, TrainResult, train_and_evaluate
from ditjax.training.optimizer import learning_rate_schedule, make_optimizer
from ditjax.training.state import TrainState, create_train_state
from ditjax.training.step import make_train_step

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
    "train_and_evaluate",
    "validate_config",
]
