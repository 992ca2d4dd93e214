"""Scoring a small run's samples against its real images: classifier, distances, command."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from ditjax.autoencoder import create_autoencoder
from ditjax.data.demo_shapes import DEMO_CLASS_NAMES, demo_images_at, generate_demo_images
from ditjax.data.extract import extract_latents
from ditjax.data.sources import open_source
from ditjax.evaluation import class_match
from ditjax.evaluation.image_classifier import embed, predict, train_image_classifier
from ditjax.training.loop import train_and_evaluate
from training_fixtures import tiny_config

NUM_CLASSES = len(DEMO_CLASS_NAMES)
STEPS = 300  # classifier training steps


@pytest.fixture(scope="module")
def shapes():
    images, labels = generate_demo_images(16, seed=5)
    return demo_images_at(images, 16), np.asarray(labels)


def test_classifier_tells_held_out_shapes_apart(shapes):
    images, labels = shapes
    train, test = class_match.split_held_out(labels, 0.25, seed=0)
    classifier = train_image_classifier(images[train], labels[train], steps=STEPS)
    assert np.mean(predict(classifier, images[test]) == labels[test]) >= 0.9
    grey = images[test].mean(-1).astype(np.uint8)  # (N, S, S) works too
    assert predict(classifier, grey).shape == (len(test),)
    assert embed(classifier, images[:3]).shape == (3, 128)


def test_split_holds_out_part_of_every_class():
    labels = np.repeat(np.arange(3), [2, 5, 10])
    train, held_out = class_match.split_held_out(labels, 0.2, seed=1)
    assert sorted(np.concatenate([train, held_out])) == list(range(len(labels)))
    assert [np.sum(labels[held_out] == c) for c in range(3)] == [1, 1, 2]
    with pytest.raises(ValueError, match="class 0 has 1 image"):
        class_match.split_held_out(np.array([0, 1, 1]), 0.2, seed=0)


def test_nearest_distances_match_all_pairs():
    rng = np.random.default_rng(0)
    queries, references = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    pairs = np.linalg.norm(queries[:, None] - references[None], axis=-1)
    np.testing.assert_allclose(
        class_match.nearest_distances(queries, references), pairs.min(1), rtol=1e-9
    )


def test_real_shapes_score_high_and_noise_scores_far(shapes):
    images, labels = shapes
    reference = class_match.fit_reference(images, labels, seed=0, classifier_steps=STEPS)
    fresh, fresh_labels = generate_demo_images(4, seed=77)
    fresh = demo_images_at(fresh, 16)
    real = class_match.score_samples(reference, fresh, fresh_labels)
    assert real.class_match >= 0.8 and real.classifier_accuracy >= 0.8
    assert 0.5 < real.nn_ratio < 1.6 and 0.5 < real.pixel_nn_ratio < 1.6
    noise = np.random.default_rng(0).integers(0, 256, size=fresh.shape, dtype=np.uint8)
    noisy = class_match.score_samples(reference, noise, fresh_labels)
    assert noisy.nn_ratio > 2 * real.nn_ratio and noisy.pixel_nn_ratio > 2
    assert noisy.num_samples == len(fresh) and len(noisy.per_class_match) == NUM_CLASSES
    copies = class_match.score_samples(reference, images, labels)  # training images included
    assert copies.nn_ratio < real.nn_ratio and copies.pixel_nn_ratio < real.pixel_nn_ratio


def write_folder(root: pathlib.Path, images, labels, names) -> pathlib.Path:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_command_scores_a_trained_run(tmp_path, capsys):
    images, labels = generate_demo_images(3, seed=2)
    images = demo_images_at(images, 8)
    folder = write_folder(tmp_path / "images", images, labels, DEMO_CLASS_NAMES)
    latents = tmp_path / "latents"
    extract_latents(
        open_source(f"folder:{folder}"),
        create_autoencoder("identity"),
        8,
        str(latents),
        progress=False,
    )
    config = tiny_config()
    config.image_size = config.latent_size = 0  # the dataset's: 8
    config.dataset_dir = str(latents)
    config.global_batch_size = 8
    config.total_steps = 2
    config.sample_every = 0
    train_and_evaluate(config, str(tmp_path / "run"))

    out = tmp_path / "figures.json"
    args = ["--checkpoint", str(tmp_path / "run"), "--images", str(folder), "--num_per_class=2"]
    args += ["--steps=2", "--sampler=ddim", "--classifier_steps=20", "--cfg_scale=1,4"]
    args += [f"--json={out}", f"--grid={tmp_path / 'grid.png'}"]
    assert class_match.main(args) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["cfg_scale"] for r in results] == [1.0, 4.0]
    for figures in results:
        assert figures["num_samples"] == 2 * NUM_CLASSES and figures["num_real_held_out"] == 10
        assert 0 <= figures["class_match"] <= 1 and figures["nn_ratio"] > 0
    assert "class match" in capsys.readouterr().out
    grid = np.asarray(Image.open(tmp_path / "grid_cfg4.png"))  # 2 rows, 10 columns, padding 2
    assert grid.shape == (2 * (2 * 10 + 2), 2 * (10 * 10 + 2), 3)
    assert (tmp_path / "grid_cfg1.png").exists()

    renamed = write_folder(
        tmp_path / "renamed", images, labels, [f"c{i}" for i in range(NUM_CLASSES)]
    )
    assert class_match.main(["--checkpoint", str(tmp_path / "run"), "--images", str(renamed)]) == 2
    assert "are not those of the run's dataset" in capsys.readouterr().err
