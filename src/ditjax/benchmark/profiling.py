"""Where a benchmarked program spends its time: a profiler trace of a few calls made after the
timed ones, reduced to kernel time per step for each model operation.

Each kernel event of the trace names the HLO instruction it ran (the event's `hlo_op` on GPUs
and TPUs, its name on CPU); the compiled program's HLO text maps that instruction to the model
operation it came from (`DiT/blocks/blocks_*/attn/qkv/dot_general (backward)`) and a kind:
`matmul`, `attention` (a fused attention kernel), `collective` or `other` (elementwise,
reductions, copies).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import jax

_MATMUL_OPCODES = frozenset({"dot", "convolution"})
_COLLECTIVE_OPCODES = frozenset(
    {"all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute"}
)
# Control flow: its events span the kernels of the computations it runs.
_CONTAINER_OPCODES = frozenset({"while", "conditional", "call"})
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (?:\([^=]*?\)|\S+) ([\w\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_TARGET = re.compile(r'custom_call_target="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class KernelLabel:
    """What one HLO instruction is: its kind and the model operation it computes."""

    kind: str
    op: str


@dataclasses.dataclass(frozen=True)
class _Instruction:
    opcode: str
    op_name: str
    calls: tuple[str, ...]
    target: str


def model_operation(op_name: str, fallback: str = "") -> str:
    """An HLO op_name as a model operation: 'jit(train_step)/transpose(jvp(DiT))/blocks/
    blocks_3/mlp/fc1/dot_general' -> 'DiT/blocks/blocks_*/mlp/fc1/dot_general (backward)'.
    Layer indices are folded into '*' so that the blocks of a model add up."""
    text = re.sub(r"^jit\([^)]*\)/", "", op_name)
    backward = "transpose(" in text
    text = re.sub(r"transpose\(jvp\(([^()]*)\)\)", r"\1", text)
    text = re.sub(r"jvp\(([^()]*)\)", r"\1", text)
    text = re.sub(r"(blocks?_)\d+", r"\1*", text)
    if not text:
        return fallback
    return text + (" (backward)" if backward else "")


def _parse_hlo(hlo_text: str) -> tuple[dict[str, _Instruction], dict[str, list[str]]]:
    """Instructions by name, and each computation's instruction names."""
    instructions: dict[str, _Instruction] = {}
    computations: dict[str, list[str]] = collections.defaultdict(list)
    current = None
    for line in hlo_text.splitlines():
        if not line.startswith((" ", "\t")):
            header = _HEADER.match(line)
            current = header.group(1) if header else None
            continue
        match = _INSTRUCTION.match(line)
        if current is None or match is None:
            continue
        name, opcode = match.groups()
        op_name = _OP_NAME.search(line)
        target = _TARGET.search(line)
        instructions[name] = _Instruction(
            opcode,
            op_name.group(1) if op_name else "",
            tuple(_CALLS.findall(line)),
            target.group(1) if target else "",
        )
        computations[current].append(name)
    return instructions, computations


def _custom_call_kind(target: str) -> str | None:
    target = target.lower()
    if "fmha" in target or "attention" in target:
        return "attention"
    if any(word in target for word in ("gemm", "matmul", "cublas")):
        return "matmul"
    return None


def _own_kind(instruction: _Instruction) -> str | None:
    """The kind an instruction has by itself, None where only what it calls can tell."""
    opcode = instruction.opcode
    if opcode in _MATMUL_OPCODES:
        return "matmul"
    if opcode == "custom-call":
        return _custom_call_kind(instruction.target)
    if opcode.removesuffix("-start").removesuffix("-done") in _COLLECTIVE_OPCODES:
        return "collective"
    return None


def kernel_labels(hlo_text: str) -> dict[str, KernelLabel]:
    """HLO instruction name -> KernelLabel for the instructions of a compiled program's HLO
    text (`compiled.as_text()`) that run as kernels (control flow is left out). A fusion takes
    the kind of the matmul or fused attention it contains, and that kernel's operation; other
    instructions their own op_name."""
    instructions, computations = _parse_hlo(hlo_text)
    labels = {}
    for name, instruction in instructions.items():
        if instruction.opcode in _CONTAINER_OPCODES:
            continue
        kind = _own_kind(instruction)
        op = model_operation(instruction.op_name, instruction.opcode)
        if kind is None and instruction.opcode == "fusion":
            inner = [
                instructions[member]
                for called in instruction.calls
                for member in computations.get(called, ())
            ]
            kernels = [m for m in inner if _own_kind(m) in ("matmul", "attention")]
            if kernels:
                kind = _own_kind(kernels[0])
                ops = [model_operation(m.op_name, m.opcode) for m in kernels]
                op = _joined(list(dict.fromkeys(ops)))
        labels[name] = KernelLabel(kind or "other", op)
    return labels


def _joined(ops: list[str]) -> str:
    """'a/b/x' and 'a/b/y' -> 'a/b/x + y': the operations of one fused kernel, the later ones
    without the path they share with the first."""
    first = ops[0].split("/")
    parts = [ops[0]]
    for op in ops[1:]:
        segments = op.split("/")
        shared = 0
        while shared < min(len(first), len(segments)) - 1 and first[shared] == segments[shared]:
            shared += 1
        parts.append("/".join(segments[shared:]))
    return " + ".join(parts)


def _complete_events(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in trace.get("traceEvents", ()) if e.get("ph") == "X" and "dur" in e]


def _named(trace: dict[str, Any], kind: str) -> list[tuple[dict[str, Any], str]]:
    """The trace's metadata events of `kind` ('process_name', 'thread_name') and the names
    they give."""
    return [
        (e, str(e.get("args", {}).get("name", "")))
        for e in trace.get("traceEvents", ())
        if e.get("ph") == "M" and e.get("name") == kind
    ]


def _device_kernels(trace: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The kernel events of the trace's GPU and TPU processes, None for a trace without any.

    A device's kernels are the events of its stream lines ('Stream #3'), or of its 'XLA Ops'
    line where it has no streams (TPU), or all its events where its lines have neither name;
    lines derived from them ('XLA Modules', 'Steps', and 'XLA Ops' beside streams) repeat the
    same time and are left out."""
    devices = {e.get("pid") for e, name in _named(trace, "process_name") if "/device:" in name}
    if not devices:
        return None
    streams: dict[Any, set[Any]] = collections.defaultdict(set)
    ops: dict[Any, set[Any]] = collections.defaultdict(set)
    for e, name in _named(trace, "thread_name"):
        if name.startswith("Stream"):
            streams[e.get("pid")].add(e.get("tid"))
        elif name == "XLA Ops":
            ops[e.get("pid")].add(e.get("tid"))
    # The kernel lines of each device; None: all of them.
    lines = {pid: streams.get(pid) or ops.get(pid) for pid in devices}

    def is_kernel(event: dict[str, Any]) -> bool:
        pid = event.get("pid")
        return pid in lines and (lines[pid] is None or event.get("tid") in lines[pid])

    return [e for e in _complete_events(trace) if is_kernel(e)]


def trace_kernels(trace: dict[str, Any]) -> tuple[list[tuple[str, float]], float | None]:
    """The kernel events of a trace-viewer trace as (HLO instruction name, microseconds), and
    the microseconds of all its device kernels together (None for a trace without devices).

    Where the trace has device processes (GPU, TPU), only their kernels count, named by their
    `hlo_op`, so that host launches are not counted twice; on CPU every thread's events do,
    named by the event. The device total counts every kernel, whether or not its instruction
    is known: much less than the steps means idle devices, more than the labelled kernel time
    kernels the HLO text does not name (a CUDA graph's, say)."""
    kernels = _device_kernels(trace)
    events = _complete_events(trace) if kernels is None else kernels
    times = [
        (str((e.get("args") or {}).get("hlo_op") or e.get("name", "")), float(e["dur"]))
        for e in events
    ]
    return times, None if kernels is None else sum(duration for _, duration in times)


def summarise(
    events: Iterable[tuple[str, float]],
    labels: dict[str, KernelLabel],
    *,
    steps: int,
    step_s: float,
    device_us: float | None = None,
) -> dict[str, Any]:
    """Kernel time per step of each model operation, the largest first, of each kind, and of
    all the devices' kernels (`device_us` in all, from `trace_kernels`). `share` is against
    the measured step time; kernels that run at the same time (on several CPU threads, say)
    can add up to more than the step."""
    if steps < 1 or step_s <= 0:
        raise ValueError(f"steps must be positive and step_s > 0, got {steps}, {step_s}")
    microseconds: dict[KernelLabel, float] = collections.defaultdict(float)
    calls: collections.Counter[KernelLabel] = collections.Counter()
    for name, duration in events:
        label = labels.get(name)
        if label is not None:
            microseconds[label] += duration
            calls[label] += 1
    step_ms = step_s * 1e3

    def per_step(us: float) -> float:
        return us / steps / 1e3

    by_kind: dict[str, float] = collections.defaultdict(float)
    for label, us in microseconds.items():
        by_kind[label.kind] += per_step(us)
    ranked = sorted(microseconds, key=lambda label: -microseconds[label])
    return {
        "steps": steps,
        "device_kernel_ms_per_step": None if device_us is None else per_step(device_us),
        "kernel_ms_per_step": per_step(sum(microseconds.values())),
        "by_kind_ms_per_step": dict(sorted(by_kind.items(), key=lambda item: -item[1])),
        "ops": [
            {
                "kind": label.kind,
                "op": label.op,
                "ms_per_step": per_step(microseconds[label]),
                "calls_per_step": calls[label] / steps,
                "share": per_step(microseconds[label]) / step_ms,
            }
            for label in ranked
        ],
    }


def _newest_trace(log_dir: str) -> str:
    pattern = os.path.join(log_dir, "plugins", "profile", "*", "*.trace.json.gz")
    traces = glob.glob(pattern)
    if not traces:
        raise RuntimeError(f"the profiler wrote no trace ({pattern})")
    return max(traces, key=os.path.getmtime)


def profile_calls(
    call: Callable[[], Any],
    compiled: Any,
    log_dir: str,
    *,
    steps: int,
    step_s: float,
) -> dict[str, Any]:
    """Runs `call` (which must block) `steps` times under the JAX profiler, writing the trace
    to `log_dir` (Perfetto opens it, and so does TensorBoard's profile plugin), and summarises
    the kernel time of `compiled`'s instructions per step."""
    os.makedirs(log_dir, exist_ok=True)
    with jax.profiler.trace(log_dir):
        for _ in range(steps):
            call()
    path = _newest_trace(log_dir)
    with gzip.open(path, "rt") as stream:
        trace = json.load(stream)
    events, device_us = trace_kernels(trace)
    labels = kernel_labels(compiled.as_text())
    return {
        "trace": path,
        **summarise(events, labels, steps=steps, step_s=step_s, device_us=device_us),
    }
