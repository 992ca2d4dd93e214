"""`python -m ditjax.bench --profile_dir`: HLO instructions labelled with the model operations
they compute, trace events reduced to kernel time per step, and the reports that carry it."""

import json
import os

import jax
import jax.numpy as jnp
import pytest

from ditjax import bench
from ditjax.benchmark import profile_markdown
from ditjax.benchmark.profiling import (
    KernelLabel,
    kernel_labels,
    model_operation,
    summarise,
    trace_kernels,
)
from test_bench import TINY


def test_op_names_read_as_model_operations():
    assert (
        model_operation("jit(train_step)/transpose(jvp(DiT))/blocks/blocks_11/mlp/fc1/dot_general")
        == "DiT/blocks/blocks_*/mlp/fc1/dot_general (backward)"
    )
    assert model_operation("jit(f)/jvp(DiT)/blocks/blocks_0/attn/qkv/add") == (
        "DiT/blocks/blocks_*/attn/qkv/add"
    )
    assert model_operation("jit(f)/DiT/final_layer/linear/dot_general") == (
        "DiT/final_layer/linear/dot_general"
    )
    assert model_operation("", "copy") == "copy"


def _compiled_text(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_compiled_instructions_are_labelled_by_kind_and_operation():
    def layer(x, w):
        return jnp.tanh(x @ w) * 2.0

    x, w = jnp.ones((64, 32)), jnp.ones((32, 48))
    labels = kernel_labels(_compiled_text(layer, x, w))
    matmuls = {label.op for label in labels.values() if label.kind == "matmul"}
    assert matmuls and all("dot_general" in op for op in matmuls), labels
    assert any(label.kind == "other" and "tanh" in label.op for label in labels.values()), labels

    def looped(x):
        return jax.lax.fori_loop(0, 3, lambda i, y: jnp.sin(y) @ y, x)

    text = _compiled_text(looped, jnp.ones((8, 8)))
    looped_labels = kernel_labels(text)
    whiles = [line.split("=")[0].strip().lstrip("%") for line in text.splitlines()]
    whiles = [name for name in whiles if name.startswith("while")]
    assert whiles and not set(whiles) & set(looped_labels)
    assert any(label.kind == "matmul" for label in looped_labels.values())


def test_device_events_are_counted_and_host_events_dropped_where_there_are_both():
    trace = {
        "traceEvents": [
            {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
            {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
            {"ph": "X", "pid": 1, "name": "fusion.1", "dur": 500.0},
            {"ph": "X", "pid": 2, "name": "sm90_gemm", "dur": 30.0, "args": {"hlo_op": "dot.2"}},
            {"ph": "X", "pid": 2, "name": "loop_add", "dur": 5.0, "args": {"hlo_op": "fusion.1"}},
            {"ph": "i", "pid": 2, "name": "marker"},
        ]
    }
    assert trace_kernels(trace) == ([("dot.2", 30.0), ("fusion.1", 5.0)], 35.0)
    host_only = {"traceEvents": [e for e in trace["traceEvents"] if e.get("pid") == 1]}
    assert trace_kernels(host_only) == ([("fusion.1", 500.0)], None)


def _line(pid: int, tid: int, name: str) -> dict:
    return {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}


def _kernel(pid: int, tid: int, name: str, dur: float, hlo_op: str = "") -> dict:
    args = {"hlo_op": hlo_op} if hlo_op else {}
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "dur": dur, "args": args}


def test_only_kernel_lines_count_not_the_lines_derived_from_them():
    gpu = [
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        _line(2, 1, "Stream #14(Compute)"),
        _line(2, 2, "XLA Modules"),
        _line(2, 3, "XLA Ops"),
        _kernel(2, 1, "sm90_gemm", 30.0, "dot.2"),
        _kernel(2, 1, "loop_add", 5.0, "fusion.1"),
        _kernel(2, 2, "jit_train_step(7)", 40.0),
        _kernel(2, 3, "dot.2", 30.0),
    ]
    assert trace_kernels({"traceEvents": gpu}) == ([("dot.2", 30.0), ("fusion.1", 5.0)], 35.0)
    tpu = [
        {"ph": "M", "pid": 3, "name": "process_name", "args": {"name": "/device:TPU:0"}},
        _line(3, 1, "XLA Modules"),
        _line(3, 2, "XLA Ops"),
        _kernel(3, 1, "jit_train_step(7)", 40.0),
        _kernel(3, 2, "fusion.4", 12.0),
        _kernel(3, 2, "convolution.5", 20.0),
    ]
    kernels = [("fusion.4", 12.0), ("convolution.5", 20.0)]
    assert trace_kernels({"traceEvents": tpu}) == (kernels, 32.0)


def test_kernel_time_is_summed_per_operation_and_step():
    dot = KernelLabel("matmul", "DiT/blocks/blocks_*/mlp/fc1/dot_general")
    add = KernelLabel("other", "DiT/blocks/blocks_*/add")
    labels = {"dot.1": dot, "dot.2": dot, "add.3": add}
    events = [("dot.1", 3000.0), ("dot.2", 5000.0), ("add.3", 1000.0), ("unknown", 9e9)] * 2
    summary = summarise(events, labels, steps=2, step_s=0.02)
    assert summary["steps"] == 2 and summary["device_kernel_ms_per_step"] is None
    assert summary["kernel_ms_per_step"] == pytest.approx(9.0)
    assert summary["by_kind_ms_per_step"] == pytest.approx({"matmul": 8.0, "other": 1.0})
    assert list(summary["by_kind_ms_per_step"]) == ["matmul", "other"]
    top, second = summary["ops"]
    assert top["op"] == dot.op and top["kind"] == "matmul"
    assert top["ms_per_step"] == pytest.approx(8.0)
    assert top["calls_per_step"] == 2 and top["share"] == pytest.approx(0.4)
    assert second["op"] == add.op and second["ms_per_step"] == pytest.approx(1.0)
    on_device = summarise(events, labels, steps=2, step_s=0.02, device_us=70000.0)
    assert on_device["device_kernel_ms_per_step"] == pytest.approx(35.0)
    with pytest.raises(ValueError, match="steps"):
        summarise(events, labels, steps=0, step_s=0.02)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-profile")
    traces = out / "traces"
    argv = [*TINY, "--mode=train,forward", f"--profile_dir={traces}", "--profile_steps=1"]
    report = bench.main([*argv, f"--out_dir={out}"])
    return report, out


def test_each_model_mode_reports_its_kernel_time_by_operation(profiled):
    report, out = profiled
    train, forward = report["results"]
    traces = {r["profile"]["trace"] for r in (train, forward)}
    assert len(traces) == 2 and all(os.path.isfile(path) for path in traces)
    assert all(path.startswith(str(out / "traces")) for path in traces)
    for result in (train, forward):
        profile = result["profile"]
        assert profile["steps"] == 1 and profile["kernel_ms_per_step"] > 0
        assert profile["device_kernel_ms_per_step"] is None  # a CPU trace has no devices
        assert profile["by_kind_ms_per_step"]["matmul"] > 0
        ops = [op["op"] for op in profile["ops"]]
        blocks = [op for op in ops if op.startswith("DiT/blocks/blocks_*/")]
        assert any("/attn/" in op for op in blocks) and any("/mlp/" in op for op in blocks), ops
        times = [op["ms_per_step"] for op in profile["ops"]]
        assert times == sorted(times, reverse=True) and min(times) > 0
    assert any(op["op"].endswith("(backward)") for op in train["profile"]["ops"])
    assert not any(op["op"].endswith("(backward)") for op in forward["profile"]["ops"])


def test_the_written_reports_carry_the_profiles(profiled):
    report, out = profiled
    with open(out / "results-cpu.json") as f:
        written = json.load(f)
    assert [r["profile"]["ops"] for r in written["results"]] == [
        r["profile"]["ops"] for r in json.loads(json.dumps(report["results"]))
    ]
    markdown = (out / "results-cpu.md").read_text()
    assert markdown.count("Kernel time per step of") == 2
    assert "| kind | operation | ms per step |" in markdown


def test_a_profile_reads_as_markdown_with_the_device_total_where_there_is_one():
    op = {"kind": "attention", "op": "DiT/blocks/blocks_*/attn/fmha", "ms_per_step": 4.0}
    profile = {
        "trace": "t.json.gz",
        "steps": 2,
        "kernel_ms_per_step": 9.0,
        "device_kernel_ms_per_step": 9.5,
        "by_kind_ms_per_step": {"attention": 4.0, "other": 5.0},
        "ops": [{**op, "calls_per_step": 12, "share": 0.4}],
    }
    result = {"mode": "train", "model": "DiT-XL/2", "batch_size": 256, "step_s": 0.01}
    text = profile_markdown({**result, "profile": profile})
    assert "(2 profiled steps, trace `t.json.gz`): 9.0 ms (every device kernel: 9.5 ms)" in text
    assert "(every device kernel: 9.5 ms) against a 10.0 ms step" in text
    assert "attention 4.0, other 5.0" in text
    row = "| attention | `DiT/blocks/blocks_*/attn/fmha` | 4.00 | 12 | 40.0% |"
    assert text.splitlines()[-1] == row
    assert profile_markdown(result) == ""
