"""Evaluation of samples: classifiers of real images that score class-conditional samples.

`python -m ditjax.evaluation.class_match` scores a run against its real image folder.
"""

from ditjax.evaluation.demo_classifier import DemoClassifier, classify, train_demo_classifier
from ditjax.evaluation.image_classifier import (
    ImageClassifier,
    embed,
    predict,
    train_image_classifier,
)

__all__ = [
    "DemoClassifier",
    "ImageClassifier",
    "classify",
    "embed",
    "predict",
    "train_demo_classifier",
    "train_image_classifier",
]
