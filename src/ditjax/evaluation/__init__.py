"""Evaluation of samples."""
