"""`python -m ditjax.bench`: every mode on a tiny model, its JSON report and the peak table."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from ditjax import bench
from ditjax.benchmark import MatmulProbe, describe, known_peak_tflops, markdown_table
from ditjax.benchmark.modes import _reference_optimizer
from ditjax.models import create_model, forward_macs
from ditjax.models.embeddings import TIMESTEP_FREQUENCY_SIZE
from ditjax.training.optimizer import learning_rate_schedule, make_optimizer
from training_fixtures import load_config

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
    "program_tflop_per_step",
    "program_flops_per_model_flop",
    "hardware_utilisation",
    "program_memory_bytes",
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
            # The products the program runs, counted from its trace, against the model's.
            ratio = result["program_flops_per_model_flop"]
            assert np.isclose(result["hardware_utilisation"], result["utilisation"] * ratio)
            assert result["program_flops_by_dtype"] == {"float32 x float32 -> float32": 1.0}
    train, forward, sample, data = written["results"]
    # A guided forward and a sampling loop run exactly the model's products; a train step
    # runs 3 forwards' less the gradients of its inputs: the latents' through the patch
    # embedding and the timestep frequencies' through the timestep MLP's first layer.
    assert forward["program_flops_per_model_flop"] == sample["program_flops_per_model_flop"] == 1
    model = create_model("DiT-S/4", depth=1, hidden_size=32, num_heads=2, input_size=8)
    tokens = (8 // model.patch_size) ** 2
    input_macs = model.hidden_size * (
        tokens * model.patch_size**2 * model.in_channels + TIMESTEP_FREQUENCY_SIZE
    )
    expected = 1 - input_macs / (3 * forward_macs(model))
    assert np.isclose(train["program_flops_per_model_flop"], expected, rtol=1e-12)
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


def refused(argv, monkeypatch, capsys) -> str:
    """The command line's usage error for `argv` (exit status 2), checked to come before any
    benchmark runs."""

    def must_not_run(*args, **kwargs):
        raise AssertionError("a benchmark ran before the bad flag was reported")

    monkeypatch.setattr(bench, "run_benchmarks", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_bad_arguments_are_named(monkeypatch, capsys, tmp_path):
    (tmp_path / "file").write_text("")
    for flags, match in (
        (["--mode=train,fly"], "--mode"),
        (["--mode=train", "--model_overrides=wings=2"], "unknown DiT field"),
        (["--mode=train", "--model_overrides=depth"], "key=value"),
        (["--mode=train", "--repeats=0"], "--repeats: must be at least 1"),
        (["--mode=train", "--repeats=many"], "--repeats: not an integer"),
        (["--mode=train", "--repeats=2.5"], "--repeats: not an integer: '2.5'"),
        (["--mode=train", "--peak_tflops=fast"], "--peak_tflops: not a number"),
        (["--mode=sample", "--sample_steps=0"], "--sample_steps"),
        (["--mode=train", "--warmup=-1"], "--warmup"),
        (["--mode=train", "--matmul_size=0"], "--matmul_size"),
        (["--mode=train", "--peak_tflops=-2"], "--peak_tflops"),
        (["--mode=train,data", "--data_workers=0,-1"], "--data_workers"),
        (["--mode=data", "--data_batch_size=0"], "--data_batch_size"),
        (["--mode=train,data", f"--data_dir={tmp_path}"], "is not a latent dataset"),
        (["--mode=train", "--mesh", "0", "1"], "--mesh"),
        (["--mode=train", f"--out_dir={tmp_path / 'file'}"], "is not a directory"),
        (["--mode=train", f"--profile_dir={tmp_path / 'file'}"], "--profile_dir"),
        (["--mode=train", "--profile_steps=0"], "--profile_steps: must be at least 1"),
        (["--mode=train", "--mesh", str(jax.device_count() + 1), "1"], "does not divide"),
        (["--mode=train", "--require_accelerator"], "--require_accelerator: this host's JAX"),
    ):
        line = refused([*TINY, *flags], monkeypatch, capsys)
        assert line.startswith("python -m ditjax.bench: error:") and match in line, line


def test_the_plan_names_bad_flags_for_library_callers():
    args = bench.build_parser().parse_args([*TINY, "--mode=train,data", "--data_workers=x"])
    with pytest.raises(ValueError, match="--data_workers"):
        bench.plan_benchmarks(args)
    plan = bench.plan_benchmarks(bench.build_parser().parse_args([*TINY, "--mode=data,train"]))
    assert plan.modes == ["train", "data"] and plan.data_workers == [0]
    assert [s.batch_size for s in plan.specs] == [2]
    plan = bench.plan_benchmarks(bench.build_parser().parse_args([*TINY, "--mode=train"]))
    assert plan.data_workers == []


def test_the_matmul_probe_measures_and_names_bad_arguments():
    probe = MatmulProbe(64)
    assert positive(probe.flops_per_s(calls=2, warmup=0))
    with pytest.raises(ValueError, match="calls"):
        probe.flops_per_s(calls=0)
    with pytest.raises(ValueError, match="size"):
        MatmulProbe(0)
    with pytest.raises(ValueError, match="warmup"):
        probe.flops_per_s(warmup=-1)


def test_a_sweep_measures_every_variant_and_names_the_best(tmp_path):
    sweep = [*TINY, "--batch_size=2,4", "--remat=none,full", "--mode=train,forward"]
    report = bench.main([*sweep, f"--out_dir={tmp_path}"])
    results = report["results"]
    train = [r for r in results if r["mode"] == "train"]
    forward = [r for r in results if r["mode"] == "forward"]
    variants = [(r["batch_size"], r["model_overrides"].get("remat_policy", "none")) for r in train]
    assert variants == [(2, "none"), (2, "full"), (4, "none"), (4, "full")]
    # The remat policy only changes a backward pass: the forward runs once per batch size.
    assert [r["batch_size"] for r in forward] == [2, 4]
    assert all("remat_policy" not in r["model_overrides"] for r in forward)
    # Rematerialising recomputes the forward, but the model FLOPs are the model's.
    assert train[0]["model_tflop_per_step"] == train[1]["model_tflop_per_step"]
    assert np.isclose(train[2]["model_tflop_per_step"], 2 * train[0]["model_tflop_per_step"])
    # Each program's own memory, not the process's high-water mark: twice the batch needs more.
    assert train[2]["program_memory_bytes"] > train[0]["program_memory_bytes"]
    assert forward[1]["program_memory_bytes"] > forward[0]["program_memory_bytes"]
    best = report["best"]
    assert set(best) == {"train DiT-S/4", "forward DiT-S/4"}
    for mode, rows in (("train", train), ("forward", forward)):
        chosen = results[best[f"{mode} DiT-S/4"]]
        assert chosen["mode"] == mode
        assert chosen["utilisation"] == max(r["utilisation"] for r in rows)
    markdown = (tmp_path / "results-cpu.md").read_text()
    assert "| train | DiT-S/4, batch 2, remat full |" in markdown
    assert f"- best train: {describe(results[best['train DiT-S/4']])}" in markdown


def test_a_variant_out_of_memory_is_reported_and_the_sweep_goes_on(monkeypatch):
    measure = bench.bench_train

    def bench_train(spec, peak):
        if spec.batch_size == 4:
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 81.0GiB."
            )
        return measure(spec, peak)

    monkeypatch.setattr(bench, "bench_train", bench_train)
    report = bench.main([*TINY, "--batch_size=4,2", "--mode=train,forward"])
    failed, trained, *forward = report["results"]
    assert failed["batch_size"] == 4 and failed["error"].startswith("out of memory")
    assert "utilisation" not in failed and describe(failed) == "DiT-S/4, batch 4: out of memory"
    assert trained["batch_size"] == 2 and positive(trained["utilisation"])
    assert [r["batch_size"] for r in forward] == [4, 2]
    assert "train DiT-S/4" not in report["best"]  # one measured variant: nothing to compare
    assert "| train | DiT-S/4, batch 4: out of memory | - |" in markdown_table(report["results"])

    def broken(spec, peak):
        raise jax.errors.JaxRuntimeError("INTERNAL: the compiler failed")

    monkeypatch.setattr(bench, "bench_train", broken)
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        bench.main([*TINY, "--mode=train"])


def test_bad_sweeps_are_named_before_anything_runs(monkeypatch, capsys):
    for flag, match in (
        ("--batch_size=0,2", "--batch_size"),
        ("--batch_size=2,two", "--batch_size"),
        ("--remat=none,sometimes", "--remat"),
        ("--attention_impl=flash", "--attention_impl"),
        ("--attention_impl=cudnn", "needs a GPU"),
        ("--model=DiT-S/4,DiT-Q/9", "DiT-Q/9"),
    ):
        assert match in refused([*TINY, "--mode=train", flag], monkeypatch, capsys)


def test_every_combination_of_the_swept_flags_is_a_variant():
    flags = ["--model=DiT-S/4,DiT-B/4", "--batch_size=2,4", "--remat=none,full", "--scan_blocks"]
    args = bench.build_parser().parse_args(flags)
    specs = bench._specs(args)
    assert [(s.model, s.batch_size, dict(s.model_overrides)) for s in specs] == [
        (model, batch, {"scan_blocks": True, **remat})
        for model in ("DiT-S/4", "DiT-B/4")
        for batch in (2, 4)
        for remat in ({}, {"remat_policy": "full"})
    ]
    assert len(bench.inference_specs(specs)) == 4


def test_the_best_variant_is_chosen_per_mode_and_model():
    def row(mode, model, utilisation=None):
        result = {"mode": mode, "model": model, "batch_size": 8}
        if utilisation is None:
            result["error"] = "out of memory: RESOURCE_EXHAUSTED"
        else:
            result["utilisation"] = utilisation
        return result

    results = [
        row("train", "DiT-XL/2", 0.41),
        row("train", "DiT-XL/2", 0.52),
        row("train", "DiT-XL/2"),
        row("train", "DiT-B/2", 0.30),
        row("train", "DiT-B/2", 0.29),
        row("sample", "DiT-XL/2", 0.60),
        row("sample", "DiT-B/2"),
        row("sample", "DiT-B/2", 0.45),
        {"mode": "data", "batch_size": 256, "workers": 0},
    ]
    assert bench.best_results(results) == {"train DiT-XL/2": 1, "train DiT-B/2": 3}


# The data, logging, checkpoint and config stacks of a training run, which an accelerator host
# benchmarking the model does not need.
TRAINING_RUN_STACK = (
    "grain",
    "tensorflow_datasets",
    "array_record",
    "clu",
    "tensorflow",
    "orbax",
    "ml_collections",
)


@pytest.mark.slow
def test_the_model_modes_run_without_the_training_run_stack():
    code = f"""
import sys
from ditjax import bench
bench.main({[*TINY, "--mode=train,forward,sample"]!r})
print(sorted({{name.split(".")[0] for name in sys.modules}} & set({TRAINING_RUN_STACK!r})))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_batch_the_devices_do_not_divide_is_refused():
    done = subprocess.run(
        [sys.executable, "-m", "ditjax.bench", *TINY, "--mode=train", "--batch_size=4,3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--batch_size [3] must be a multiple of the 2 devices" in done.stderr


def test_the_benchmark_optimizer_steps_as_the_base_config_does():
    optimizer, learning_rate_fn = _reference_optimizer()
    config = load_config("base")
    reference = make_optimizer(config)
    keys = jax.random.split(jax.random.key(0), 5)
    params = {"w": jax.random.normal(keys[0], (5, 3)), "b": jax.random.normal(keys[1], (3,))}
    states = optimizer.init(params), reference.init(params)
    for step, key in enumerate(keys[2:]):
        grads = {"w": jax.random.normal(key, (5, 3)), "b": jax.random.normal(key, (3,)) * 10}
        update, state = optimizer.update(grads, states[0], params)
        expected, reference_state = reference.update(grads, states[1], params)
        jax.tree.map(np.testing.assert_array_equal, update, expected)
        assert learning_rate_fn(step) == learning_rate_schedule(config)(step)
        states = state, reference_state
        params = optax.apply_updates(params, update)
