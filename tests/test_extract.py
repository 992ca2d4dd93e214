"""Latent extraction from a folder: stored moments, skip report, resume and interruption."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ditjax.autoencoder import IdentityAutoencoder, create_autoencoder
from ditjax.data.adm_crop import center_crop_adm, to_model_range
from ditjax.data.demo_shapes import generate_demo_images
from ditjax.data.extract import extract_latents
from ditjax.data.sources import FolderSource, open_source

CLASSES = ("cat", "ant", "bee")  # sorted: ant = 0, bee = 1, cat = 2
SIZES = ((40, 48), (64, 50), (33, 90))


def make_folder(root: pathlib.Path, per_class: int = 3) -> pathlib.Path:
    """per_class images of varied sizes per class (JPEG and PNG), a corrupt PNG, a truncated
    JPEG and a file that is not an image at all."""
    images, _ = generate_demo_images(per_class, seed=0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(images[i * 10 + c]).resize(SIZES[i % len(SIZES)])
            image.save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "bee" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    jpeg = (root / "cat" / "0.jpg").read_bytes()
    (root / "cat" / "truncated.JPEG").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "ant" / "notes.txt").write_text("not an image")
    return root


def expected_examples(root: pathlib.Path, image_size: int):
    """(relative path, label, crop in [-1, 1]) of every readable image, in source order."""
    expected = []
    for label, name in enumerate(sorted(CLASSES)):
        for file in sorted(os.listdir(root / name)):
            if file in ("corrupt.png", "truncated.JPEG", "notes.txt"):
                continue
            crop = center_crop_adm(Image.open(root / name / file), image_size)
            expected.append((f"{name}/{file}", label, to_model_range(crop)))
    return expected


def extract(source, out, **kwargs):
    defaults = dict(batch_size=4, examples_per_shard=4, progress=False)
    return extract_latents(source, IdentityAutoencoder(), 32, str(out), **{**defaults, **kwargs})


def test_folder_source_order_labels_and_errors(tmp_path):
    root = make_folder(tmp_path / "images")
    source = open_source(f"folder:{root}")
    assert isinstance(source, FolderSource)
    assert source.class_names == ["ant", "bee", "cat"]
    assert len(source) == source.num_examples == 11  # 9 images + corrupt + truncated
    examples = list(source)
    assert [e.key for e in examples][:4] == ["ant/0.jpg", "ant/1.png", "ant/2.jpg", "bee/0.jpg"]
    assert [e.label for e in examples] == [0] * 3 + [1] * 4 + [2] * 4
    bad = {e.key: e.error for e in examples if e.image is None}
    assert set(bad) == {"bee/corrupt.png", "cat/truncated.JPEG"}
    assert all(bad.values())
    assert [e.key for e in source.iter_range(5, 8)] == [e.key for e in examples[5:8]]


def test_source_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="'foo:bar'"):
        open_source("foo:bar")
    with pytest.raises(ValueError, match="'tfds:'"):
        open_source("tfds:")
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        open_source(f"folder:{tmp_path}/no/such/dir")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no class subfolders"):
        open_source(f"folder:{tmp_path / 'flat'}")
    with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        open_source("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))


def test_extraction_stores_crops_flips_and_reports_corrupt_files(tmp_path, capsys):
    root = make_folder(tmp_path / "images")
    out = tmp_path / "latents"
    summary = extract(open_source(f"folder:{root}"), out)
    assert (summary.num_examples, summary.num_skipped, summary.num_shards) == (9, 2, 3)
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().out
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in skipped) == [
        "bee/corrupt.png",
        "cat/truncated.JPEG",
    ]
    assert all(len(line.split("\t")[1]) > 0 for line in skipped)

    info = json.loads((out / "ditjax_latents.json").read_text())
    assert info["class_names"] == ["ant", "bee", "cat"] and info["num_classes"] == 3
    assert info["latent_shape"] == [32, 32, 3] and info["scale"] == 1.0
    assert info["autoencoder"] == "identity" and info["image_size"] == 32
    assert info["num_examples"] == 9 and info["num_skipped"] == 2
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".tmp", ".json")) == [
        "dataset_info.json",
        "ditjax_latents.json",
        "features.json",
    ]

    builder = tfds.builder_from_directory(str(out))
    assert builder.info.features["label"].names == ["ant", "bee", "cat"]
    data = builder.as_data_source(split="train")
    assert len(data) == 9
    for i, (key, label, crop) in enumerate(expected_examples(root, 32)):
        example = data[i]
        assert example["label"] == label, key
        for name in ("mean", "logvar", "mean_flip", "logvar_flip"):
            assert example[name].dtype == np.float16 and example[name].shape == (32, 32, 3)
        # float16 holds [-1, 1] to within 2^-11.
        np.testing.assert_allclose(example["mean"], crop, atol=2**-11, err_msg=key)
        np.testing.assert_allclose(example["mean_flip"], crop[:, ::-1], atol=2**-11, err_msg=key)
        assert np.all(example["logvar"] == -30) and np.all(example["logvar_flip"] == -30)


class InterruptingSource:
    """Wraps a source; the example at position `at` raises `error` when produced."""

    def __init__(self, source, at: int, error: BaseException):
        self.source, self.at, self.error = source, at, error
        self.class_names = source.class_names
        self.produced = 0

    @property
    def num_examples(self):
        return len(self.source)

    def __len__(self):
        return len(self.source)

    def __iter__(self):
        return self.iter_range(0, len(self))

    def iter_range(self, start, stop):
        for position, example in zip(
            range(start, stop), self.source.iter_range(start, stop), strict=True
        ):
            if position == self.at:
                raise self.error
            self.produced += 1
            yield example


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("disk on fire")])
def test_interrupted_extraction_is_invisible_and_resumes(tmp_path, error):
    root = make_folder(tmp_path / "images")
    out = tmp_path / "latents"
    source = open_source(f"folder:{root}")
    with pytest.raises(type(error)):  # interrupted in the third shard (examples 8..10)
        extract(InterruptingSource(source, at=9, error=error), out)
    assert not out.exists()  # nothing half-written is visible at the destination
    with pytest.raises(tfds.core.dataset_info.DatasetInfoFileError):
        tfds.builder_from_directory(str(out))
    partial = tmp_path / "latents.partial"
    # Complete shard files only: temporary ones end in .tmp.
    finished = sorted(p.name for p in partial.iterdir() if p.name.endswith("-of-00003"))
    assert finished == [
        "ditjax_latents-train.array_record-00000-of-00003",
        "ditjax_latents-train.array_record-00001-of-00003",
    ]
    mtimes = {name: os.stat(partial / name).st_mtime_ns for name in finished}

    again = InterruptingSource(source, at=-1, error=error)
    summary = extract(again, out)
    assert summary.shards_reused == 2 and summary.num_examples == 9 and summary.num_skipped == 2
    assert again.produced == 3  # only the unfinished shard's examples were read again
    for name, mtime in mtimes.items():
        assert os.stat(out / name).st_mtime_ns == mtime  # finished shards were not rewritten
    assert not partial.exists()
    data = tfds.builder_from_directory(str(out)).as_data_source(split="train")
    labels = [int(data[i]["label"]) for i in range(len(data))]
    assert labels == [label for _, label, _ in expected_examples(root, 32)]


def test_complete_dataset_is_left_alone_and_other_settings_refused(tmp_path, capsys):
    root = make_folder(tmp_path / "images")
    out = tmp_path / "latents"
    source = open_source(f"folder:{root}")
    extract(source, out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = InterruptingSource(source, at=-1, error=RuntimeError())
    summary = extract(again, out)
    assert summary.num_examples == 9 and summary.shards_reused == 0
    assert again.produced == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    with pytest.raises(FileExistsError, match="image_size 32 \\(now 16\\)"):
        extract_latents(source, IdentityAutoencoder(), 16, str(out), progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a latent dataset"):
        extract(source, tmp_path / "other")


def test_resuming_with_other_settings_is_refused(tmp_path):
    root = make_folder(tmp_path / "images")
    out = tmp_path / "latents"
    source = open_source(f"folder:{root}")
    with pytest.raises(KeyboardInterrupt):
        extract(InterruptingSource(source, at=5, error=KeyboardInterrupt()), out)
    with pytest.raises(FileExistsError, match="examples_per_shard 4 \\(now 5\\)"):
        extract(source, out, examples_per_shard=5)
    extract(source, out)  # the same settings resume
    assert (out / "ditjax_latents.json").exists()


def test_image_size_must_fit_the_downsampling(tmp_path):
    class Downsampling(IdentityAutoencoder):
        downsample = 8

    root = make_folder(tmp_path / "images")
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 8"):
        extract_latents(open_source(f"folder:{root}"), Downsampling(), 36, str(tmp_path / "o"))


def test_autoencoder_specs():
    assert create_autoencoder("identity").latent_channels == 3
    for spec, message in (
        ("vae", "unknown autoencoder 'vae'.*identity, sd-vae:PATH"),
        ("sd-vae:", "sd-vae:PATH"),
        ("identity:x", "identity"),
    ):
        with pytest.raises(ValueError, match=message):
            create_autoencoder(spec)


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    from ditjax.autoencoder import IdentityAutoencoder
    from ditjax.data.extract import extract_latents
    from ditjax.data.sources import open_source
    assert jax.local_device_count() == 2
    summary = extract_latents(open_source("folder:" + sys.argv[1]), IdentityAutoencoder(), 32,
                              sys.argv[2], batch_size=3, examples_per_shard=5, progress=False)
    print("EXAMPLES", summary.num_examples)
    """
)


@pytest.mark.slow
def test_extraction_on_two_devices_matches_one(tmp_path):
    root = make_folder(tmp_path / "images")
    one = tmp_path / "one"
    extract(open_source(f"folder:{root}"), one, batch_size=64, examples_per_shard=5)
    two = tmp_path / "two"
    # batch_size 3 rounds up to 4 (2 devices); shards of 5 end in padded batches.
    result = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(root), str(two)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EXAMPLES 9" in result.stdout
    a = tfds.builder_from_directory(str(one)).as_data_source(split="train")
    b = tfds.builder_from_directory(str(two)).as_data_source(split="train")
    assert len(a) == len(b) == 9
    for i in range(9):
        for key in ("mean", "logvar", "mean_flip", "logvar_flip", "label"):
            np.testing.assert_array_equal(a[i][key], b[i][key])
