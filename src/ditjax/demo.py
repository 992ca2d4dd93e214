"""`python -m ditjax.demo`: the whole job on the embedded demo set, on a CPU, in minutes.

Builds the demo set, writes its latent dataset (identity autoencoder: pixel space), trains
configs/demo.py, samples a class-conditional grid from the EMA weights and scores it with a
classifier trained on the demo set.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys

import numpy as np
from absl import logging

from ditjax.atomic_files import write_json
from ditjax.host_memory import retain_freed_host_memory

DEMO_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "demo.py"
SAMPLES_PER_CLASS = 8


@dataclasses.dataclass
class DemoResult:
    """Where the demo's outputs are and how good its samples are."""

    checkpoint_dir: str
    grid_path: str
    accuracy: float
    num_classes: int
    steps: int
    nn_ratio: float  # nearest-real distance of samples over that of held-out real images
    shape_match: float  # class match of a classifier that sees the shapes without colour


def run_demo(
    workdir: str = "demo_run",
    *,
    config_file: str | os.PathLike = DEMO_CONFIG,
    total_steps: int | None = None,
    sample_steps: int = 100,
    cfg_scale: float = 4.0,
) -> DemoResult:
    """Runs the demo end to end in `workdir`; each stage is skipped when already done."""
    from ditjax.autoencoder import create_autoencoder
    from ditjax.data.demo_shapes import DEMO_CLASS_NAMES, DemoShapes
    from ditjax.data.extract import extract_latents
    from ditjax.data.sources import open_source
    from ditjax.image_grid import make_grid, save_png
    from ditjax.sample import sample_images
    from ditjax.training.config import load_config_file
    from ditjax.training.loop import train_and_evaluate

    root = pathlib.Path(workdir)
    config = load_config_file(config_file)
    # Named by the demo set's version, so that a workdir of an older set is not reused.
    latents = root / f"latents{config.image_size}_v{DemoShapes.VERSION.major}"
    config.dataset_dir = str(latents)
    if total_steps is not None:
        config.total_steps = total_steps

    print(f"[1/4] demo set and its latents -> {latents}", flush=True)
    source = open_source("tfds:demo_shapes:train", data_dir=str(root / "tfds"))
    extract_latents(
        source, create_autoencoder("identity"), config.image_size, str(latents), batch_size=256
    )

    print(
        f"[2/4] training {config.model} (modified: {dict(config.model_overrides)}) "
        f"for {config.total_steps} steps",
        flush=True,
    )
    run_dir = root / "run"
    result = train_and_evaluate(config, str(run_dir))

    print(f"[3/4] sampling {SAMPLES_PER_CLASS} images per class", flush=True)
    num_classes = len(DEMO_CLASS_NAMES)
    labels = [c for _ in range(SAMPLES_PER_CLASS) for c in range(num_classes)]
    images = sample_images(
        str(run_dir), labels, cfg_scale=cfg_scale, sampler="ddpm", steps=sample_steps, seed=0
    )
    grid_path = save_png(
        make_grid(images, columns=num_classes), str(root / "samples.png"), upscale=4
    )

    print("[4/4] scoring the samples against real demo images", flush=True)
    scores = score_demo_samples(images, np.asarray(labels), config.image_size)
    summary = {
        "checkpoint_dir": result.checkpoint_dir,
        "samples": grid_path,
        **scores,
        "steps": result.step,
        "stopped_by_time_limit": result.time_limited,
    }
    write_json(root / "demo_summary.json", summary)
    return DemoResult(
        result.checkpoint_dir,
        grid_path,
        scores["class_match"],
        num_classes,
        result.step,
        scores["nn_ratio"],
        scores["shape_match"],
    )


def score_demo_samples(images: np.ndarray, labels: np.ndarray, image_size: int) -> dict:
    """The demo's figures for uint8 samples (N, S, S, 3) conditioned on `labels` (N,).

    `class_match`: the share that a classifier trained on real demo images assigns to their
    label (also per class; every class has its own colour, so this is mostly a colour test);
    `shape_match`: the same for a convolutional classifier that sees only the shapes
    (`silhouettes`: colour removed), per class too; `nn_ratio`: distances to the nearest real
    image in a small CNN's features over the same for held-out real images (about 1 for
    samples that look like new real images).
    """
    from ditjax.data.demo_shapes import DEMO_CLASS_NAMES, demo_images_at, generate_demo_images
    from ditjax.evaluation.class_match import fit_reference, score_samples
    from ditjax.evaluation.demo_classifier import classify, silhouettes, train_demo_classifier

    num_classes = len(DEMO_CLASS_NAMES)
    train_images, train_labels = generate_demo_images(500, seed=1234)
    train_images = demo_images_at(train_images, image_size)
    classifier = train_demo_classifier(train_images, train_labels, seed=0)
    predicted = np.asarray(classify(classifier, images))
    reference_images, reference_labels = train_images[:2000], train_labels[:2000]
    features = score_samples(
        fit_reference(reference_images, reference_labels, num_classes=num_classes),
        images,
        labels,
    )
    shapes = score_samples(
        fit_reference(silhouettes(reference_images), reference_labels, num_classes=num_classes),
        silhouettes(images),
        labels,
    )
    return {
        "class_match": float(np.mean(predicted == labels)),
        "chance": 1.0 / num_classes,
        "per_class_match": [
            float(np.mean(predicted[labels == c] == c)) for c in range(num_classes)
        ],
        "shape_match": shapes.class_match,
        "per_class_shape_match": shapes.per_class_match,
        "shape_classifier_accuracy": shapes.classifier_accuracy,
        "nn_ratio": features.nn_ratio,
        "pixel_nn_ratio": features.pixel_nn_ratio,
        "cnn_class_match": features.class_match,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditjax.demo", description=__doc__)
    parser.add_argument("--workdir", default="demo_run", help="where everything is written")
    parser.add_argument("--total_steps", type=int, default=None, help="override training steps")
    parser.add_argument("--sample_steps", type=int, default=100, help="DDPM sampling steps")
    parser.add_argument("--cfg_scale", type=float, default=4.0, help="guidance scale")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    result = run_demo(
        args.workdir,
        total_steps=args.total_steps,
        sample_steps=args.sample_steps,
        cfg_scale=args.cfg_scale,
    )
    print()
    print(f"checkpoints:   {result.checkpoint_dir}")
    print(f"sample grid:   {result.grid_path}  (one column per class)")
    print(
        f"class match:   {result.accuracy:.1%} of samples are classified as the class they were "
        f"conditioned on (chance {1 / result.num_classes:.0%}; every class has its own colour)"
    )
    print(
        f"shape match:   {result.shape_match:.1%} the same for a classifier that sees the "
        "shapes without their colour"
    )
    print(
        f"nearest-real:  {result.nn_ratio:.2f} x the distance of held-out real images to their "
        "nearest training image, in a CNN's features (about 1: samples look like real ones)"
    )
    return 0


if __name__ == "__main__":
    retain_freed_host_memory()
    sys.exit(main())
