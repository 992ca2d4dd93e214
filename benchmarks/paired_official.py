"""Times ditjax and the official PyTorch DiT in alternating single calls, and reports their
speed ratio pair by pair.

    .venv/bin/python benchmarks/paired_official.py --dit_dir=path/to/DiT \\
        --official_python=path/to/torch-env/bin/python --pairs=20

A second process (`official_dit.py --serve` under `--official_python`, which needs torch and
timm) builds the official train step and guided forward and runs one call per request; this
process compiles ditjax's, as `python -m ditjax.bench --mode=train,forward` does; both run
on the CPU, and another JAX backend is refused. Each pair is one call of each side, the
order swapped from one pair to the next and `--gap_s` between calls, so that neither side's
idle threads still spin during the other's call. On a shared machine the load moves by tens
of percent within a minute: separate benchmark runs of the two see different moments, while
the two calls of a pair, seconds apart, mostly see the same one. The median of the per-pair
ratios is the comparison. After each pair a float32 2048^3 matmul is timed in this process,
the reference ditjax's utilisation is given against, as in the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import official_dit

MODES = ("train", "forward")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dit_dir", required=True, help="a checkout of facebookresearch/DiT")
    parser.add_argument(
        "--official_python",
        required=True,
        help="a Python with torch and timm, for the official DiT",
    )
    parser.add_argument("--mode", default=",".join(MODES), help=f"a comma list of {MODES}")
    parser.add_argument("--model", default="DiT-S/2", help="a DiT name both sides know")
    parser.add_argument("--latent_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--cfg_scale", type=float, default=4.0)
    parser.add_argument("--pairs", type=int, default=20, help="timed pairs per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per side and mode")
    parser.add_argument("--gap_s", type=float, default=0.5, help="seconds between calls")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: its default")
    parser.add_argument("--out", default="", help="write the results here as JSON")
    args = parser.parse_args(argv)
    args.modes = tuple(dict.fromkeys(name for name in args.mode.split(",") if name))
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown or not args.modes:
        parser.error(f"--mode must be a comma list of {MODES}, got {args.mode!r}")
    for name in ("latent_size", "batch_size", "pairs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.threads < 0 or args.gap_s < 0:
        parser.error(
            f"--warmup, --threads and --gap_s must be >= 0, got "
            f"{args.warmup}, {args.threads}, {args.gap_s}"
        )
    if args.cfg_scale < 1.0:
        parser.error(f"--cfg_scale must be >= 1, got {args.cfg_scale}")
    problem = official_dit.checkout_problem(args.dit_dir)
    if problem:
        parser.error(problem)
    if not (os.path.isfile(args.official_python) and os.access(args.official_python, os.X_OK)):
        parser.error(f"--official_python {args.official_python!r} is not an executable file")
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        parser.error(f"--out {args.out!r}: no such folder")
    return args


class OfficialProcess:
    """The official DiT in a process of its own, running one call per `run(name)`: its
    seconds, as that process timed them."""

    def __init__(self, args: argparse.Namespace):
        command = [
            args.official_python,
            official_dit.__file__,
            "--serve",
            f"--dit_dir={args.dit_dir}",
            f"--model={args.model}",
            f"--latent_size={args.latent_size}",
            f"--batch_size={args.batch_size}",
            f"--cfg_scale={args.cfg_scale}",
            f"--threads={args.threads}",
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        while (line := self._answer()) != official_dit.READY:
            print(f"official: {line}")

    def _answer(self) -> str:
        line = self._process.stdout.readline()
        if not line:
            status = self._process.wait()
            raise RuntimeError(
                f"the official DiT process ({self._process.args[0]}) exited with status "
                f"{status}; its errors are above"
            )
        return line.strip()

    def run(self, name: str) -> float:
        with contextlib.suppress(BrokenPipeError):  # it has exited: the next read says so
            self._process.stdin.write(name + "\n")
        while True:
            answer = self._answer()
            if answer.startswith("error"):
                raise RuntimeError(f"the official DiT process: {answer}")
            try:
                return float(answer)
            except ValueError:
                print(f"official: {answer}")  # something else it printed

    def close(self) -> None:
        """Asks the process to stop after its current call; kills it if it has not within a
        minute."""
        if self._process.poll() is not None:
            return
        try:
            self._process.stdin.write(official_dit.QUIT + "\n")
            self._process.stdin.close()
            self._process.wait(timeout=60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait()


@dataclasses.dataclass(frozen=True)
class Pairs:
    """One mode's timed pairs: each side's seconds, which side ran first, and the reference
    FLOP/s measured after each pair."""

    official_s: list[float]
    ditjax_s: list[float]
    official_first: list[bool]
    reference_flops_per_s: list[float]


def time_pairs(
    official: Callable[[], float],
    ditjax: Callable[[], float],
    reference: Callable[[], float],
    pairs: int,
    gap_s: float,
) -> Pairs:
    """`pairs` pairs of one call of each side (each call returns its own seconds), the
    official one first in even pairs, `gap_s` seconds before each call."""
    result = Pairs([], [], [], [])
    sides = [(official, result.official_s), (ditjax, result.ditjax_s)]
    for index in range(pairs):
        official_first = index % 2 == 0
        for call, seconds in sides if official_first else sides[::-1]:
            time.sleep(gap_s)
            seconds.append(call())
        result.official_first.append(official_first)
        result.reference_flops_per_s.append(reference())
    return result


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(lower quartile, median, upper quartile) of `values`."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    lower, middle, upper = statistics.quantiles(values, n=4, method="inclusive")
    return lower, middle, upper


def summarise(pairs: Pairs, flops_per_call: float, target: float = 1.05) -> dict[str, Any]:
    """The per-pair speed ratios (official seconds / ditjax seconds: above 1, ditjax is
    faster), their quartiles and how many reach `target`, each side's median, and ditjax's
    utilisation per pair against the reference measured after it."""
    ratios = [o / d for o, d in zip(pairs.official_s, pairs.ditjax_s, strict=True)]
    utilisation = [
        flops_per_call / d / r
        for d, r in zip(pairs.ditjax_s, pairs.reference_flops_per_s, strict=True)
    ]
    return {
        "pairs": len(ratios),
        "official_ms_median": 1000 * statistics.median(pairs.official_s),
        "ditjax_ms_median": 1000 * statistics.median(pairs.ditjax_s),
        "ratio_quartiles": quartiles(ratios),
        "target": target,
        "pairs_at_target": sum(ratio >= target for ratio in ratios),
        "ditjax_utilisation_quartiles": quartiles(utilisation),
        "reference_gflops_range": (
            min(pairs.reference_flops_per_s) / 1e9,
            max(pairs.reference_flops_per_s) / 1e9,
        ),
        "ratios": ratios,
        **{field.name: getattr(pairs, field.name) for field in dataclasses.fields(pairs)},
    }


def describe(mode: str, summary: dict[str, Any]) -> str:
    low, mid, high = summary["ratio_quartiles"]
    u_low, u_mid, u_high = summary["ditjax_utilisation_quartiles"]
    r_low, r_high = summary["reference_gflops_range"]
    return (
        f"{mode}: {summary['pairs']} pairs, official median {summary['official_ms_median']:.0f}"
        f" ms, ditjax median {summary['ditjax_ms_median']:.0f} ms\n"
        f"  official / ditjax per pair: median {mid:.3f}x (quartiles {low:.3f}-{high:.3f}x), "
        f">= {summary['target']:.2f}x in {summary['pairs_at_target']} of {summary['pairs']}\n"
        f"  ditjax utilisation per pair: median {100 * u_mid:.1f}% (quartiles "
        f"{100 * u_low:.1f}-{100 * u_high:.1f}%), matmul {r_low:.0f}-{r_high:.0f} GFLOP/s"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from ditjax.host_memory import retain_freed_host_memory

    retain_freed_host_memory()
    import jax

    from ditjax.atomic_files import write_json
    from ditjax.benchmark import (
        TRAIN_FORWARDS,
        BenchSpec,
        MatmulProbe,
        compile_guided_forward,
        compile_train_step,
        guided_forwards,
        model_flops,
    )

    spec = BenchSpec(
        model=args.model,
        latent_size=args.latent_size,
        batch_size=args.batch_size,
        cfg_scale=args.cfg_scale,
    )
    try:
        spec.create_model()
    except ValueError as error:
        sys.exit(f"paired_official.py: error: --model: {error}")
    if jax.default_backend() != "cpu":
        sys.exit(
            "paired_official.py: error: the official DiT runs on the CPU, and this process's JAX "
            f"backend is {jax.default_backend()}: run it with JAX_PLATFORMS=cpu"
        )
    official = OfficialProcess(args)
    try:
        compilers = {"train": compile_train_step, "forward": compile_guided_forward}
        forwards = {"train": TRAIN_FORWARDS, "forward": guided_forwards(args.cfg_scale)}
        probe = MatmulProbe()
        results: dict[str, Any] = {
            "model": args.model,
            "batch_size": args.batch_size,
            "latent_size": args.latent_size,
            "backend": jax.default_backend(),
            "jax": jax.__version__,
            "gap_s": args.gap_s,
        }
        for mode in args.modes:
            model, _, call = compilers[mode](spec)
            for _ in range(args.warmup):
                call()
                official.run(mode)

            def timed(call: Callable[[], Any] = call) -> float:
                start = time.perf_counter()
                call()
                return time.perf_counter() - start

            pairs = time_pairs(
                lambda mode=mode: official.run(mode),
                timed,
                probe.flops_per_s,
                args.pairs,
                args.gap_s,
            )
            flops = model_flops(model, args.batch_size, forwards[mode])
            results[mode] = summarise(pairs, flops)
            print(describe(mode, results[mode]), flush=True)
    finally:
        official.close()
    if args.out:
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
