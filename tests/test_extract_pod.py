"""Latent extraction on several processes (extraction into a bucket: test_bucket_training.py)."""

import os
import subprocess
import sys

import pytest

from ditjax.autoencoder import IdentityAutoencoder
from ditjax.data.extract import extract_latents
from ditjax.data.sources import open_source
from test_extract import InterruptingSource, make_folder
from test_multiprocess import free_port

SHARD = 2  # 11 source examples: 6 shards, 3 per process


def extract_in_process(source, out, **kwargs):
    return extract_latents(
        source,
        IdentityAutoencoder(),
        32,
        str(out),
        batch_size=2,
        examples_per_shard=SHARD,
        progress=False,
        **kwargs,
    )


def files_of(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def run_cli_processes(spec: str, out, count: int) -> list[str]:
    """`python -m ditjax.extract_latents` as `count` processes of one job; their stdouts."""
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    command = [
        sys.executable,
        "-m",
        "ditjax.extract_latents",
        f"--source={spec}",
        "--autoencoder=identity",
        "--image_size=32",
        "--batch_size=2",
        f"--examples_per_shard={SHARD}",
        f"--out={out}",
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={count}",
    ]
    procs = [
        subprocess.Popen(
            [*command, f"--process_id={i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(count)
    ]
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    return outputs


@pytest.mark.xdist_group("multiprocess")
def test_two_processes_resume_a_one_process_run_and_write_the_same_bytes(tmp_path):
    root = make_folder(tmp_path / "images")
    spec = f"folder:{root}"
    source = open_source(spec)
    specs = dict(source_spec=spec, autoencoder_spec="identity")
    reference = tmp_path / "reference"
    extract_in_process(source, reference, **specs)

    # One process is interrupted in shard 2 (examples 4..5): shards 0 and 1 are complete.
    out = tmp_path / "latents"
    interrupted = InterruptingSource(source, at=5, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        extract_in_process(interrupted, out, **specs)
    partial = tmp_path / "latents.partial"
    done = sorted(p.name for p in partial.iterdir() if p.name.endswith("-of-00006"))
    assert done == [f"ditjax_latents-train.array_record-0000{k}-of-00006" for k in (0, 1)]
    mtimes = {name: os.stat(partial / name).st_mtime_ns for name in done}

    # Two processes finish the job: process 0 owns shards 0, 2, 4 and process 1 owns 1, 3, 5.
    stdouts = run_cli_processes(spec, out, 2)
    assert "reused 1 shard(s)" in stdouts[0] and "reused 1 shard(s)" in stdouts[1]
    assert "wrote 9 examples" in stdouts[0] and "wrote" not in stdouts[1]
    assert not partial.exists()
    for name, mtime in mtimes.items():
        assert os.stat(out / name).st_mtime_ns == mtime  # written once, by the first run
    assert files_of(out) == files_of(reference)  # shards, TFDS metadata, info, skip report


def test_publishing_checks_every_shard_is_complete(tmp_path):
    root = make_folder(tmp_path / "images")
    source = open_source(f"folder:{root}")
    out = tmp_path / "latents"
    # Process 0 of two, alone: it writes shards 0, 2, 4 and finds 1, 3, 5 missing.
    with pytest.raises(FileNotFoundError, match=r"3 shard\(s\) of .* are not complete"):
        extract_in_process(source, out, process_index=0, process_count=2)
    assert not out.exists()
    with pytest.raises(ValueError, match=r"process_index 2 is not in \[0, 2\)"):
        extract_in_process(source, out, process_index=2, process_count=2)
    # A run on one process writes the missing shards and reuses the other three.
    summary = extract_in_process(source, out)
    assert summary.shards_reused == 3 and summary.num_examples == 9
