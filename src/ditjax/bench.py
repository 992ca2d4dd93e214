"""`python -m ditjax.bench`: throughput and model FLOP utilisation of a DiT on the local devices.

Modes: `train` (a jitted train step), `forward` (a guided forward: CFG doubles the batch),
`sample` (a whole guided sampling loop as one program), `data` (the latent input pipeline
alone, images/s per host) or `all`. `forward` and `sample` are compiled as the library's
sampler is (`ditjax.inference_compile`: on CPU, without YNNPACK). Each reports images/s, the
median step time after warm-up, compile time, model TFLOP/s from the analytic forward cost,
utilisation against the device's peak (published for GPUs and TPUs, `--peak_tflops` to
override; on CPU a float32 matmul timed between the repeats of each mode), the memory the
compiled program needs per device and the process's peak memory so far. `--out_dir` writes
results-<device>.json and .md there. `--profile_dir` traces a few more calls of each model
mode with the JAX profiler and reports the kernel time per step of each model operation.

`--model`, `--batch_size`, `--remat` and `--attention_impl` take comma lists: every combination is
measured in each mode (the remat policies in `train` only), a variant that runs out of device
memory is reported as such and the sweep goes on, and the best variant of each mode and
model is named at the end.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import itertools
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax

from ditjax.atomic_files import write_json, write_text
from ditjax.benchmark import (
    BenchSpec,
    bench_data,
    bench_forward,
    bench_sample,
    bench_train,
    describe,
    format_table,
    markdown_table,
    profile_markdown,
    reference_peak,
    write_synthetic_latents,
)
from ditjax.host_memory import retain_freed_host_memory
from ditjax.models import ATTENTION_IMPLS, REMAT_POLICIES, check_attention_impl
from ditjax.models.registry import DTYPES
from ditjax.parallel import resolve_mesh_shape
from ditjax.sampling import SAMPLERS

MODES = ("train", "forward", "sample", "data")


def parse_modes(text: str) -> list[str]:
    """'all' or a comma-separated list of MODES -> the modes in run order."""
    names = MODES if text == "all" else tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in MODES]
    if unknown or not names:
        raise ValueError(f"--mode must be 'all' or a comma list of {MODES}, got {text!r}")
    return [m for m in MODES if m in names]


def parse_overrides(text: str) -> tuple[tuple[str, Any], ...]:
    """'depth=2,hidden_size=64' -> (('depth', 2), ('hidden_size', 64)); values are parsed as
    JSON where they can be (numbers, true/false), else kept as strings."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model_overrides wants key=value pairs, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        pairs.append((key, parsed))
    return tuple(pairs)


def parse_list(text: str, flag: str, convert=str, choices: Sequence[Any] = ()) -> list[Any]:
    """'64,128' -> [64, 128] for a comma-list flag, each item converted and checked against
    `choices` when given; an empty item is kept only where it is itself a choice ('' = the
    default attention)."""
    items = [item.strip() for item in text.split(",")]
    if "" not in choices:
        items = [item for item in items if item]
    try:
        values = [convert(item) for item in items]
    except ValueError:
        values = []
    if not values or (choices and any(v not in choices for v in values)):
        wanted = f" of {tuple(choices)}" if choices else ""
        raise ValueError(f"{flag} wants a comma list{wanted}, got {text!r}")
    return list(dict.fromkeys(values))


def device_slug(device_kind: str, platform: str) -> str:
    """A file-name form of the device: 'cpu', 'nvidia-h100-80gb-hbm3', 'tpu-v4'."""
    if platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-") or platform


def at_least(minimum: float, convert: type = int):
    """An argparse `type` that converts a flag's value (int or float) and refuses one below
    `minimum`."""
    kind = "an integer" if convert is int else "a number"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ditjax.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mode", default="all", help=f"'all' or a comma list of {MODES}")
    parser.add_argument("--model", default="DiT-S/2", help="a comma list of model names")
    parser.add_argument("--model_overrides", default="", help="DiT fields, e.g. depth=2")
    parser.add_argument("--latent_size", type=at_least(1), default=32)
    parser.add_argument("--batch_size", default="8", help="global batch (images); a comma list")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--scan_blocks", action="store_true")
    parser.add_argument("--remat", default="none", help=f"a comma list of {REMAT_POLICIES}")
    parser.add_argument(
        "--attention_impl", default="", help="a comma list of '' (default), xla, cudnn"
    )
    parser.add_argument("--mesh", type=int, nargs=2, default=(-1, 1), help="data fsdp")
    parser.add_argument("--repeats", type=at_least(1), default=5, help="timed calls per mode")
    parser.add_argument(
        "--warmup", type=at_least(0), default=1, help="untimed calls after compiling"
    )
    parser.add_argument("--cfg_scale", type=float, default=4.0)
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    parser.add_argument("--sample_steps", type=at_least(1), default=250)
    parser.add_argument("--data_dir", default="", help="a latent dataset; default: synthetic")
    parser.add_argument("--data_records", type=at_least(1), default=4096, help="synthetic records")
    parser.add_argument("--data_batch_size", type=at_least(1), default=256, help="per host")
    parser.add_argument("--data_workers", default="0,2", help="comma list of worker counts")
    parser.add_argument("--data_batches", type=at_least(1), default=20, help="timed batches")
    parser.add_argument(
        "--peak_tflops",
        type=at_least(0, float),
        default=0.0,
        help="per device; 0: known or measured",
    )
    parser.add_argument(
        "--matmul_size", type=at_least(1), default=2048, help="CPU reference matmul"
    )
    parser.add_argument("--out_dir", default="", help="write results-<device>.json/.md here")
    parser.add_argument(
        "--profile_dir",
        default="",
        help="trace --profile_steps more calls of each model mode and variant here, and report "
        "kernel time per model operation",
    )
    parser.add_argument("--profile_steps", type=at_least(1), default=2)
    parser.add_argument(
        "--require_accelerator",
        action="store_true",
        help="refuse to run on a host whose JAX backend is the CPU, so that an accelerator "
        "sweep with --out_dir does not replace the CPU suite's results-cpu files",
    )
    return parser


def _specs(args: argparse.Namespace) -> list[BenchSpec]:
    """One BenchSpec per combination of the swept flags (model, batch size, remat, attention)."""
    models = parse_list(args.model, "--model")
    batch_sizes = parse_list(args.batch_size, "--batch_size", int)
    if min(batch_sizes) < 1:
        raise ValueError(f"--batch_size wants positive sizes, got {args.batch_size!r}")
    remats = parse_list(args.remat, "--remat", choices=REMAT_POLICIES)
    attentions = parse_list(args.attention_impl, "--attention_impl", choices=ATTENTION_IMPLS)
    for attention in attentions:
        try:
            check_attention_impl(attention)
        except ValueError as error:
            raise ValueError(f"--attention_impl: {error}") from None
    base = dict(parse_overrides(args.model_overrides))
    if args.scan_blocks:
        base["scan_blocks"] = True
    specs = []
    for model, batch_size, remat, attention in itertools.product(
        models, batch_sizes, remats, attentions
    ):
        overrides = dict(base)
        if remat != "none":
            overrides["remat_policy"] = remat
        if attention:
            overrides["attention_impl"] = attention
        specs.append(
            BenchSpec(
                model=model,
                latent_size=args.latent_size,
                batch_size=batch_size,
                dtype=args.dtype,
                model_overrides=tuple(overrides.items()),
                repeats=args.repeats,
                warmup=args.warmup,
                cfg_scale=args.cfg_scale,
                sampler=args.sampler,
                sample_steps=args.sample_steps,
                mesh=tuple(args.mesh),
                profile_dir=args.profile_dir,
                profile_steps=args.profile_steps,
            )
        )
    return specs


def inference_specs(specs: Sequence[BenchSpec]) -> list[BenchSpec]:
    """The variants that differ for a forward pass: the remat policy is dropped (it only
    changes a backward pass) and the duplicates it leaves removed, in order."""
    unique = {}
    for spec in specs:
        overrides = tuple((k, v) for k, v in spec.model_overrides if k != "remat_policy")
        variant = dataclasses.replace(spec, model_overrides=overrides)
        unique.setdefault(variant, variant)
    return list(unique)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether a JAX runtime error says the device ran out of memory."""
    text = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) and (
        "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()
    )


def _out_of_memory_result(mode: str, spec: BenchSpec, error: BaseException) -> dict[str, Any]:
    return {
        "mode": mode,
        "model": spec.model,
        "model_overrides": dict(spec.model_overrides),
        "dtype": spec.dtype,
        "batch_size": spec.batch_size,
        "error": "out of memory: " + str(error).splitlines()[0][:200],
    }


def best_results(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """For each model mode and model measured in more than one variant, 'train DiT-XL/2' say,
    the index of the result with the highest utilisation (the first of equals)."""
    measured = collections.defaultdict(list)
    for i, result in enumerate(results):
        if "utilisation" in result:
            measured[f"{result['mode']} {result['model']}"].append(i)
    return {
        key: max(indices, key=lambda i: results[i]["utilisation"])
        for key, indices in measured.items()
        if len(indices) > 1
    }


def best_lines(report: dict[str, Any]) -> list[str]:
    """'best train: DiT-XL/2, batch 256, remat full, 51.2%' for each entry of report['best']."""
    lines = []
    for index in report["best"].values():
        best = report["results"][index]
        lines.append(f"best {best['mode']}: {describe(best)}, {best['utilisation']:.1%}")
    return lines


class BenchPlan(NamedTuple):
    """What a run of the benchmark measures: modes in run order, model variants, and the
    loader's worker counts (empty without the data mode)."""

    modes: list[str]
    specs: list[BenchSpec]
    data_workers: list[int]


def plan_benchmarks(args: argparse.Namespace) -> BenchPlan:
    """Checks the flags the parser cannot check alone (--require_accelerator, the lists,
    models, mesh, batch sizes, --out_dir and, for the data mode, that --data_dir is a latent
    dataset) and returns the plan; a ValueError names the first bad flag before anything is
    compiled or timed."""
    modes = parse_modes(args.mode)
    if args.require_accelerator and jax.default_backend() == "cpu":
        raise ValueError(
            "--require_accelerator: this host's JAX backend is the CPU; `make bench` is the "
            "CPU suite"
        )
    for flag in ("out_dir", "profile_dir"):
        path = getattr(args, flag)
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"--{flag} {path!r} exists and is not a directory")
    specs = _specs(args)
    for spec in specs:
        spec.create_model()  # a bad model name or field
    devices = jax.device_count()
    try:
        resolve_mesh_shape(args.mesh, devices)
    except ValueError as error:
        raise ValueError(f"--mesh: {error}") from None
    uneven = sorted({s.batch_size for s in specs if s.batch_size % devices})
    if uneven:
        raise ValueError(f"--batch_size {uneven} must be a multiple of the {devices} devices")
    workers = []
    if "data" in modes:
        workers = parse_list(args.data_workers, "--data_workers", int)
        if min(workers) < 0:
            raise ValueError(f"--data_workers wants non-negative counts, got {args.data_workers!r}")
        if args.data_dir:
            from ditjax.data.latent_format import read_latent_info  # the data stack, for data only

            try:
                read_latent_info(args.data_dir)
            except FileNotFoundError as error:
                raise ValueError(f"--data_dir: {error}") from None
    return BenchPlan(modes, specs, workers)


def _data_results(
    args: argparse.Namespace, spec: BenchSpec, workers: Sequence[int]
) -> list[dict[str, Any]]:
    def run(dataset_dir: str) -> list[dict[str, Any]]:
        return [
            bench_data(
                dataset_dir,
                batch_size=args.data_batch_size,
                workers=w,
                batches=args.data_batches,
                warmup=max(args.warmup, 2 * w),
            )
            for w in workers
        ]

    if args.data_dir:
        return run(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="ditjax-bench-") as tmp:
        write_synthetic_latents(
            os.path.join(tmp, "latents"),
            num_examples=args.data_records,
            latent_size=spec.latent_size,
            channels=spec.create_model().in_channels,
        )
        return run(os.path.join(tmp, "latents"))


def run_benchmarks(args: argparse.Namespace, plan: BenchPlan) -> dict[str, Any]:
    """Runs the planned modes for every variant; the report holds the device, the reference
    peak, the results and the best variant of each mode and model."""
    modes, specs, workers = plan
    peak = reference_peak(args.peak_tflops, args.matmul_size)
    benches = {"train": bench_train, "forward": bench_forward, "sample": bench_sample}
    results = []
    for mode in modes:
        if mode == "data":
            results.extend(_data_results(args, specs[0], workers))
            print(format_table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
            continue
        for spec in specs if mode == "train" else inference_specs(specs):
            try:
                results.append(benches[mode](spec, peak))
            except jax.errors.JaxRuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                results.append(_out_of_memory_result(mode, spec, error))
            print(format_table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    return {
        "command": "python -m ditjax.bench " + " ".join(args.argv),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax_version": jax.__version__,
        "platform": jax.default_backend(),
        "device_kind": peak.device_kind,
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "reference_peak": {
            "tflops_per_s": peak.flops_per_s / 1e12,
            "source": peak.source,
            "sampled_during_modes": peak.probe is not None,
        },
        "results": results,
        "best": best_results(results),
    }


def _reference_words(peak: dict[str, Any]) -> str:
    """How the reference peak reads under the table."""
    if peak["sampled_during_modes"]:
        return (
            f"a {peak['source']} timed between the repeats of each mode (the ref TFLOP/s column; "
            f"{peak['tflops_per_s']:.3f} TFLOP/s at the start)"
        )
    return f"{peak['tflops_per_s']:.3f} TFLOP/s per device ({peak['source']})"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line: a bad flag exits with status 2 and a usage line naming it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        plan = plan_benchmarks(args)
    except ValueError as error:
        parser.error(str(error))
    report = run_benchmarks(args, plan)
    print(format_table(report["results"]))
    peak = report["reference_peak"]
    print(f"utilisation against {_reference_words(peak)}")
    for line in best_lines(report):
        print(line)
    profiles = [text for text in map(profile_markdown, report["results"]) if text]
    for text in profiles:
        print("\n" + text)
    if args.out_dir and jax.process_index() == 0:
        slug = device_slug(report["device_kind"], report["platform"])
        write_json(os.path.join(args.out_dir, f"results-{slug}.json"), report)
        lines = [
            f"`{report['command']}` on {report['device_kind']} ({report['devices']} device(s)); "
            f"utilisation against {_reference_words(peak)}.",
            "",
            markdown_table(report["results"]),
        ]
        if report["best"]:
            lines += ["", *(f"- {line}" for line in best_lines(report))]
        for text in profiles:
            lines += ["", text]
        write_text(os.path.join(args.out_dir, f"results-{slug}.md"), "\n".join(lines) + "\n")
    return report


if __name__ == "__main__":
    retain_freed_host_memory()
    main()
