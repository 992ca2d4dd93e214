"""How well a small run's class-conditional samples match its real images.

    python -m ditjax.evaluation.class_match --checkpoint=RUN --images=FOLDER --num_per_class=50

A classifier (`image_classifier`) is fitted on most of the real images of the class folder
(the rest are held out) and scores samples of every class:

- class match: the fraction of samples classified as the class they were conditioned on;
- nearest-real ratio: the mean distance, in the classifier's feature space, from a sample to
  its nearest real training image, divided by the same mean for the held-out real images.
  About 1 when samples look like new real images; well above 1 for noise or broken shapes;
  well below 1 when samples copy training images. `pixel_nn_ratio` is the same in pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from ditjax.atomic_files import write_json
from ditjax.data.adm_crop import center_crop_adm
from ditjax.data.sources import FolderSource
from ditjax.evaluation.image_classifier import (
    ImageClassifier,
    embed,
    predict,
    train_image_classifier,
)


@dataclasses.dataclass
class ClassMatch:
    """The figures of one set of samples; ratios compare them with held-out real images."""

    class_match: float
    per_class_match: list[float]
    classifier_accuracy: float  # on the held-out real images
    sample_nn: float  # mean feature distance, sample -> nearest real training image
    real_nn: float  # the same for held-out real images
    nn_ratio: float
    pixel_nn_ratio: float
    num_samples: int
    num_real_train: int
    num_real_held_out: int


@dataclasses.dataclass(frozen=True)
class RealReference:
    """A classifier fitted on the real training images, and what samples are compared with."""

    classifier: ImageClassifier
    accuracy: float  # on the held-out real images
    train_features: np.ndarray  # (N_train, F)
    train_pixels: np.ndarray  # float32 (N_train, S, S, 3) in [0, 1]
    real_nn: float  # mean feature distance, held-out real -> nearest real training image
    real_pixel_nn: float
    num_held_out: int


def load_image_folder(
    root: str | os.PathLike, image_size: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 images (N, S, S, 3) center-cropped as extraction does, labels (N,), class names)
    of a folder of class subfolders; an unreadable file is an error."""
    source = FolderSource(root)
    images, labels = [], []
    for example in source:
        if example.image is None:
            raise ValueError(f"cannot read {example.key} in {root}: {example.error}")
        images.append(center_crop_adm(example.image, image_size))
        labels.append(example.label)
    return np.stack(images), np.asarray(labels, np.int64), list(source.class_names)


def split_held_out(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out): `fraction` of every class held out (at least one each)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise ValueError(f"class {label} has {len(members)} image(s); need at least 2")
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held_out.extend(members[:count])
        train.extend(members[count:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(held_out))


def nearest_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """float64 (M,): Euclidean distance from each of queries (M, F) to its nearest of
    references (N, F)."""
    queries = np.asarray(queries, np.float64).reshape(len(queries), -1)
    references = np.asarray(references, np.float64).reshape(len(references), -1)
    ref_sq = np.sum(references**2, axis=1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), 1024):
        q = queries[start : start + 1024]
        squared = np.sum(q**2, axis=1)[:, None] - 2 * q @ references.T + ref_sq[None]
        out[start : start + 1024] = np.sqrt(np.maximum(squared.min(axis=1), 0))
    return out


def fit_reference(
    real_images: np.ndarray,
    real_labels: np.ndarray,
    *,
    num_classes: int | None = None,
    held_out: float = 0.2,
    seed: int = 0,
    classifier_steps: int | None = None,
) -> RealReference:
    """Fits the classifier on uint8 real images (N, S, S, 3) with labels (N,) less a held-out
    part, which measures its accuracy and the real-to-real nearest distances."""
    train, test = split_held_out(real_labels, held_out, seed)
    classifier = train_image_classifier(
        real_images[train],
        real_labels[train],
        num_classes=num_classes or int(real_labels.max()) + 1,
        steps=classifier_steps,
        seed=seed,
    )
    accuracy = float(np.mean(predict(classifier, real_images[test]) == real_labels[test]))
    train_features = embed(classifier, real_images[train])
    held_out_features = embed(classifier, real_images[test])
    train_pixels = real_images[train].astype(np.float32) / 255.0
    held_out_pixels = real_images[test].astype(np.float32) / 255.0
    return RealReference(
        classifier=classifier,
        accuracy=accuracy,
        train_features=train_features,
        train_pixels=train_pixels,
        real_nn=float(np.mean(nearest_distances(held_out_features, train_features))),
        real_pixel_nn=float(np.mean(nearest_distances(held_out_pixels, train_pixels))),
        num_held_out=len(test),
    )


def score_samples(
    reference: RealReference, samples: np.ndarray, sample_labels: np.ndarray
) -> ClassMatch:
    """Scores uint8 samples (M, S, S, 3) conditioned on `sample_labels` (M,)."""
    sample_labels = np.asarray(sample_labels)
    hits = predict(reference.classifier, samples) == sample_labels
    per_class = [float(np.mean(hits[sample_labels == c])) for c in np.unique(sample_labels)]
    sample_features = embed(reference.classifier, samples)
    sample_nn = float(np.mean(nearest_distances(sample_features, reference.train_features)))
    pixels = samples.astype(np.float32) / 255.0
    sample_pixel_nn = float(np.mean(nearest_distances(pixels, reference.train_pixels)))
    return ClassMatch(
        class_match=float(np.mean(hits)),
        per_class_match=per_class,
        classifier_accuracy=reference.accuracy,
        sample_nn=sample_nn,
        real_nn=reference.real_nn,
        nn_ratio=sample_nn / max(reference.real_nn, 1e-12),
        pixel_nn_ratio=sample_pixel_nn / max(reference.real_pixel_nn, 1e-12),
        num_samples=len(samples),
        num_real_train=len(reference.train_features),
        num_real_held_out=reference.num_held_out,
    )


def check_class_names(dataset_dir: str, class_names: list[str]) -> None:
    """Raises ValueError when the run's latent dataset (if still there) names other classes."""
    from ditjax.data.latent_format import INFO_FILE, read_latent_info

    if not dataset_dir or not os.path.exists(os.path.join(dataset_dir, INFO_FILE)):
        return
    recorded = read_latent_info(dataset_dir).get("class_names")
    if recorded is not None and list(recorded) != class_names:
        raise ValueError(
            f"the image folder's classes {class_names} are not those of the run's dataset "
            f"{dataset_dir} ({list(recorded)})"
        )


def evaluate_run(
    checkpoint: str,
    images_dir: str,
    *,
    num_per_class: int = 50,
    step: int | None = None,
    ema: bool = True,
    cfg_scales: tuple[float, ...] = (4.0,),
    sampler: str = "ddpm",
    steps: int = 100,
    seed: int = 0,
    held_out: float = 0.2,
    classifier_steps: int | None = None,
) -> list[tuple[float, ClassMatch, np.ndarray]]:
    """[(guidance scale, figures, uint8 samples (M, S, S, 3))] of a run against its real
    images, one classifier for all scales. Samples are M = num_per_class x K, ordered class
    0..K-1 for each repeat, the same noise at every scale."""
    from ditjax.sample import sample_images
    from ditjax.training.restore import load_for_sampling

    if num_per_class < 1:
        raise ValueError(f"num_per_class must be positive, got {num_per_class}")
    if not cfg_scales or min(cfg_scales) < 1:
        raise ValueError(f"guidance scales must be >= 1, got {cfg_scales}")
    config = load_for_sampling(checkpoint, step=step, ema=ema)[0]
    real, real_labels, class_names = load_image_folder(images_dir, config.image_size)
    if len(class_names) > config.num_classes:
        raise ValueError(
            f"{images_dir} has {len(class_names)} classes, the run only {config.num_classes}"
        )
    check_class_names(config.dataset_dir, class_names)
    reference = fit_reference(
        real,
        real_labels,
        num_classes=len(class_names),
        held_out=held_out,
        seed=seed,
        classifier_steps=classifier_steps,
    )
    labels = np.tile(np.arange(len(class_names)), num_per_class)
    results = []
    for scale in cfg_scales:
        samples = sample_images(
            checkpoint,
            [int(y) for y in labels],
            step=step,
            ema=ema,
            cfg_scale=scale,
            sampler=sampler,
            steps=steps,
            seed=seed,
        )
        results.append((scale, score_samples(reference, samples, labels), samples))
    return results


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 1,2,4, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ditjax.evaluation.class_match", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, help="a run's workdir or checkpoints")
    parser.add_argument("--images", required=True, help="the real images: class subfolders")
    parser.add_argument("--num_per_class", type=int, default=50, help="samples per class")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (latest)")
    parser.add_argument("--noema", dest="ema", action="store_false", help="raw params, not EMA")
    parser.add_argument(
        "--cfg_scale", type=_scales, default=(4.0,), help="guidance scale(s), e.g. 1,2,4,6"
    )
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps")
    parser.add_argument("--seed", type=int, default=0, help="seeds samples and classifier")
    parser.add_argument("--held_out", type=float, default=0.2, help="real images held out")
    parser.add_argument(
        "--classifier_steps", type=int, default=None, help="classifier training batches"
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--grid", default=None, help="also write the samples as PNG grids (PATH_cfgS.png)"
    )
    args = parser.parse_args(argv)
    try:
        results = evaluate_run(
            args.checkpoint,
            args.images,
            num_per_class=args.num_per_class,
            step=args.step,
            ema=args.ema,
            cfg_scales=args.cfg_scale,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed,
            held_out=args.held_out,
            classifier_steps=args.classifier_steps,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = results[0][1]
    print(
        f"classifier: {first.classifier_accuracy:.1%} on {first.num_real_held_out} held-out "
        f"real images (trained on {first.num_real_train}); nearest-real distance of held-out "
        f"real images {first.real_nn:.3f}"
    )
    print("cfg    class match  nn ratio  pixel nn ratio  per-class match")
    for scale, figures, samples in results:
        per_class = " ".join(f"{m:.0%}" for m in figures.per_class_match)
        print(
            f"{scale:<6g} {figures.class_match:>10.1%}  {figures.nn_ratio:>8.2f}  "
            f"{figures.pixel_nn_ratio:>14.2f}  {per_class}"
        )
        if args.grid:
            from ditjax.image_grid import make_grid, save_png

            root, ext = os.path.splitext(args.grid)
            columns = len(figures.per_class_match)
            save_png(make_grid(samples, columns=columns), f"{root}_cfg{scale:g}{ext or '.png'}", 2)
    if args.json:
        write_json(
            args.json,
            {
                "checkpoint": args.checkpoint,
                "ema": args.ema,
                "sampler": f"{args.sampler}{args.steps}",
                "results": [
                    {"cfg_scale": scale, **dataclasses.asdict(figures)}
                    for scale, figures, _ in results
                ],
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
