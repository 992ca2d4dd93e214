"""FID sample files: resumable, and sample i a function of (seed, i) only."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ditjax.sample_npz import sample_labels, sample_npz
from ditjax.sample_parts import part_ranges, parts_dir
from sampling_fixtures import latents, write_random_run

N = 10
# The CLI's defaults for what the script does not set, so that both make the same samples.
OPTIONS = {"sampler": "ddpm", "steps": 4, "cfg_scale": 4.0, "guidance": "all", "seed": 0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    return write_random_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def reference(run_dir, tmp_path_factory) -> dict[str, np.ndarray]:
    """An uninterrupted run: N = 10 in chunks of 3."""
    out = tmp_path_factory.mktemp("reference") / "samples.npz"
    assert sample_npz(run_dir, str(out), N, per_device_batch=3, progress=False, **OPTIONS)
    assert not parts_dir(str(out)).exists()
    with np.load(out) as data:
        return dict(data)


def test_npz_has_the_evaluator_layout(reference, run_dir):
    images, labels = reference["arr_0"], reference["labels"]
    assert images.dtype == np.uint8 and images.shape == (N, 8, 8, 3)
    np.testing.assert_array_equal(labels, sample_labels(0, N, 10, balanced=False))
    assert len({image.tobytes() for image in images}) == N


def test_interrupted_run_resumes_to_the_same_file(reference, run_dir, tmp_path):
    out = str(tmp_path / "samples.npz")
    stopped = sample_npz(
        run_dir, out, N, per_device_batch=3, max_chunks=2, progress=False, **OPTIONS
    )
    assert stopped is None
    assert not os.path.exists(out)
    assert part_ranges(parts_dir(out)) == [(0, 3), (3, 6)]
    (parts_dir(out) / ".0000006-0000009.npz.abc.tmp").write_bytes(b"half a file")
    # The restart redoes only 6..9, in chunks of another size.
    assert sample_npz(run_dir, out, N, per_device_batch=4, progress=False, **OPTIONS) == out
    assert not parts_dir(out).exists()
    with np.load(out) as data:
        np.testing.assert_array_equal(data["arr_0"], reference["arr_0"])
        np.testing.assert_array_equal(data["labels"], reference["labels"])
    with pytest.raises(FileExistsError, match="already exists"):
        sample_npz(run_dir, out, N, progress=False, **OPTIONS)


def test_restart_with_other_settings_is_refused(run_dir, tmp_path):
    out = str(tmp_path / "samples.npz")
    sample_npz(run_dir, out, N, per_device_batch=3, max_chunks=1, progress=False, **OPTIONS)
    for name, value in [("seed", 1), ("steps", 5), ("cfg_scale", 1.5)]:
        with pytest.raises(ValueError, match=f"{name}="):
            sample_npz(run_dir, out, N, progress=False, **{**OPTIONS, name: value})
    with pytest.raises(ValueError, match="num_samples="):
        sample_npz(run_dir, out, N + 1, progress=False, **OPTIONS)
    with pytest.raises(ValueError, match="labels="):
        sample_npz(run_dir, out, N, balanced=True, progress=False, **OPTIONS)
    assert part_ranges(parts_dir(out)) == [(0, 3)]


def test_bad_arguments_are_refused(run_dir, tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.npz"):
        sample_npz(run_dir, str(tmp_path / "samples.png"), N)
    with pytest.raises(ValueError, match="divisible"):
        sample_npz(run_dir, str(tmp_path / "a.npz"), 15, balanced=True)
    with pytest.raises(ValueError, match="sampler"):
        sample_npz(run_dir, str(tmp_path / "b.npz"), N, sampler="euler")


def test_labels_are_a_function_of_seed_and_count():
    uniform = sample_labels(3, 1000, 10, balanced=False)
    np.testing.assert_array_equal(uniform, sample_labels(3, 1000, 10, balanced=False))
    assert not np.array_equal(uniform, sample_labels(4, 1000, 10, balanced=False))
    assert set(uniform.tolist()) == set(range(10))
    balanced = sample_labels(3, 1000, 10, balanced=True)
    np.testing.assert_array_equal(np.bincount(balanced), [100] * 10)
    assert not np.array_equal(balanced, np.sort(balanced))


def test_latents_do_not_depend_on_batch_composition(run_dir):
    """Per-sample keys: samples 3..6 alone equal rows 3..6 of samples 0..7 (DDIM eta > 0,
    so the per-step noise is checked as well as the initial noise)."""
    whole = latents(run_dir, np.arange(8))
    part = latents(run_dir, np.arange(3, 7))
    np.testing.assert_allclose(part, whole[3:7], rtol=0, atol=1e-5)
    assert np.abs(whole[0] - whole[1]).max() > 0.1


def test_four_devices_cli_matches_one_device(reference, run_dir, tmp_path):
    out, latents_out, images = tmp_path / "s.npz", tmp_path / "latents.npy", tmp_path / "png"
    script = pathlib.Path(__file__).with_name("multidevice_sample_script.py")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, str(script), run_dir, str(out), str(latents_out), str(images)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as data:
        np.testing.assert_array_equal(data["arr_0"], reference["arr_0"])
        np.testing.assert_array_equal(data["labels"], reference["labels"])
    names = sorted(p.name for p in images.iterdir())
    assert len(names) == N and names[0] == f"000000_class{reference['labels'][0]}.png"
    np.testing.assert_allclose(np.load(latents_out), latents(run_dir, np.arange(8)), atol=1e-5)
