"""`python -m ditjax.bench` on a tiny model: every mode runs and reports sane figures."""

import json
import math

import pytest

from ditjax import bench

TINY = ["--model=DiT-S/8", "--latent_size=8", "--batch_size=2", "--repeats=1"]


@pytest.mark.parametrize("mode", ["train", "forward", "sample"])
def test_model_modes_report_throughput_and_utilisation(mode, tmp_path, capsys):
    out = tmp_path / "results.json"
    bench.main([*TINY, f"--mode={mode}", "--sample_steps=2", f"--out={out}"])
    (result,) = json.loads(out.read_text())["results"]
    assert result["mode"] == mode
    for field in ("step_s", "images_per_s", "model_tflops_per_s", "utilisation"):
        assert math.isfinite(result[field]) and result[field] > 0, field
    assert result["peak_source"].startswith("measured")  # CPU: the matmul rate of this run
    assert result["peak_memory_bytes"] > 0
    assert f"| {mode}" in capsys.readouterr().out


def test_data_mode_reads_batches(tmp_path):
    out = tmp_path / "data.json"
    args = ["--mode=data", "--latent_size=4", "--batch_size=16", "--data_records=64"]
    bench.main([*args, "--data_batches=3", f"--out={out}"])
    (result,) = json.loads(out.read_text())["results"]
    assert result["latent_shape"] == [4, 4, 4] and result["images_per_s"] > 0


def test_peak_table_knows_the_accelerators():
    assert bench.known_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.known_peak_tflops("TPU v5 lite") == 197.0
    assert bench.known_peak_tflops("TPU v5p") == 459.0
    assert bench.known_peak_tflops("cpu") is None
