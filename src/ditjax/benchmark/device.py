"""What a device can do at best: published dense peaks, or a matmul measured on the spot
(CPU), and the peak memory a run used."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time

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


def measure_matmul_flops(size: int = 2048, repeats: int = 10, warmup: int = 3) -> float:
    """FLOP/s of a jitted float32 (size, size) @ (size, size) matmul on the default device,
    the median of `repeats` timed calls after `warmup` untimed ones.

    On a CPU the first calls after other work run well below the steady rate (cold caches,
    threads waking up), so a few warm-up calls keep them out of the median.
    """
    if size < 1 or repeats < 1 or warmup < 1:
        raise ValueError(
            f"size, repeats and warmup must be positive, got {size}, {repeats}, {warmup}"
        )
    keys = jax.random.split(jax.random.key(0))
    a = jax.random.normal(keys[0], (size, size), jnp.float32)
    b = jax.random.normal(keys[1], (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    for _ in range(warmup):
        jax.block_until_ready(matmul(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times)


@dataclasses.dataclass(frozen=True)
class ReferencePeak:
    """The FLOP/s that utilisation is reported against, per device, and where it came from:
    'override' (--peak_tflops), 'published' (the table) or 'measured float32 matmul' (CPU).
    `measured` holds every matmul rate measured so far; the reference is the highest."""

    flops_per_s: float
    source: str
    device_kind: str
    measured: tuple[float, ...] = ()

    def remeasured(self, matmul_size: int = 2048) -> ReferencePeak:
        """A measured reference measured once more, keeping the highest rate seen (the
        machine demonstrably reaches it); an override or a published peak unchanged."""
        if not self.measured:
            return self
        rates = (*self.measured, measure_matmul_flops(matmul_size))
        return dataclasses.replace(self, flops_per_s=max(rates), measured=rates)


def reference_peak(peak_tflops: float = 0.0, matmul_size: int = 2048) -> ReferencePeak:
    """The override if given, else the published peak of this device, else (CPU or an unknown
    device) the float32 matmul rate measured now."""
    kind = jax.devices()[0].device_kind
    if peak_tflops < 0:
        raise ValueError(f"peak_tflops must be >= 0, got {peak_tflops}")
    if peak_tflops:
        return ReferencePeak(peak_tflops * 1e12, "override", kind)
    known = known_peak_tflops(kind) if jax.default_backend() != "cpu" else None
    if known is not None:
        return ReferencePeak(known * 1e12, "published", kind)
    rate = measure_matmul_flops(matmul_size)
    return ReferencePeak(rate, f"measured float32 matmul {matmul_size}^3", kind, (rate,))


def peak_memory_bytes() -> tuple[int, str]:
    """(bytes, what they are): the default device's peak allocation where the backend reports
    it, else this process's maximum resident set size so far (CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return int(rss * scale), "process max RSS"
