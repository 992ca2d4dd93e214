"""`python -m ditjax.train --config=configs/xl2.py --workdir=DIR [--config.field=value ...]`."""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ditjax.host_memory import retain_freed_host_memory
from ditjax.parallel.process_flags import initialize_from_flags
from ditjax.training.config import ConfigError
from ditjax.training.loop import NonFiniteLossError, train_and_evaluate
from ditjax.training.preemption import PreemptionWatcher

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and previews.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    initialize_from_flags()
    # Watched from here to the exit: a SIGTERM during set-up stops at the first step, and
    # one after the run has stopped cannot kill the process on its way out.
    watcher = PreemptionWatcher(restore_on_close=False)
    try:
        result = train_and_evaluate(_CONFIG.value, _WORKDIR.value, watcher=watcher)
    except (ConfigError, FileNotFoundError) as error:
        logging.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
    status = "finished"
    if result.preempted:
        status = "stopped (preempted)"
    elif result.time_limited:
        status = f"stopped (time limit of {_CONFIG.value.time_limit_minutes:g} minutes)"
    print(f"{status} at step {result.step}; checkpoints in {result.checkpoint_dir}")
    if result.preview_path:
        print(f"preview grid: {result.preview_path}")


if __name__ == "__main__":
    retain_freed_host_memory()
    app.run(main)
