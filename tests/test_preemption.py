"""Preemption for real: SIGTERM to one of two processes, during an async save, twice; and
the watcher and checkpoint manager on their own."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import multihost_utils

from ditjax.training.checkpoint import Checkpointer
from ditjax.training.preemption import PreemptionWatcher
from process_output import json_report
from test_multiprocess import free_port
from test_training_loop import write_demo_latents

SCRIPT = str(pathlib.Path(__file__).with_name("preemption_train_script.py"))
CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")
TIMEOUT_S = 300
AGAIN = "again; the stop is already under way, ignored"


def train_flags(dataset: str, workdir: pathlib.Path, total_steps: int, checkpoint_every: int):
    """`ditjax.train` flags for the tiny DiT of the training tests (2 blocks, 64 wide)."""
    fields = {
        "model": "DiT-S/4",
        "model_overrides.hidden_size": 64,
        "model_overrides.depth": 2,
        "dataset_dir": dataset,
        "global_batch_size": 8,
        "total_steps": total_steps,
        "warmup_steps": 0,
        "learning_rate": 1e-3,
        "log_every": 1,
        "checkpoint_every": checkpoint_every,
        "keep_checkpoints": 20,
        "sample_every": 0,
    }
    return [
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        *(f"--config.{k}={v}" for k, v in fields.items()),
    ]


def start(hooks: dict, flags: list[str], processes: int = 1) -> list[subprocess.Popen]:
    """The script as `processes` processes of one job (gloo, a 127.0.0.1 coordinator)."""
    env = {**os.environ, "FAKE_DEVICES": "1"}
    job = []
    if processes > 1:
        job = [f"--coordinator_address=127.0.0.1:{free_port()}", f"--num_processes={processes}"]
    return [
        subprocess.Popen(
            [sys.executable, SCRIPT, json.dumps(hooks), *flags, *job]
            + ([f"--process_id={i}"] if processes > 1 else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]


def finish(procs: list[subprocess.Popen]) -> list[tuple[dict, str]]:
    """(the JSON report, stderr) of every process; each must exit 0."""
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, stderr[-4000:]
        outputs.append((json_report(stdout), stderr))
    return outputs


def kill(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run(hooks: dict, flags: list[str], processes: int = 1) -> list[tuple[dict, str]]:
    procs = start(hooks, flags, processes)
    try:
        return finish(procs)
    finally:
        kill(procs)


def wait_for_markers(paths: list[pathlib.Path], procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a process exited early:\n{proc.communicate()[1][-4000:]}")
        assert time.monotonic() < deadline, f"no markers {paths}"
        time.sleep(0.05)


def load_state(path: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b) and len(a) > 10
    assert any(k.startswith("['params']") for k in a) and any(k.startswith("['opt']") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_complete_checkpoint(checkpoints: pathlib.Path, step: int, processes: int) -> None:
    """Step `step` is finalised by Orbax with every process's part, and nothing is half-written."""
    names = sorted(p.name for p in checkpoints.iterdir())
    assert not [n for n in names if "tmp" in n], names
    root = checkpoints / str(step)
    assert (root / "_CHECKPOINT_METADATA").is_file()
    assert (root / "state" / "_METADATA").is_file()
    for i in range(processes):
        assert (root / "state" / f"ocdbt.process_{i}" / "manifest.ocdbt").is_file()
    assert (root / "config").is_dir()
    data = sorted(p.name for p in (root / "data").iterdir() if p.suffix == ".json")
    assert data == [f"process_{i}-of-{processes}.json" for i in range(processes)]
    for i in range(processes):
        assert json.loads((root / "data" / data[i]).read_text())  # the iterator position
    assert step in Checkpointer(str(checkpoints)).all_steps()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_demo_latents(tmp_path_factory.mktemp("preempt"))


@pytest.fixture(scope="module")
def uninterrupted_one_process(dataset, tmp_path_factory) -> dict[str, np.ndarray]:
    root = tmp_path_factory.mktemp("uninterrupted")
    [(report, _)] = run({"state_out": str(root / "state.npz")}, train_flags(dataset, root, 6, 3))
    assert report["step"] == 6 and not report["preempted"]
    return load_state(root / "state.npz")


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(dataset, tmp_path):
    total = 14
    markers = tmp_path / "markers"
    markers.mkdir()
    workdir = tmp_path / "run"
    # Both processes wait after step 2 until the signal is sent, then go on slowly enough
    # for JAX's notifier (it polls for the signal about once a second) to stop them early.
    hooks = {
        "marker_dir": str(markers),
        "hold_at": 2,
        "pace_s": 0.4,
        "signal_in_stop_save": True,
    }
    procs = start(hooks, train_flags(dataset, workdir, total, 100), processes=2)
    try:
        wait_for_markers([markers / "held-0", markers / "held-1"], procs)
        procs[1].send_signal(signal.SIGTERM)
        procs[1].send_signal(signal.SIGTERM)  # a repeated notice before the stop step
        (markers / "go").touch()
        outputs = finish(procs)
    finally:
        kill(procs)
    steps = {report["step"] for report, _ in outputs}
    assert all(report["preempted"] for report, _ in outputs)
    assert len(steps) == 1, outputs  # the same step on both
    stop = steps.pop()
    assert 2 < stop < total
    # Each process was sent one more SIGTERM during the stop's own save: logged, ignored.
    assert (markers / f"signalled-{stop}").exists()
    assert all(AGAIN in stderr for _, stderr in outputs)
    checkpoints = workdir / "checkpoints"
    assert sorted(int(p.name) for p in checkpoints.iterdir()) == [stop]
    assert_complete_checkpoint(checkpoints, stop, processes=2)

    # Both resume and finish; the result is the uninterrupted two-process run, bit for bit.
    resumed = run(
        {"state_out": str(tmp_path / "resumed.npz")}, train_flags(dataset, workdir, total, 100), 2
    )
    assert all(r["step"] == total and not r["preempted"] for r, _ in resumed)
    assert all(f"resumed from step {stop}" in stderr for _, stderr in resumed)
    reference_dir = tmp_path / "reference"
    reference = run(
        {"state_out": str(tmp_path / "reference.npz")},
        train_flags(dataset, reference_dir, total, 100),
        2,
    )
    assert all(r["step"] == total for r, _ in reference)
    assert_same_state(load_state(tmp_path / "resumed.npz"), load_state(tmp_path / "reference.npz"))


@pytest.mark.slow
def test_sigterm_during_an_async_save(dataset, uninterrupted_one_process, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    workdir = tmp_path / "run"
    flags = train_flags(dataset, workdir, 6, 3)
    # The signal comes from Orbax's commit thread while step 3 is being written.
    [(report, stderr)] = run({"marker_dir": str(markers), "signal_in_save": [3]}, flags)
    assert (markers / "signalled-3").exists()
    assert report == {"process": 0, "step": 4, "preempted": True}
    assert "received signal 15; saving a checkpoint at the next step" in stderr
    checkpoints = workdir / "checkpoints"
    assert sorted(int(p.name) for p in checkpoints.iterdir()) == [3, 4]
    for step in (3, 4):
        assert_complete_checkpoint(checkpoints, step, processes=1)
    [(resumed, stderr)] = run({"state_out": str(tmp_path / "resumed.npz")}, flags)
    assert resumed["step"] == 6 and "resumed from step 4" in stderr
    assert_same_state(load_state(tmp_path / "resumed.npz"), uninterrupted_one_process)


@pytest.mark.slow
def test_second_sigterm_while_stopping_is_logged_and_ignored(
    dataset, uninterrupted_one_process, tmp_path
):
    markers = tmp_path / "markers"
    markers.mkdir()
    workdir = tmp_path / "run"
    flags = train_flags(dataset, workdir, 6, 3)
    hooks = {"marker_dir": str(markers), "hold_at": 2, "signal_in_stop_save": True}
    procs = start(hooks, flags)
    try:
        wait_for_markers([markers / "held-0"], procs)
        procs[0].send_signal(signal.SIGTERM)
        (markers / "go").touch()
        [(report, stderr)] = finish(procs)
    finally:
        kill(procs)
    # Stopped at the step after the signal; the second one came while step 3 was saved.
    assert report == {"process": 0, "step": 3, "preempted": True}
    assert (markers / "signalled-3").exists()
    assert stderr.count("received signal 15") == 2 and AGAIN in stderr
    checkpoints = workdir / "checkpoints"
    assert_complete_checkpoint(checkpoints, 3, processes=1)
    [(resumed, stderr)] = run({"state_out": str(tmp_path / "resumed.npz")}, flags)
    assert resumed["step"] == 6 and "resumed from step 3" in stderr
    assert_same_state(load_state(tmp_path / "resumed.npz"), uninterrupted_one_process)


def eventually(condition) -> bool:
    """Whether `condition()` holds within 10 s (a signal's Python handler runs in the main
    thread at its next chance, which need not be the very next line)."""
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_watcher_logs_repeats_and_restores_the_handler(caplog):
    before = signal.getsignal(signal.SIGTERM)
    watcher = PreemptionWatcher()
    try:
        assert not watcher.should_stop(1)
        with caplog.at_level("WARNING"):
            os.kill(os.getpid(), signal.SIGTERM)
            assert eventually(lambda: watcher.should_stop(2))
            os.kill(os.getpid(), signal.SIGTERM)
            assert eventually(lambda: AGAIN in caplog.text)
        assert watcher.should_stop(3)  # stays stopped
        assert caplog.text.count("saving a checkpoint at the next step") == 1
    finally:
        watcher.close()
    assert signal.getsignal(signal.SIGTERM) == before


def test_watcher_kept_to_the_exit_ignores_late_signals(caplog):
    before = signal.getsignal(signal.SIGTERM)
    watcher = PreemptionWatcher(restore_on_close=False)
    try:
        watcher.close()
        with caplog.at_level("WARNING"):
            os.kill(os.getpid(), signal.SIGTERM)  # the process lives on
            assert eventually(lambda: "after the run ended; ignored" in caplog.text)
        assert signal.getsignal(signal.SIGTERM) != before
    finally:
        signal.signal(signal.SIGTERM, before)


def test_checkpoints_leave_the_preemption_sync_point_to_the_loop(tmp_path, monkeypatch):
    # Orbax would ask the sync point from its save and finalize code with the saved step.
    calls = []
    monkeypatch.setattr(
        multihost_utils, "reached_preemption_sync_point", lambda step: calls.append(step)
    )
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    try:
        checkpointer.save_state_only(1, {"x": jnp.arange(4.0)}, {})
        checkpointer.wait()
        assert checkpointer.all_steps() == [1]
    finally:
        checkpointer.close()
    assert calls == []
