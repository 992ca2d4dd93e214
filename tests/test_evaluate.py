"""Feature extraction, evaluation sources and `python -m ditjax.evaluate`.

Most tests use a cheap stand-in for Inception (a fixed random projection of 2 x 2 block
means); one runs the real network with random weights on a dozen 32 x 32 images.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import socket
import subprocess
import sys
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from ditjax import evaluate
from ditjax.evaluation.features import (
    ImageFolder,
    ReferenceStats,
    extract_features,
    open_npz_array,
    open_source,
    reference_stats,
    save_reference_stats,
)
from ditjax.evaluation.metrics import frechet_distance, inception_score, precision_recall
from evaluation_fixtures import random_images, stand_in_features
from process_output import json_report


def _indexed_images(n: int) -> np.ndarray:
    """Image i is filled with the value i."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 6, 3)).copy()


def test_extract_features_keeps_order_through_padded_batches():
    shapes = []

    def features_fn(images):
        shapes.append(images.shape)
        x = images.astype(jnp.float32)
        return {"pool": x.mean(axis=(1, 2)), "corner": x[:, 0, 0, :1] + 0.5}

    features = extract_features(features_fn, _indexed_images(11), batch_size=4, progress=False)
    assert shapes == [(4, 4, 6, 3)] * 3
    assert set(features) == {"pool", "corner"}
    assert features["pool"].shape == (11, 3) and features["pool"].dtype == np.float32
    np.testing.assert_array_equal(features["pool"], np.repeat(np.arange(11.0)[:, None], 3, 1))
    np.testing.assert_array_equal(features["corner"][:, 0], np.arange(11) + 0.5)


_MULTIDEVICE_SCRIPT = """
import numpy as np, jax, jax.numpy as jnp
from ditjax.evaluation.features import extract_features
assert jax.device_count() == 4
seen = []
def features_fn(images):
    seen.append((images.shape, len(images.sharding.device_set)))
    return {"pool": images.astype(jnp.float32).mean(axis=(1, 2))}
images = np.broadcast_to(np.arange(11, dtype=np.uint8)[:, None, None, None], (11, 2, 2, 3))
out = extract_features(features_fn, images, batch_size=6, progress=False)
assert seen == [((8, 2, 2, 3), 4)] * 2, seen
np.testing.assert_array_equal(out["pool"][:, 0], np.arange(11))
print("ok")
"""


@pytest.mark.slow
def test_extract_features_splits_batches_over_devices():
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    result = subprocess.run(
        [sys.executable, "-c", _MULTIDEVICE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_npz_images_are_memory_mapped_when_stored(tmp_path):
    images = random_images(1, 5)
    stored, compressed = tmp_path / "stored.npz", tmp_path / "compressed.npz"
    np.savez(stored, arr_0=images, labels=np.arange(5))
    np.savez_compressed(compressed, arr_0=images)
    mapped = open_npz_array(str(stored), "arr_0")
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, images)
    loaded = open_npz_array(str(compressed), "arr_0")
    assert not isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, images)


def test_image_folder_reads_nested_png_and_jpeg_as_rgb(tmp_path):
    images = random_images(2, 3)
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(images[0]).save(tmp_path / "a" / "0.png")
    Image.fromarray(images[1][..., 0], mode="L").save(tmp_path / "a" / "b" / "1.PNG")
    images[2] = [200, 60, 30]  # flat, so that JPEG keeps it to within a few levels
    Image.fromarray(images[2]).save(tmp_path / "c.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    folder = ImageFolder(str(tmp_path))
    assert folder.shape == (3, 8, 8, 3) and len(folder) == 3
    assert [p.name for p in folder.files] == ["0.png", "1.PNG", "c.jpg"]
    decoded = folder[0:3]
    assert decoded.dtype == np.uint8 and decoded.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(decoded[0], images[0])
    np.testing.assert_array_equal(decoded[1], np.repeat(images[1][..., :1], 3, axis=-1))
    assert np.abs(decoded[2].astype(int) - images[2]).max() <= 4
    np.testing.assert_array_equal(folder[1:2], decoded[1:2])


def test_image_folder_names_the_odd_sized_image(tmp_path):
    Image.fromarray(random_images(3, 1)[0]).save(tmp_path / "a.png")
    Image.fromarray(random_images(3, 1, size=6)[0]).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b\.png is 6x6.*8x8"):
        ImageFolder(str(tmp_path))


def test_open_source_checks_files_without_reading_pixels(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        open_source(str(tmp_path / "missing.npz"))
    floats = tmp_path / "floats.npz"
    np.savez(floats, arr_0=np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"floats\.npz.*uint8"):
        open_source(str(floats))
    gray = tmp_path / "gray.npz"
    np.savez(gray, arr_0=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"gray.npz.*\(N, H, W, 3\)"):
        open_source(str(gray))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"neither an image folder nor an \.npz"):
        open_source(str(text))
    labels_only = tmp_path / "labels.npz"
    np.savez(labels_only, labels=np.arange(3))
    with pytest.raises(ValueError, match="no arr_0"):
        open_source(str(labels_only), need_images=True)
    half_stats = tmp_path / "half.npz"
    np.savez(half_stats, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="lacks mu_s, sigma_s"):
        open_source(str(half_stats))


def test_reference_stats_round_trip_atomically(tmp_path):
    stats = reference_stats(_features_of(random_images(4, 20)))
    path = save_reference_stats(str(tmp_path / "stats" / "ref.npz"), stats)
    assert os.listdir(tmp_path / "stats") == ["ref.npz"]
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["mu.npy", "sigma.npy", "mu_s.npy", "sigma_s.npy", "pool.npy"]
        )
    source = open_source(path)
    assert source.images is None
    for name in ("mu", "sigma", "mu_s", "sigma_s", "pool"):
        np.testing.assert_array_equal(getattr(source.stats, name), getattr(stats, name))
    with pytest.raises(ValueError, match=r"end in \.npz"):
        save_reference_stats(str(tmp_path / "ref.stats"), stats)


@pytest.fixture
def stand_in_inception(monkeypatch):
    """The CLI with `stand_in_features` in place of Inception; records the weight paths."""
    loaded = []

    def features_fn_for(path, mesh):
        loaded.append(path)
        return stand_in_features

    monkeypatch.setattr(evaluate, "_inception_features_fn", features_fn_for)
    return loaded


@pytest.fixture
def batches(tmp_path) -> dict[str, str]:
    ref, samples = tmp_path / "ref.npz", tmp_path / "samples.npz"
    np.savez(ref, arr_0=random_images(5, 30))
    np.savez(samples, arr_0=random_images(6, 24), labels=np.zeros(24, np.int64))
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"stand-in weights, never read")
    return {"ref": str(ref), "samples": str(samples), "inception": str(weights)}


def _features_of(images: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in stand_in_features(jnp.asarray(images)).items()}


def _expected_metrics(ref_images: np.ndarray, sample_images: np.ndarray) -> dict[str, float]:
    ref, out = _features_of(ref_images), _features_of(sample_images)
    r, s = reference_stats(ref), reference_stats(out)
    precision, recall = precision_recall(ref["pool"], out["pool"])
    return {
        "fid": frechet_distance(s.mu, s.sigma, r.mu, r.sigma),
        "sfid": frechet_distance(s.mu_s, s.sigma_s, r.mu_s, r.sigma_s),
        "inception_score": inception_score(out["logits"], 10),
        "precision": precision,
        "recall": recall,
    }


def test_cli_writes_the_five_metrics(batches, stand_in_inception, tmp_path, capsys):
    out = tmp_path / "report" / "metrics.json"
    argv = ["evaluate", *(f"--{k}={v}" for k, v in batches.items()), f"--out={out}"]
    assert evaluate.main([*argv, "--batch_size=7"]) == 0
    assert stand_in_inception == [batches["inception"]]
    report = json.loads(out.read_text())
    expected = _expected_metrics(random_images(5, 30), random_images(6, 24))
    for name, value in expected.items():
        assert math.isfinite(report[name])
        assert report[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert report["fid"] > 0 and 1.0 < report["inception_score"] < 20.0
    assert report["num_ref"] == 30 and report["num_samples"] == 24
    printed = capsys.readouterr().out
    for label in ("FID", "sFID", "Inception Score", "Precision", "Recall"):
        assert label in printed
    assert [p for p in os.listdir(out.parent) if p != "metrics.json"] == []


def test_cli_caches_reference_stats_from_a_folder(batches, stand_in_inception, tmp_path):
    folder = tmp_path / "ref_images"
    folder.mkdir()
    for i, image in enumerate(random_images(5, 30)):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    stats = tmp_path / "ref_stats.npz"
    common = [f"--inception={batches['inception']}", "--batch_size=8"]
    assert evaluate.main(["evaluate", f"--ref={folder}", f"--save_stats={stats}", *common]) == 0
    assert stats.exists() and not (tmp_path / "metrics.json").exists()
    from_folder, from_stats = tmp_path / "a.json", tmp_path / "b.json"
    samples = f"--samples={batches['samples']}"
    assert (
        evaluate.main(["evaluate", f"--ref={folder}", samples, f"--out={from_folder}", *common])
        == 0
    )
    # The cached statistics file alone: no ref images are read, and Inception runs on samples.
    stand_in_inception.clear()
    assert (
        evaluate.main(["evaluate", f"--ref={stats}", samples, f"--out={from_stats}", *common]) == 0
    )
    a, b = json.loads(from_folder.read_text()), json.loads(from_stats.read_text())
    for name in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert a[name] == pytest.approx(b[name], rel=1e-9), name
    assert a["fid"] == pytest.approx(
        _expected_metrics(random_images(5, 30), random_images(6, 24))["fid"]
    )


def test_cli_uses_precomputed_statistics_of_an_adm_batch(batches, stand_in_inception, tmp_path):
    """An ADM reference batch carries mu/sigma/mu_s/sigma_s next to arr_0: they are used."""
    d_pool, d_spatial = 16, 12
    stats = ReferenceStats(
        mu=np.full(d_pool, 0.1),
        sigma=np.eye(d_pool),
        mu_s=np.zeros(d_spatial),
        sigma_s=2 * np.eye(d_spatial),
    )
    ref = tmp_path / "adm_ref.npz"
    np.savez(
        ref,
        arr_0=random_images(5, 30),
        mu=stats.mu,
        sigma=stats.sigma,
        mu_s=stats.mu_s,
        sigma_s=stats.sigma_s,
    )
    out = tmp_path / "m.json"
    argv = [
        "evaluate",
        f"--ref={ref}",
        f"--samples={batches['samples']}",
        f"--inception={batches['inception']}",
        f"--out={out}",
    ]
    assert evaluate.main(argv) == 0
    samples = {
        k: np.asarray(v) for k, v in stand_in_features(jnp.asarray(random_images(6, 24))).items()
    }
    s = reference_stats(samples)
    report = json.loads(out.read_text())
    assert report["fid"] == pytest.approx(frechet_distance(s.mu, s.sigma, stats.mu, stats.sigma))
    assert report["sfid"] == pytest.approx(
        frechet_distance(s.mu_s, s.sigma_s, stats.mu_s, stats.sigma_s)
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ref": "/nonexistent/ref.npz"}, "--ref: /nonexistent/ref.npz does not exist"),
        ({"samples": "FLOATS"}, "--samples: .*floats.npz: arr_0 must be uint8"),
        ({"samples": "FEW"}, "--samples: .*few.npz has 5 images; at least 10"),
        ({"inception": "/nonexistent/w.pth"}, "--inception: /nonexistent/w.pth does not exist"),
        ({"batch_size": "0"}, "--batch_size must be positive"),
        ({"save_stats": "stats.json"}, "--save_stats must end in .npz"),
    ],
)
def test_cli_rejects_bad_input_before_loading_inception(
    batches, stand_in_inception, tmp_path, capsys, change, message
):
    np.savez(tmp_path / "floats.npz", arr_0=np.zeros((12, 8, 8, 3), np.float32))
    np.savez(tmp_path / "few.npz", arr_0=random_images(7, 5))
    named = {"FLOATS": str(tmp_path / "floats.npz"), "FEW": str(tmp_path / "few.npz")}
    values = {**batches, **{k: named.get(v, v) for k, v in change.items()}}
    assert evaluate.main(["evaluate", *(f"--{k}={v}" for k, v in values.items())]) == 2
    assert stand_in_inception == []
    assert re.search(message, capsys.readouterr().err), message


def test_cli_requires_ref_and_samples(capsys):
    assert evaluate.main(["evaluate"]) == 2
    assert "--ref is required" in capsys.readouterr().err
    assert evaluate.main(["evaluate", "--ref=x.npz", "--nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err


@pytest.fixture
def memoised_sqrtm(monkeypatch):
    """scipy's sqrtm, remembering its results: a 2048 x 2048 root takes half a minute on two
    cores, and a rerun on identical statistics asks for roots of identical matrices."""
    real_sqrtm, roots = scipy.linalg.sqrtm, {}

    def sqrtm(matrix):
        key = (matrix.shape, matrix.tobytes())
        if key not in roots:
            roots[key] = real_sqrtm(matrix)
        return roots[key]

    monkeypatch.setattr(scipy.linalg, "sqrtm", sqrtm)
    return roots


@pytest.mark.slow
def test_end_to_end_with_random_inception_weights(tmp_path, memoised_sqrtm):
    from inception_fixtures import write_random_pytorch_fid_checkpoint

    weights = write_random_pytorch_fid_checkpoint(tmp_path / "pt_inception.pth", seed=0)
    ref, samples = tmp_path / "ref.npz", tmp_path / "samples.npz"
    np.savez(ref, arr_0=random_images(10, 12, size=32))
    np.savez(samples, arr_0=random_images(11, 12, size=32), labels=np.zeros(12, np.int64))
    stats, first, second = tmp_path / "ref_stats.npz", tmp_path / "a.json", tmp_path / "b.json"
    common = [f"--samples={samples}", f"--inception={weights}", "--batch_size=12"]
    argv = ["evaluate", f"--ref={ref}", f"--save_stats={stats}", f"--out={first}", *common]
    assert evaluate.main(argv) == 0
    report = json.loads(first.read_text())
    for name in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert math.isfinite(report[name]), name
    assert report["fid"] > 0 and report["sfid"] > 0 and report["inception_score"] >= 1.0
    assert 0.0 <= report["precision"] <= 1.0 and 0.0 <= report["recall"] <= 1.0
    # FID's (2048) and sFID's (2023) roots; a singular product whose root scipy returns
    # non-finite (scipy 1.18 for 12 samples) is asked again with eps added, in the same shape.
    assert {shape for shape, _ in memoised_sqrtm} == {(2048, 2048), (2023, 2023)}
    roots_asked = len(memoised_sqrtm)
    with np.load(stats) as saved:
        assert saved["mu"].shape == (2048,) and saved["sigma_s"].shape == (2023, 2023)
        assert saved["pool"].shape == (12, 2048)
    assert evaluate.main(["evaluate", f"--ref={stats}", f"--out={second}", *common]) == 0
    again = json.loads(second.read_text())
    for name in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert again[name] == pytest.approx(report[name], rel=1e-6), name
    assert len(memoised_sqrtm) == roots_asked  # the saved statistics are the same matrices


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_on_two_processes_reads_each_row_once(batches, tmp_path):
    script = pathlib.Path(__file__).with_name("multiprocess_evaluate_script.py")
    out = tmp_path / "metrics.json"
    flags = [f"--{k}={v}" for k, v in batches.items()] + [f"--out={out}", "--batch_size=8"]
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), "2", str(port), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json_report(stdout))
    assert [r["status"] for r in results] == [0, 0]
    for n in (30, 24):  # the reference and sample batches
        first, second = (set(r["rows"][str(n)]) for r in results)
        assert first and second and not first & second
        assert first | second == set(range(n))
    report = json.loads(out.read_text())
    expected = _expected_metrics(random_images(5, 30), random_images(6, 24))
    for name, value in expected.items():
        assert report[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
