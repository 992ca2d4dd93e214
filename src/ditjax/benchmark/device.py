"""What a device can do at best: published dense peaks, or a matmul measured on the spot
(CPU), and the peak memory a run used."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp

# Dense bfloat16 peak TFLOP/s per device, matched (in this order) against the lower-cased
# `device_kind`; the first matching fragment wins.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("h100", 989.0),  # SXM
    ("h200", 989.0),
    ("a100", 312.0),
    ("v5 lite", 197.0),  # TPU v5e
    ("v5e", 197.0),
    ("v5p", 459.0),
    ("tpu v5", 459.0),
    ("v6 lite", 918.0),  # TPU v6e (Trillium)
    ("v6e", 918.0),
    ("tpu v4", 275.0),
)


def known_peak_tflops(device_kind: str) -> float | None:
    """The published peak of `device_kind` ('NVIDIA H100 80GB HBM3', 'TPU v4', ...), or None."""
    kind = device_kind.lower()
    for fragment, tflops in PEAK_TFLOPS:
        if fragment in kind:
            return tflops
    return None


class MatmulProbe:
    """A jitted float32 (size, size) @ (size, size) matmul on the default device, timed in
    short bursts: the reference a CPU's utilisation is measured against, sampled between the
    timed calls of each mode so that both see the same state of a shared machine."""

    def __init__(self, size: int = 2048):
        if size < 1:
            raise ValueError(f"matmul size must be positive, got {size}")
        keys = jax.random.split(jax.random.key(0))
        self.size = size
        self._a = jax.random.normal(keys[0], (size, size), jnp.float32)
        self._b = jax.random.normal(keys[1], (size, size), jnp.float32)
        self._matmul = jax.jit(jnp.matmul).lower(self._a, self._b).compile()

    def flops_per_s(self, calls: int = 4, warmup: int = 1) -> float:
        """FLOP/s of the median of `calls` timed calls after `warmup` untimed ones (on a CPU
        the first call after other work runs well below the steady rate)."""
        if calls < 1 or warmup < 0:
            raise ValueError(f"calls must be positive and warmup >= 0, got {calls}, {warmup}")
        for _ in range(warmup):
            jax.block_until_ready(self._matmul(self._a, self._b))
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            jax.block_until_ready(self._matmul(self._a, self._b))
            times.append(time.perf_counter() - start)
        return 2.0 * self.size**3 / statistics.median(times)


@dataclasses.dataclass(frozen=True)
class ReferencePeak:
    """The FLOP/s that utilisation is reported against, per device, and where it came from:
    'override' (--peak_tflops), 'published' (the table) or 'measured float32 matmul' (CPU).
    A measured reference carries its `probe`, which each mode samples between its timed
    calls; `flops_per_s` is then the rate measured at the start."""

    flops_per_s: float
    source: str
    device_kind: str
    probe: MatmulProbe | None = dataclasses.field(default=None, compare=False, repr=False)

    def sample(self) -> float:
        """The reference FLOP/s now: the probe measured again, or the fixed peak."""
        return self.probe.flops_per_s() if self.probe is not None else self.flops_per_s


def reference_peak(peak_tflops: float = 0.0, matmul_size: int = 2048) -> ReferencePeak:
    """The override if given, else the published peak of this device, else (CPU or an unknown
    device) a float32 matmul, measured now and again during each mode."""
    kind = jax.devices()[0].device_kind
    if peak_tflops < 0:
        raise ValueError(f"peak_tflops must be >= 0, got {peak_tflops}")
    if peak_tflops:
        return ReferencePeak(peak_tflops * 1e12, "override", kind)
    known = known_peak_tflops(kind) if jax.default_backend() != "cpu" else None
    if known is not None:
        return ReferencePeak(known * 1e12, "published", kind)
    probe = MatmulProbe(matmul_size)
    return ReferencePeak(
        probe.flops_per_s(calls=10, warmup=3),
        f"measured float32 matmul {matmul_size}^3",
        kind,
        probe,
    )


def program_memory_bytes(compiled: Any) -> int | None:
    """Device memory one compiled program needs, per device, from XLA's buffer assignment:
    its arguments, outputs and temporaries, less the outputs that reuse argument buffers.
    Unlike the peak, it belongs to this program alone, so the variants of a sweep compare.
    None where the backend gives no analysis."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, jax.errors.JaxRuntimeError):
        return None
    if stats is None:
        return None
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def peak_memory_bytes() -> tuple[int, str]:
    """(bytes, what they are): the default device's peak allocation where the backend reports
    it, else this process's maximum resident set size so far (CPU); either is the highest so
    far in the process, over every program it ran."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return int(rss * scale), "process max RSS"
