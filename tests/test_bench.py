"""`python -m ditjax.bench`: every mode on a tiny model, its JSON report and the peak table."""

import json
import math

import numpy as np
import pytest

from ditjax import bench
from ditjax.benchmark import MatmulProbe, known_peak_tflops, markdown_table

TINY = [
    "--model=DiT-S/4",
    "--model_overrides=depth=1,hidden_size=32,num_heads=2",
    "--latent_size=8",
    "--batch_size=2",
    "--repeats=2",
    "--warmup=0",
    "--sample_steps=2",
    "--data_records=32",
    "--data_batch_size=8",
    "--data_workers=0",
    "--data_batches=2",
    "--matmul_size=64",
]
MODEL_FIELDS = (
    "images_per_s",
    "step_s",
    "compile_s",
    "model_tflop_per_step",
    "tflops_per_s",
    "utilisation",
    "peak_memory_bytes",
)


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    returned = bench.main([*TINY, "--mode=all", f"--out_dir={out}"])
    with open(out / "results-cpu.json") as f:
        written = json.load(f)
    return returned, written, (out / "results-cpu.md").read_text()


def test_every_mode_reports_positive_finite_figures(report):
    returned, written, _ = report
    assert written["results"] == json.loads(json.dumps(returned["results"]))
    assert [r["mode"] for r in written["results"]] == ["train", "forward", "sample", "data"]
    reference = written["reference_peak"]
    assert "matmul" in reference["source"] and reference["sampled_during_modes"] is True
    assert positive(reference["tflops_per_s"])
    for result in written["results"]:
        fields = MODEL_FIELDS if result["mode"] != "data" else ("images_per_s", "step_s")
        for field in fields:
            assert positive(result[field]), (result["mode"], field, result.get(field))
        assert positive(result["peak_memory_bytes"])
        if result["mode"] != "data":
            # Against the matmul timed between this mode's repeats, not the start's rate.
            assert positive(result["reference_tflops_per_s"])
            expected = result["tflops_per_s"] / (
                result["reference_tflops_per_s"] * result["devices"]
            )
            assert np.isclose(result["utilisation"], expected, rtol=1e-6)
    train, forward, sample, data = written["results"]
    assert len(train["step_times_s"]) == 2
    assert np.isclose(train["images_per_s"], 2 / train["step_s"])
    # Model FLOPs: a train step ~ 3 forwards, a guided forward 2, a sampling loop steps x 2.
    per_forward = forward["model_tflop_per_step"] / 2
    assert np.isclose(train["model_tflop_per_step"], 3 * per_forward)
    assert np.isclose(sample["model_tflop_per_step"], 2 * 2 * per_forward)
    assert forward["model_batch"] == 4
    assert data["latent_shape"] == [8, 8, 4] and data["workers"] == 0


def test_markdown_has_a_row_per_result(report):
    _, written, markdown = report
    assert written["command"].startswith("python -m ditjax.bench --model=DiT-S/4")
    table = markdown_table(written["results"])
    assert table in markdown
    assert len(table.splitlines()) == 2 + len(written["results"])


def test_known_peaks_and_overrides():
    assert known_peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert known_peak_tflops("NVIDIA A100-SXM4-40GB") == 312
    assert known_peak_tflops("TPU v4") == 275
    assert known_peak_tflops("TPU v5 lite") == 197
    assert known_peak_tflops("TPU v5p") == 459
    assert known_peak_tflops("TPU v6 lite") == 918
    assert known_peak_tflops("cpu") is None
    result = bench.main([*TINY, "--mode=forward", "--peak_tflops=0.5"])
    assert result["reference_peak"] == {
        "tflops_per_s": 0.5,
        "source": "override",
        "sampled_during_modes": False,
    }
    forward = result["results"][0]
    assert forward["reference_tflops_per_s"] == 0.5
    assert np.isclose(forward["utilisation"], forward["tflops_per_s"] / 0.5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="--mode"):
        bench.main([*TINY, "--mode=train,fly"])
    with pytest.raises(ValueError, match="unknown DiT field"):
        bench.main([*TINY, "--mode=train", "--model_overrides=wings=2"])
    with pytest.raises(ValueError, match="key=value"):
        bench.main([*TINY, "--mode=train", "--model_overrides=depth"])


def test_the_matmul_probe_measures_and_names_bad_arguments():
    probe = MatmulProbe(64)
    assert positive(probe.flops_per_s(calls=2, warmup=0))
    with pytest.raises(ValueError, match="calls"):
        probe.flops_per_s(calls=0)
    with pytest.raises(ValueError, match="size"):
        MatmulProbe(0)
    with pytest.raises(ValueError, match="warmup"):
        probe.flops_per_s(warmup=-1)
