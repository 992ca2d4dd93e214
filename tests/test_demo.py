"""`python -m ditjax.demo` end to end, shortened to a few steps."""

import json

import numpy as np
import pytest
from PIL import Image

from ditjax.demo import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "--total_steps", "2", "--sample_steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "class match:" in printed and "sample grid:" in printed and "nearest-real:" in printed
    assert "shape match:" in printed
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["steps"] == 2 and 0.0 <= summary["class_match"] <= 1.0
    assert summary["stopped_by_time_limit"] is False
    assert len(summary["per_class_match"]) == len(summary["per_class_shape_match"]) == 10
    # Noise has no shape: the colour-blind classifier sees about chance, though it knows the
    # real shapes.
    assert summary["shape_match"] < 0.5 and summary["shape_classifier_accuracy"] > 0.9
    # Two training steps give noise, far from every real image.
    assert summary["nn_ratio"] > 1.5 and summary["pixel_nn_ratio"] > 1.5
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()
    grid = np.asarray(Image.open(summary["samples"]))
    assert grid.ndim == 3 and grid.shape[2] == 3
