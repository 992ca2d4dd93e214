"""Evaluation of samples: classifiers of real images that score class-conditional samples,
the FID Inception network (`inception_features`) and the ADM metric suite (FID, sFID,
Inception Score, precision and recall).

`python -m ditjax.evaluate` scores a sample file against a reference batch.

`python -m ditjax.evaluation.class_match` scores a run against its real image folder.
"""

from ditjax.evaluation.demo_classifier import DemoClassifier, classify, train_demo_classifier
from ditjax.evaluation.image_classifier import (
    ImageClassifier,
    embed,
    predict,
    train_image_classifier,
)
from ditjax.evaluation.inception import (
    FIDInceptionV3,
    inception_features,
    init_inception_params,
)
from ditjax.evaluation.metrics import (
    feature_statistics,
    frechet_distance,
    inception_score,
    precision_recall,
)

__all__ = [
    "DemoClassifier",
    "FIDInceptionV3",
    "ImageClassifier",
    "classify",
    "embed",
    "feature_statistics",
    "frechet_distance",
    "inception_features",
    "inception_score",
    "init_inception_params",
    "precision_recall",
    "predict",
    "train_demo_classifier",
    "train_image_classifier",
]
