"""Orbax checkpoints of the training state, the data iterator position and the config."""

from __future__ import annotations

import logging
from typing import Any

import grain
import orbax.checkpoint as ocp
from etils import epath

STATE, DATA, CONFIG = "state", "data", "config"


class _CheckpointManager(ocp.CheckpointManager):
    """Orbax's manager, kept away from JAX's preemption sync point.

    Orbax asks the sync point too, in `save` and, on process 0, from its save-finalize
    thread with the step being saved. The sync point takes each call's step as this
    process's position, so that late call could move it back and, if a SIGTERM came just
    then, set the agreed stop step behind a step this process has already passed. The
    training loop asks once per step (PreemptionWatcher) and is the only caller.
    """

    def reached_preemption(self, step: int) -> bool:
        del step
        return False


class Checkpointer:
    """Async, atomic checkpoints with retention: the last `keep` plus every `keep_every`-th.

    Orbax writes each step to a temporary directory and renames it when complete, so an
    interrupted save never looks like a checkpoint.
    """

    def __init__(self, directory: str, *, keep: int = 3, keep_every: int = 0, async_save=True):
        path = epath.Path(directory)
        # Orbax needs absolute paths; gs:// and other URLs already are.
        self.directory = path if "://" in str(directory) else epath.Path(path.resolve())
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            keep_period=keep_every or None,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = _CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                STATE: ocp.StandardCheckpointHandler(),
                DATA: grain.checkpoint.CheckpointHandler(),
                CONFIG: ocp.JsonCheckpointHandler(),
            },
        )

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any, config: dict) -> bool:
        """Starts saving `step` (returns at once when async); False if it already exists."""
        if step in self.manager.all_steps():
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    STATE: ocp.args.StandardSave(state),
                    DATA: grain.checkpoint.CheckpointSave(data_iterator),
                    CONFIG: ocp.args.JsonSave(config),
                }
            ),
            force=True,
        )

    def save_state_only(self, step: int, state: Any, config: dict) -> bool:
        """Saves a state with no data position (converted weights); a run from it starts
        its data iterator from the beginning."""
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.StandardSave(state), CONFIG: ocp.args.JsonSave(config)}
            ),
            force=True,
        )

    def has_data_position(self, step: int) -> bool:
        return (self.directory / str(step) / DATA).exists()

    def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
        """The state at `step`, laid out as `abstract_state` says; moves `data_iterator` there
        (when the checkpoint has a data position)."""
        items = {STATE: ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None and self.has_data_position(step):
            items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
        elif data_iterator is not None:
            logging.info("checkpoint %d has no data position; data starts from the beginning", step)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored[STATE]

    def restore_config(self, step: int) -> dict:
        """The config snapshot saved with `step`."""
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()})
        )
        return restored[CONFIG]

    def latest_config(self) -> dict | None:
        """The config snapshot of the newest checkpoint that has a readable one."""
        for step in reversed(self.all_steps()):
            try:
                return self.restore_config(step)
            except Exception:  # an unreadable snapshot is skipped like its step
                continue
        return None

    def restore_latest_good(
        self, abstract_state: Any, data_iterator: Any
    ) -> tuple[int, Any] | None:
        """(step, state) of the newest checkpoint that restores; None if there is none.

        A checkpoint that fails to restore is reported by path and skipped.
        """
        for step in reversed(self.all_steps()):
            try:
                return step, self.restore(step, abstract_state, data_iterator)
            except Exception as error:
                logging.error(
                    "checkpoint %s failed to restore (%s: %s); trying an earlier one",
                    self.directory / str(step),
                    type(error).__name__,
                    error,
                )
        return None

    def wait(self) -> None:
        """Blocks until pending async saves are complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def find_checkpoint_dir(path: str) -> epath.Path:
    """The Orbax step root for a workdir (`<workdir>/checkpoints`) or a checkpoints dir."""
    root = epath.Path(path)
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    return root
