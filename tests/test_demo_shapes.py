"""The embedded demo set: deterministic, balanced, learnable, and a working offline TFDS builder."""

import hashlib
import socket
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage

from ditjax.data.demo_shapes import DEMO_CLASS_NAMES, DemoShapes, generate_demo_images, shape_mask
from ditjax.data.sources import open_source
from ditjax.evaluation.demo_classifier import classify, silhouettes, train_demo_classifier


def test_generation_is_deterministic_for_a_seed():
    a, labels_a = generate_demo_images(20, seed=7)
    b, labels_b = generate_demo_images(20, seed=7)
    c, _ = generate_demo_images(20, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(a, c)


def test_shapes_dtypes_and_balanced_classes():
    images, labels = generate_demo_images(30, seed=0)
    assert images.shape == (300, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (300,) and labels.dtype == np.int64
    assert len(DEMO_CLASS_NAMES) == 10 and len(set(DEMO_CLASS_NAMES)) == 10
    assert np.bincount(labels, minlength=10).tolist() == [30] * 10
    # No two images are the same: positions, sizes and backgrounds vary.
    assert len({x.tobytes() for x in images}) == 300


def test_shape_colour_stands_out_from_a_dark_background():
    images, labels = generate_demo_images(20, seed=1)
    x = images.astype(np.float32)
    brightest = np.sort(x.max(-1).reshape(len(x), -1), axis=1)
    # The background is dark; the shape (at least 5% of the pixels) is much brighter.
    assert np.all(brightest[:, : 32 * 32 // 2].mean(1) < 90)
    assert np.all(brightest[:, -32 * 32 // 20 :].mean(1) > 150)
    # The shape's colour (its brightest pixels) is the same within a class.
    top = np.argsort(x.max(-1).reshape(len(x), -1), axis=1)[:, -20:]
    colours = np.take_along_axis(x.reshape(len(x), -1, 3), top[..., None], axis=1).mean(1)
    for c in range(10):
        spread = colours[labels == c].std(0)
        assert np.all(spread < 25), (DEMO_CLASS_NAMES[c], spread)


@pytest.mark.parametrize("label", range(10), ids=DEMO_CLASS_NAMES)
@pytest.mark.parametrize("radius", [9.5, 12.5])
def test_strokes_stay_two_pixels_wide_at_16px(label, radius):
    # Every shape is a union of 4 x 4 blocks (2 x 2 pixels once halved to 16 px): an opening
    # with a 4 x 4 square keeps nearly all of it, where a 1-2 px stroke would vanish.
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float32)
    mask = shape_mask(label, ys - 16.0, xs - 16.0, radius)
    opened = ndimage.binary_opening(mask, structure=np.ones((4, 4), bool))
    assert mask.sum() >= 60
    assert opened.sum() >= 0.9 * mask.sum(), (opened.sum(), mask.sum())


def test_classifier_separates_held_out_classes():
    train_x, train_y = generate_demo_images(100, seed=11)
    test_x, test_y = generate_demo_images(50, seed=12)
    classifier = train_demo_classifier(train_x, train_y, seed=0)
    predicted = classify(classifier, test_x)
    assert predicted.shape == test_y.shape
    accuracy = np.mean(predicted == test_y)
    assert accuracy >= 0.95, accuracy
    # Every class is recognised, not only most of them.
    for c in range(10):
        assert np.mean(predicted[test_y == c] == c) >= 0.8, DEMO_CLASS_NAMES[c]


def test_classifier_is_not_swayed_by_a_colour_unseen_in_training():
    train_x, train_y = generate_demo_images(100, seed=11)
    test_x, test_y = generate_demo_images(20, seed=12)
    classifier = train_demo_classifier(train_x, train_y, seed=0)
    # A few pixels of a colour no training image has (a 4 x 4 x 4 histogram bin it never
    # fills) must not override the rest of the image.
    colours = np.unique((train_x.reshape(-1, 3) // 64).astype(np.int32), axis=0)
    seen = {tuple(c) for c in colours}
    unseen = [np.asarray(c) for c in np.ndindex(4, 4, 4) if c not in seen]
    # The most vivid such colour, so that the marked pixels count as foreground.
    vivid = max(unseen, key=lambda c: int(c.max() - c.min() + c.mean()))
    marked = test_x.copy()
    marked[:, :3, :3] = (vivid * 64 + 32).astype(np.uint8)
    accuracy = np.mean(classify(classifier, marked) == test_y)
    assert accuracy >= 0.9, (vivid, accuracy)


def test_silhouettes_keep_the_shape_and_drop_the_colour():
    images, labels = generate_demo_images(10, seed=5)
    shapes = silhouettes(images)
    assert shapes.shape == images.shape and shapes.dtype == np.uint8
    np.testing.assert_array_equal(shapes[..., 0], shapes[..., 2])
    # Swapping colour channels recolours shape and background; the silhouette stays.
    recoloured = silhouettes(images[..., ::-1])
    np.testing.assert_allclose(recoloured.astype(int), shapes.astype(int), atol=1)
    # The shape is bright, the background dark: a disc covers about a third of its image.
    discs = shapes[labels == DEMO_CLASS_NAMES.index("red_disc")][..., 0]
    bright = (discs > 128).mean(axis=(1, 2))
    assert np.all((bright > 0.15) & (bright < 0.6)), bright
    assert np.all(np.median(discs[:, 0], axis=1) < 64)
    # Different classes give different silhouettes.
    first = {int(y): shapes[i] for i, y in enumerate(labels)}
    assert not np.array_equal(first[DEMO_CLASS_NAMES.index("magenta_ring")], first[0])


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def digests(images) -> list[str]:
    return sorted(hashlib.sha1(np.asarray(x).tobytes()).hexdigest() for x in images)


def test_tfds_builder_prepares_offline(tmp_path, no_network):
    builder = tfds.builder("demo_shapes", data_dir=str(tmp_path))
    assert isinstance(builder, DemoShapes)
    builder.download_and_prepare()
    info = builder.info
    assert info.version == "2.0.0"
    assert info.file_format.value == "array_record"
    assert info.splits["train"].num_examples == 10 * DemoShapes.TRAIN_PER_CLASS
    assert info.splits["test"].num_examples == 10 * DemoShapes.TEST_PER_CLASS
    assert info.features["label"].names == list(DEMO_CLASS_NAMES)
    assert info.features["image"].shape == (32, 32, 3)

    test = builder.as_data_source(split="test")
    examples = [test[i] for i in range(len(test))]
    assert np.bincount([e["label"] for e in examples]).tolist() == [100] * 10
    # The split holds exactly the generated test images (TFDS stores them in its own order).
    expected, expected_labels = generate_demo_images(DemoShapes.TEST_PER_CLASS, seed=1)
    assert digests(e["image"] for e in examples) == digests(expected)
    by_digest = {
        hashlib.sha1(x.tobytes()).hexdigest(): y
        for x, y in zip(expected, expected_labels, strict=True)
    }
    for e in examples[:50]:
        assert by_digest[hashlib.sha1(e["image"].tobytes()).hexdigest()] == e["label"]

    # The extraction source reads the prepared set in a fixed order, in any range.
    source = open_source("tfds:demo_shapes:test", data_dir=str(tmp_path))
    assert len(source) == source.num_examples == 1000
    assert source.class_names == list(DEMO_CLASS_NAMES)
    whole = list(source)
    assert all(e.error is None and e.image.size == (32, 32) for e in whole)
    middle = list(source.iter_range(300, 310))
    assert [e.key for e in middle] == [e.key for e in whole[300:310]]
    for a, b in zip(middle, whole[300:310], strict=True):
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
    np.testing.assert_array_equal(np.asarray(whole[0].image), examples[0]["image"])
    assert [e.label for e in whole] == [e["label"] for e in examples]


def test_source_reads_a_tfrecord_dataset_in_ranges(tmp_path, no_network):
    # A dataset prepared in TFRecord files (no random access) keeps its format when reopened.
    tfds.builder(
        "demo_shapes", data_dir=str(tmp_path), file_format="tfrecord"
    ).download_and_prepare()
    source = open_source("tfds:demo_shapes:test", data_dir=str(tmp_path))
    assert tfds.builder("demo_shapes", data_dir=str(tmp_path)).info.file_format.value == "tfrecord"
    whole = list(source)
    assert len(whole) == 1000
    expected, _ = generate_demo_images(DemoShapes.TEST_PER_CLASS, seed=1)
    assert digests(np.asarray(e.image) for e in whole) == digests(expected)
    middle = list(source.iter_range(995, 1000))
    assert [e.key for e in middle] == [e.key for e in whole[995:]]
    for a, b in zip(middle, whole[995:], strict=True):
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.label == b.label


def test_builder_leaves_no_temporary_folder(tmp_path, monkeypatch):
    # TFDS makes a temporary folder for published metadata when it meets a set not yet
    # prepared; the demo set has none, so nothing may be left in the temporary directory.
    temp_root = tmp_path / "temp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    builder = DemoShapes(data_dir=str(tmp_path / "data"))
    assert not builder.is_prepared()
    assert builder.info.features["label"].names == list(DEMO_CLASS_NAMES)
    assert list(temp_root.iterdir()) == []
