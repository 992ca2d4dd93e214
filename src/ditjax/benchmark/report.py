"""Benchmark results as a printed table, a markdown table and a JSON file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_HEADERS = (
    "mode",
    "what",
    "images/s",
    "step ms",
    "compile s",
    "TFLOP/s",
    "ref TFLOP/s",
    "utilisation",
    "FLOPs run/model",
    "program MiB",
    "peak mem MiB",
)


_PROFILE_HEADERS = ("kind", "operation", "ms per step", "calls per step", "share of step")

# Model fields a benchmark sweeps, as they read in a result's description.
_VARIANT_FIELDS = (("remat_policy", "remat"), ("attention_impl", "attention"))


def _variant(result: dict[str, Any]) -> str:
    """', remat full, attention cudnn' for the swept fields a result's model sets."""
    overrides = result.get("model_overrides") or {}
    words = [f", {label} {overrides[key]}" for key, label in _VARIANT_FIELDS if key in overrides]
    if overrides.get("scan_blocks"):
        words.append(", scanned blocks")
    return "".join(words)


def describe(result: dict[str, Any]) -> str:
    """One line saying what a result measured, e.g. 'DiT-S/2, batch 2x8 (CFG 4)' or 'DiT-XL/2,
    batch 256, remat dots_saveable: out of memory'."""
    batch = result["batch_size"]
    mode = result["mode"]
    if mode == "data":
        return f"batch {batch}, {result['workers']} workers"
    what = f"{result['model']}, "
    if "error" in result:
        return what + f"batch {batch}{_variant(result)}: {result['error'].split(':')[0]}"
    if mode == "forward":
        what += f"batch {result['model_batch'] // batch}x{batch} (CFG {result['cfg_scale']:g})"
    elif mode == "sample":
        what += (
            f"batch {batch}, {result['sample_steps']} {result['sampler']} steps "
            f"(CFG {result['cfg_scale']:g})"
        )
    else:
        what += f"batch {batch}"
    return what + _variant(result)


def _row(result: dict[str, Any]) -> list[str]:
    def number(key: str, fmt: str, scale: float = 1.0) -> str:
        value = result.get(key)
        return "-" if value is None else format(value * scale, fmt)

    return [
        result["mode"],
        describe(result),
        number("images_per_s", ",.1f"),
        number("step_s", ".1f", 1e3),
        number("compile_s", ".1f"),
        number("tflops_per_s", ".3g"),
        number("reference_tflops_per_s", ".3g"),
        number("utilisation", ".1%"),
        number("program_flops_per_model_flop", ".2f"),
        number("program_memory_bytes", ".0f", 2**-20),
        number("peak_memory_bytes", ".0f", 2**-20),
    ]


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """The results as aligned plain-text columns."""
    rows = [list(_HEADERS), *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i >= 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table, its first two columns text and the rest numbers."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """The results as a GitHub markdown table."""
    return _markdown(_HEADERS, [_row(r) for r in results])


def profile_markdown(result: dict[str, Any], top: int = 8) -> str:
    """A result's kernel time per step (`result['profile']`) as a heading line, the time of
    each kind and a markdown table of the `top` operations; "" for a result without one."""
    profile = result.get("profile")
    if not profile:
        return ""
    step_ms = result["step_s"] * 1e3
    kinds = ", ".join(f"{kind} {ms:.1f}" for kind, ms in profile["by_kind_ms_per_step"].items())
    device = profile.get("device_kernel_ms_per_step")
    on_device = "" if device is None else f" (every device kernel: {device:.1f} ms)"
    steps = f"{profile['steps']} profiled step" + ("s" if profile["steps"] != 1 else "")
    heading = (
        f"Kernel time per step of {result['mode']} {describe(result)} ({steps}, trace "
        f"`{profile['trace']}`): {profile['kernel_ms_per_step']:.1f} ms"
        f"{on_device} against a {step_ms:.1f} ms step; by kind (ms): {kinds}."
    )
    rows = [
        [
            op["kind"],
            f"`{op['op']}`",
            f"{op['ms_per_step']:.2f}",
            f"{op['calls_per_step']:g}",
            f"{op['share']:.1%}",
        ]
        for op in profile["ops"][:top]
    ]
    return heading + "\n\n" + _markdown(_PROFILE_HEADERS, rows)
