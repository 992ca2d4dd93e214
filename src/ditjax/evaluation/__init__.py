"""Evaluation of samples: a classifier of the demo set that scores class-conditional samples."""

from ditjax.evaluation.demo_classifier import DemoClassifier, classify, train_demo_classifier

__all__ = ["DemoClassifier", "classify", "train_demo_classifier"]
