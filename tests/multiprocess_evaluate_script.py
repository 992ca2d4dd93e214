"""Run by test_evaluate.py: one process of a two-process `python -m ditjax.evaluate` run on
fake CPU devices, with `stand_in_features` for Inception.

Usage: multiprocess_evaluate_script.py PROCESS_ID NUM_PROCESSES PORT [evaluate flags ...]
Prints a JSON line with the exit status and, per source size N, the image rows it read.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

from ditjax import evaluate
from ditjax.evaluation import features

sys.path.insert(0, os.path.dirname(__file__))
from evaluation_fixtures import stand_in_features


def main(argv):
    process_id, num_processes, port = argv[1], argv[2], argv[3]
    rows: dict[int, set[int]] = {}
    read_rows = features._read_rows

    def recording_read_rows(images, start, stop):
        n = len(images)
        rows.setdefault(n, set()).update(range(min(start, n), min(stop, n)))
        return read_rows(images, start, stop)

    features._read_rows = recording_read_rows
    evaluate._inception_features_fn = lambda path, mesh: stand_in_features
    status = evaluate.main(
        [
            "evaluate",
            *argv[4:],
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={num_processes}",
            f"--process_id={process_id}",
        ]
    )
    print(json.dumps({"status": status, "rows": {n: sorted(r) for n, r in rows.items()}}))


if __name__ == "__main__":
    main(sys.argv)
