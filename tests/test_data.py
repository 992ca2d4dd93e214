"""Data: ADM crop, demo set, extraction (corrupt files, resume, interruption), pipeline."""

import dataclasses
import json
import os

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ditjax.autoencoder import IdentityAutoencoder, create_autoencoder
from ditjax.data.adm_crop import center_crop_adm, to_model_range
from ditjax.data.demo_shapes import DEMO_CLASS_NAMES, generate_demo_images
from ditjax.data.extract import extract_latents
from ditjax.data.pipeline import RecordIndexer, make_train_iterator
from ditjax.data.sources import open_source
from ditjax.evaluation.demo_classifier import classify, train_demo_classifier

# ADM center crop ---------------------------------------------------------------------------


def gradient_image(width, height):
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    rgb = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 77.0),
        ],
        axis=-1,
    )
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize(
    ("size", "target", "halved", "resized"),
    [
        ((500, 375), 256, (500, 375), (341, 256)),  # no halving: 375 < 512; 500*256/375=341.3
        ((1200, 700), 256, (600, 350), (439, 256)),  # one halving; 600*256/350 = 438.9
        ((2100, 1030), 256, (525, 257), (523, 256)),  # two halvings
        ((300, 640), 256, (300, 640), (256, 546)),  # portrait: 640*256/300 = 546.1
        ((100, 80), 32, (50, 40), (40, 32)),  # halving stops when the short side < 2S
    ],
)
def test_adm_crop_matches_hand_computation(size, target, halved, resized):
    image = gradient_image(*size)
    expected = image
    while min(expected.size) >= 2 * target:
        expected = expected.resize((expected.width // 2, expected.height // 2), Image.BOX)
    assert expected.size == halved
    expected = expected.resize(resized, Image.BICUBIC)
    top, left = (resized[1] - target) // 2, (resized[0] - target) // 2
    expected = np.asarray(expected)[top : top + target, left : left + target]
    crop = center_crop_adm(image, target)
    assert crop.shape == (target, target, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, expected)


def test_adm_crop_floor_offset_and_range():
    image = gradient_image(37, 32)  # 5 extra columns: floor(5 / 2) = 2 on the left
    crop = center_crop_adm(image, 32)
    np.testing.assert_array_equal(crop, np.asarray(image)[:, 2:34])
    scaled = to_model_range(np.array([0, 255], np.uint8))
    np.testing.assert_allclose(scaled, [-1.0, 1.0])


# Demo set ----------------------------------------------------------------------------------


def test_demo_set_is_deterministic_balanced_and_learnable():
    a, labels = generate_demo_images(20, seed=7)
    b, _ = generate_demo_images(20, seed=7)
    c, _ = generate_demo_images(20, seed=8)
    assert a.shape == (200, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(labels).tolist() == [20] * len(DEMO_CLASS_NAMES)
    train_x, train_y = generate_demo_images(100, seed=1)
    classifier = train_demo_classifier(train_x, train_y)
    test_x, test_y = generate_demo_images(50, seed=2)
    assert np.mean(classify(classifier, test_x) == test_y) >= 0.95


def test_demo_tfds_builder_prepares_offline(tmp_path):
    source = open_source("tfds:demo_shapes:test", data_dir=str(tmp_path))
    assert len(source) == 1000 and source.class_names == list(DEMO_CLASS_NAMES)
    first = next(iter(source))
    assert first.load().size == (32, 32)


# Extraction --------------------------------------------------------------------------------


def make_folder(root, per_class=3, classes=("cat", "ant", "bee")):
    images, _ = generate_demo_images(per_class, seed=0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            path = root / name / f"{i}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(images[i * 10 + c]).resize((40, 48)).save(path)
    (root / "bee" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")


def test_extraction_reports_corrupt_files_and_stores_moments(tmp_path):
    make_folder(tmp_path / "images")
    out = tmp_path / "latents"
    summary = extract_latents(
        open_source(f"folder:{tmp_path / 'images'}"),
        IdentityAutoencoder(),
        32,
        str(out),
        batch_size=4,
        examples_per_shard=4,
        progress=False,
    )
    assert summary.num_examples == 9 and summary.num_skipped == 1 and summary.num_shards == 3
    assert "bee/corrupt.png" in (out / "skipped.txt").read_text()
    info = json.loads((out / "ditjax_latents.json").read_text())
    assert info["class_names"] == ["ant", "bee", "cat"]  # sorted folder names
    assert info["latent_shape"] == [32, 32, 3]
    data = tfds.builder_from_directory(str(out)).as_data_source(split="train")
    assert len(data) == 9
    # Example 0 is the first file of the first class, "ant/0.jpg".
    expected = to_model_range(center_crop_adm(Image.open(tmp_path / "images/ant/0.jpg"), 32))
    example = data[0]
    assert example["label"] == 0 and example["mean"].dtype == np.float16
    np.testing.assert_allclose(example["mean"], expected, atol=1e-3)
    np.testing.assert_allclose(example["mean_flip"], expected[:, ::-1], atol=1e-3)
    assert np.all(example["logvar"] == np.float16(-30.0))
    labels = sorted(int(data[i]["label"]) for i in range(9))
    assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]


class InterruptedSource:
    """Wraps a source; loading item `at` raises KeyboardInterrupt, as Ctrl-C would."""

    def __init__(self, source, at):
        self.source, self.at = source, at
        self.class_names = source.class_names

    def __len__(self):
        return len(self.source)

    def __iter__(self):
        for i, item in enumerate(self.source):
            if i == self.at:
                yield dataclasses.replace(item, load=self.interrupt)
            else:
                yield item

    @staticmethod
    def interrupt():
        raise KeyboardInterrupt


def test_interrupted_extraction_resumes_without_redoing_shards(tmp_path):
    make_folder(tmp_path / "images")
    out = tmp_path / "latents"
    source = open_source(f"folder:{tmp_path / 'images'}")
    with pytest.raises(KeyboardInterrupt):  # interrupted in the third shard of four
        extract_latents(
            InterruptedSource(source, at=9),
            IdentityAutoencoder(),
            32,
            str(out),
            batch_size=4,
            examples_per_shard=4,
            progress=False,
        )
    assert not out.exists()  # nothing half-written is visible at the destination
    partial = tmp_path / "latents.partial"
    done = sorted(p.name for p in partial.iterdir() if p.name.endswith("-of-00003"))
    assert len(done) == 2
    mtimes = {name: os.path.getmtime(partial / name) for name in done}
    summary = extract_latents(
        source,
        IdentityAutoencoder(),
        32,
        str(out),
        batch_size=4,
        examples_per_shard=4,
        progress=False,
    )
    assert summary.shards_reused == 2 and summary.num_examples == 9
    for name, mtime in mtimes.items():
        assert os.path.getmtime(out / name) == mtime  # finished shards were not redone
    again = extract_latents(source, IdentityAutoencoder(), 32, str(out), progress=False)
    assert again.num_examples == 9 and again.shards_reused == 0  # complete: left alone


# Input pipeline ----------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [2, 4])
def test_process_splits_have_no_overlap_and_no_gap(processes):
    num_records, global_batch = 103, 8
    per_epoch = (num_records // global_batch) * global_batch
    indexers = [
        RecordIndexer(num_records, global_batch, p, processes, seed=3) for p in range(processes)
    ]
    local = global_batch // processes
    steps = num_records // global_batch
    seen = [[ix(i) for i in range(steps * local)] for ix in indexers]
    flat = [r for s in seen for r in s]
    assert len(flat) == len(set(flat)) == per_epoch  # one epoch: disjoint, nothing missed
    assert len(set(range(num_records)) - set(flat)) == num_records - per_epoch
    # The same global batches as one process reading everything.
    single = RecordIndexer(num_records, global_batch, 0, 1, seed=3)
    for b in range(steps):
        together = [r for s in seen for r in s[b * local : (b + 1) * local]]
        assert together == [single(b * global_batch + j) for j in range(global_batch)]
    # The next epoch is a different permutation.
    assert [single(per_epoch + j) for j in range(8)] != [single(j) for j in range(8)]


@pytest.fixture(scope="module")
def small_latents(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    images, labels = generate_demo_images(4, seed=0)
    for i, (x, y) in enumerate(zip(images, labels, strict=True)):
        (root / "img" / f"c{y}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(root / "img" / f"c{y}" / f"{i}.png")
    out = root / "latents"
    extract_latents(
        open_source(f"folder:{root / 'img'}"),
        create_autoencoder("identity"),
        16,
        str(out),
        batch_size=8,
        progress=False,
    )
    return str(out)


def test_batches_and_flips(small_latents):
    iterator = make_train_iterator(small_latents, global_batch_size=8, seed=0)
    batch = next(iterator)
    assert batch["mean"].shape == (8, 16, 16, 3) and batch["mean"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    source = tfds.builder_from_directory(small_latents).as_data_source(split="train")
    plain = {source[i]["mean"].astype(np.float32).tobytes() for i in range(len(source))}
    flipped = {source[i]["mean_flip"].astype(np.float32).tobytes() for i in range(len(source))}
    kinds = []
    for _ in range(5):
        for x in next(iterator)["mean"]:
            kinds.append(
                "plain" if x.tobytes() in plain else "flip" if x.tobytes() in flipped else "?"
            )
    assert "?" not in kinds and {"plain", "flip"} <= set(kinds)
    again = make_train_iterator(small_latents, global_batch_size=8, seed=0)
    np.testing.assert_array_equal(next(again)["mean"], batch["mean"])


def test_iterator_resumes_exactly_and_through_orbax(small_latents, tmp_path):
    iterator = make_train_iterator(small_latents, global_batch_size=8, seed=1)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]
    restored = make_train_iterator(small_latents, global_batch_size=8, seed=1)
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])

    saved = make_train_iterator(small_latents, global_batch_size=8, seed=1)
    for _ in range(5):
        next(saved)
    manager = ocp.CheckpointManager(
        tmp_path / "ckpt", item_handlers={"data": grain.checkpoint.CheckpointHandler()}
    )
    manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(saved)))
    manager.wait_until_finished()
    want = next(saved)
    fresh = make_train_iterator(small_latents, global_batch_size=8, seed=1)
    manager.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    np.testing.assert_array_equal(next(fresh)["mean"], want["mean"])
