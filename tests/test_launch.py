"""Launch scripts: syntax, shellcheck where installed, and their dry-run command lines."""

import os
import pathlib
import shutil
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = [LAUNCH / "tpu_vm.sh", LAUNCH / "slurm.sbatch", LAUNCH / "multinode.sh"]


def run(script, *args, **env):
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], **env},
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck():
    out = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_tpu_create_and_train_dry_run():
    create = run(
        LAUNCH / "tpu_vm.sh",
        "create",
        "--name=dit",
        "--zone=us-east5-a",
        "--type=v5p-32",
        "--spot",
        "--dry-run",
    )
    assert create.returncode == 0
    assert create.stdout.strip() == (
        "+ gcloud compute tpus tpu-vm create dit --zone=us-east5-a --accelerator-type=v5p-32 "
        "--version=v2-alpha-tpuv5 --spot"
    )
    train = run(
        LAUNCH / "tpu_vm.sh",
        "train",
        "--name=dit",
        "--zone=us-east5-a",
        "--config=configs/xl2.py",
        "--workdir=gs://b/w",
        "--",
        "--config.seed=3",
        DRY_RUN="1",
    )
    assert train.returncode == 0
    line = train.stdout.strip().replace("\\", "")
    assert line.startswith("+ gcloud compute tpus tpu-vm ssh dit --zone=us-east5-a --worker=all")
    assert (
        "python -m ditjax.train --config=configs/xl2.py --workdir=gs://b/w --config.seed=3" in line
    )
    stop = run(LAUNCH / "tpu_vm.sh", "stop", "--name=dit", "--zone=z", "--dry-run")
    assert "pkill" in stop.stdout and "TERM" in stop.stdout


def test_tpu_missing_option_is_named():
    out = run(LAUNCH / "tpu_vm.sh", "create", "--zone=z", "--type=v4-8", "--dry-run")
    assert out.returncode == 2 and "missing --name" in out.stderr
    out = run(LAUNCH / "tpu_vm.sh", "train", "--name=n", "--zone=z", "--dry-run")
    assert out.returncode == 2 and "missing --workdir" in out.stderr


def test_slurm_dry_run():
    out = run(
        LAUNCH / "slurm.sbatch",
        "--config.global_batch_size=512",
        DRY_RUN="1",
        WORKDIR="/shared/run",
        CONFIG="configs/l2.py",
        DITJAX_DIR="/opt/ditjax",
    )
    assert out.returncode == 0
    assert out.stdout.strip() == (
        "+ srun --kill-on-bad-exit=1 /opt/ditjax/.venv/bin/python -m ditjax.train "
        "--config=configs/l2.py --workdir=/shared/run --config.global_batch_size=512"
    )
    text = (LAUNCH / "slurm.sbatch").read_text()
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=TERM@" in text


def test_multinode_dry_run_and_missing_variable():
    out = run(
        LAUNCH / "multinode.sh",
        DRY_RUN="1",
        COORDINATOR="10.0.0.1:8476",
        NUM_PROCESSES="4",
        PROCESS_ID="2",
        WORKDIR="/w",
    )
    assert out.returncode == 0
    assert "--coordinator_address=10.0.0.1:8476 --num_processes=4 --process_id=2" in out.stdout
    missing = run(
        LAUNCH / "multinode.sh", DRY_RUN="1", NUM_PROCESSES="4", PROCESS_ID="0", WORKDIR="/w"
    )
    assert missing.returncode == 2 and "COORDINATOR" in missing.stderr
