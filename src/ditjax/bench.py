"""`python -m ditjax.bench`: throughput and utilisation of DiT training, sampling and data.

Modes: `train` (one jitted train step: forward, hybrid loss, backward, AdamW, EMA), `forward`
(a classifier-free-guided forward pass: the batch doubled), `sample` (the whole guided
sampling loop as one program), `data` (the latent input pipeline alone) and `suite` (all of
them; `make bench` runs the CPU suite). Each timing is the median of repeats after a warm-up
call, with `block_until_ready`. Utilisation compares the model FLOPs (from the analytic cost:
a train step is 3 forward passes) with the device's peak: a table of known accelerators, or
on a CPU the float32 matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ditjax.diffusion import create_diffusion
from ditjax.models import create_model, forward_macs
from ditjax.models.registry import DTYPES
from ditjax.parallel import create_mesh, make_global_batch
from ditjax.sampling import make_sample_fn
from ditjax.training.optimizer import learning_rate_schedule, make_optimizer
from ditjax.training.state import create_train_state
from ditjax.training.step import jit_train_step, make_train_step

# Dense bfloat16 peaks in TFLOP/s per chip, matched against `device_kind` (first match wins).
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0),
    ("TPU v5p", 459.0),
    ("TPU v5", 459.0),
    ("TPU v6 lite", 918.0),
    ("TPU v6e", 918.0),
)
MATMUL_SIDE = 2048


def known_peak_tflops(device_kind: str) -> float | None:
    """The table's peak for a `jax.Device.device_kind`, or None when it is not listed."""
    for name, peak in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of `repeats` further calls)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def measured_matmul_tflops(repeats: int = 5, dtype: Any = jnp.float32) -> float:
    """TFLOP/s of a jitted MATMUL_SIDE^3 matmul on the default device (median of repeats)."""
    a = jnp.ones((MATMUL_SIDE, MATMUL_SIDE), dtype)
    matmul = jax.jit(lambda a: a @ a)
    _, seconds = median_seconds(lambda: matmul(a), repeats)
    return 2 * MATMUL_SIDE**3 / seconds / 1e12


def peak_memory_bytes() -> int:
    """Peak bytes in use on the first device, or on a CPU the process's peak resident set."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _model(args, **overrides):
    return create_model(
        args.model,
        input_size=args.latent_size,
        dtype=DTYPES[args.dtype],
        attention_impl=args.attention_impl or None,
        **overrides,
    )


def _random_params(model) -> dict:
    x = np.zeros((1, model.input_size, model.input_size, model.in_channels), np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x, np.zeros(1), np.zeros(1, np.int32))
    return nn.unbox(variables["params"])


def _result(mode: str, args, *, images: int, seconds: float, first: float, flops: float):
    return {
        "mode": mode,
        "model": args.model,
        "dtype": args.dtype,
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "batch_size": args.batch_size,
        "first_call_s": round(first, 3),
        "step_s": round(seconds, 4),
        "images_per_s": round(images / seconds, 2),
        "model_tflops_per_s": round(flops / seconds / 1e12, 4),
        "model_flops_per_call": flops,
    }


def bench_train(args) -> dict:
    """One train step on a fixed synthetic batch of `batch_size` latents."""
    model = _model(args, scan_blocks=args.scan_blocks, remat_policy=args.remat)
    mesh = create_mesh(tuple(args.mesh))
    config = ml_collections.ConfigDict(
        {
            "learning_rate": 1e-4,
            "warmup_steps": 0,
            "adam_b1": 0.9,
            "adam_b2": 0.999,
            "adam_eps": 1e-8,
            "weight_decay": 0.0,
            "grad_clip_norm": 0.0,
        }
    )
    optimizer = make_optimizer(config)
    latent_shape = (args.latent_size, args.latent_size, model.in_channels)
    state, shardings = create_train_state(model, optimizer, 0, latent_shape, mesh)
    step = jit_train_step(
        make_train_step(
            model,
            create_diffusion(),
            optimizer,
            ema_decay=0.9999,
            latent_scale=0.18215,
            learning_rate_fn=learning_rate_schedule(config),
        ),
        shardings,
        mesh,
    )
    local = args.batch_size // jax.process_count()
    rng = np.random.default_rng(0)
    batch = make_global_batch(
        {
            "mean": rng.normal(size=(local, *latent_shape)).astype(np.float32),
            "logvar": np.full((local, *latent_shape), -4.0, np.float32),
            "label": rng.integers(0, model.num_classes, size=(local,)).astype(np.int32),
        },
        mesh,
    )
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], batch)
        return metrics

    first, seconds = median_seconds(run, args.repeats)
    flops = 3 * 2 * forward_macs(model) * args.batch_size
    return _result("train", args, images=args.batch_size, seconds=seconds, first=first, flops=flops)


def bench_forward(args) -> dict:
    """A guided forward pass: `batch_size` images, run as one batch of 2 x batch_size."""
    model = _model(args, scan_blocks=args.scan_blocks)
    params = _random_params(model)
    n = 2 * args.batch_size
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, args.latent_size, args.latent_size, model.in_channels))
    x = jnp.asarray(x, jnp.float32)
    t = jnp.asarray(rng.integers(0, 1000, size=(n,)), jnp.int32)
    y = jnp.asarray(np.arange(n) % (model.num_classes + 1), jnp.int32)
    forward = jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, y))
    first, seconds = median_seconds(lambda: forward(params, x, t, y), args.repeats)
    flops = 2 * forward_macs(model) * n
    return _result(
        "forward", args, images=args.batch_size, seconds=seconds, first=first, flops=flops
    )


def bench_sample(args) -> dict:
    """The whole guided sampling loop (`sample_steps` steps, scale 4) as one jitted program."""
    model = _model(args, scan_blocks=args.scan_blocks)
    params = _random_params(model)
    latent_shape = (args.latent_size, args.latent_size, model.in_channels)
    sample = jax.jit(
        make_sample_fn(
            model,
            latent_shape=latent_shape,
            sampler=args.sampler,
            steps=args.sample_steps,
            cfg_scale=4.0,
        )
    )
    labels = jnp.asarray(np.arange(args.batch_size) % model.num_classes, jnp.int32)
    first, seconds = median_seconds(
        lambda: sample(params, labels, jax.random.key(0)), max(1, args.repeats // 2)
    )
    flops = args.sample_steps * 2 * forward_macs(model) * 2 * args.batch_size
    result = _result(
        "sample", args, images=args.batch_size, seconds=seconds, first=first, flops=flops
    )
    result.update(sampler=args.sampler, sample_steps=args.sample_steps)
    return result


class _PooledAutoencoder:
    """A stand-in for the SD VAE's shapes (8x down, 4 channels) at almost no cost."""

    name = "bench-pooled"
    latent_channels = 4
    downsample = 8
    scale = 1.0

    def encode(self, images: jax.Array) -> jax.Array:
        n, h, w, _ = images.shape
        pooled = images.reshape(n, h // 8, 8, w // 8, 8, 3).mean(axis=(2, 4))
        mean = jnp.concatenate([pooled, pooled.mean(-1, keepdims=True)], axis=-1)
        return jnp.concatenate([mean, jnp.full_like(mean, -4.0)], axis=-1)

    def decode(self, latents: jax.Array) -> jax.Array:
        raise NotImplementedError


class _RandomImages:
    """`count` random RGB images of one size in 10 classes, as an image source."""

    def __init__(self, count: int, size: int):
        self.count, self.size = count, size
        self.class_names = [str(i) for i in range(10)]

    @property
    def num_examples(self) -> int:
        return self.count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator:
        return self.iter_range(0, self.count)

    def iter_range(self, start: int, stop: int) -> Iterator:
        from PIL import Image

        from ditjax.data.sources import SourceExample

        for i in range(start, stop):
            pixels = np.random.default_rng(i).integers(0, 256, (self.size, self.size, 3))
            image = Image.fromarray(pixels.astype(np.uint8))
            yield SourceExample(f"random/{i}", image, i % 10, None)


def write_bench_latents(directory: str, count: int, image_size: int) -> str:
    """A latent dataset of `count` examples shaped like SD-VAE latents of `image_size` images."""
    from ditjax.data.extract import extract_latents

    extract_latents(
        _RandomImages(count, image_size),
        _PooledAutoencoder(),
        image_size,
        directory,
        batch_size=256,
        progress=False,
    )
    return directory


def bench_data(args) -> dict:
    """The training input pipeline alone: batches of `batch_size` per second, per host."""
    from ditjax.data import make_train_iterator

    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.data_dir or write_bench_latents(
            os.path.join(tmp, "latents"), args.data_records, 8 * args.latent_size
        )
        iterator = make_train_iterator(
            dataset, global_batch_size=args.batch_size, seed=0, worker_count=args.data_workers
        )
        for _ in range(3):
            next(iterator)
        start = time.perf_counter()
        for _ in range(args.data_batches):
            next(iterator)
        seconds = (time.perf_counter() - start) / args.data_batches
    return {
        "mode": "data",
        "batch_size": args.batch_size,
        "latent_shape": [args.latent_size, args.latent_size, 4],
        "data_workers": args.data_workers,
        "step_s": round(seconds, 5),
        "images_per_s": round(args.batch_size / seconds, 1),
    }


MODES: dict[str, Callable[[Any], dict]] = {
    "train": bench_train,
    "forward": bench_forward,
    "sample": bench_sample,
    "data": bench_data,
}


def add_utilisation(result: dict, peak_tflops: float, peak_source: str) -> dict:
    """Adds the peak used and model FLOP utilisation to a train/forward/sample result."""
    if "model_tflops_per_s" in result:
        result["peak_tflops_per_device"] = round(peak_tflops, 4)
        result["peak_source"] = peak_source
        total = peak_tflops * result["devices"]
        result["utilisation"] = round(result["model_tflops_per_s"] / total, 4)
    return result


def resolve_peak(override: float) -> tuple[float, str]:
    """(peak TFLOP/s per device, where it came from)."""
    if override:
        return override, "--peak_tflops"
    device = jax.devices()[0]
    known = known_peak_tflops(device.device_kind)
    if known is not None and device.platform != "cpu":
        return known, f"table: {device.device_kind}"
    return measured_matmul_tflops(), f"measured float32 {MATMUL_SIDE}^3 matmul"


def markdown_table(results: list[dict]) -> str:
    """A README-ready table of results."""
    lines = [
        "| mode | model | batch | step (s) | images/s | model TFLOP/s | utilisation |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        util = f"{100 * r['utilisation']:.0f}%" if "utilisation" in r else "-"
        tflops = f"{r['model_tflops_per_s']:.3f}" if "model_tflops_per_s" in r else "-"
        name = r.get("model", f"workers={r.get('data_workers')}")
        mode = r["mode"] + (f" ({r['sample_steps']} steps)" if r["mode"] == "sample" else "")
        lines.append(
            f"| {mode} | {name} | {r['batch_size']} | {r['step_s']} | {r['images_per_s']} | "
            f"{tflops} | {util} |"
        )
    return "\n".join(lines)


def run_suite(args) -> list[dict]:
    """The CPU suite: train, guided forward, a guided sampling loop, data with 0 and 2 workers."""
    peak, source = resolve_peak(args.peak_tflops)
    results = []
    for mode in ("train", "forward", "sample"):
        results.append(add_utilisation(MODES[mode](args), peak, source))
        print(json.dumps(results[-1]), flush=True)
    for workers in (0, 2):
        data_args = argparse.Namespace(**{**vars(args), "data_workers": workers, "batch_size": 256})
        results.append(bench_data(data_args))
        print(json.dumps(results[-1]), flush=True)
    # The matmul rate again at the end: a shared machine's speed drifts.
    if source.startswith("measured"):
        after = measured_matmul_tflops()
        for r in results:
            if "utilisation" in r:
                r["peak_tflops_after"] = round(after, 4)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ditjax.bench", description=__doc__)
    parser.add_argument("--mode", choices=[*MODES, "suite"], default="train")
    parser.add_argument("--model", default="DiT-S/2")
    parser.add_argument("--latent_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after a warm-up")
    parser.add_argument("--sample_steps", type=int, default=25)
    parser.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--scan_blocks", action="store_true")
    parser.add_argument("--remat", default="none")
    parser.add_argument("--attention_impl", default="", choices=["", "xla", "cudnn"])
    parser.add_argument("--mesh", type=int, nargs=2, default=(-1, 1), help="data fsdp")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="per device (override)")
    parser.add_argument("--data_dir", default="", help="latent dataset for --mode=data")
    parser.add_argument("--data_workers", type=int, default=0)
    parser.add_argument("--data_records", type=int, default=2048)
    parser.add_argument("--data_batches", type=int, default=20)
    parser.add_argument("--out", default="", help="write the results as JSON here")
    parser.add_argument("--markdown", default="", help="write a markdown table here")
    args = parser.parse_args(argv)

    if args.mode == "suite":
        results = run_suite(args)
    else:
        result = MODES[args.mode](args)
        if args.mode != "data":
            result = add_utilisation(result, *resolve_peak(args.peak_tflops))
        results = [result]
        print(json.dumps(result), flush=True)
    for r in results:
        if r["mode"] != "data":
            r["peak_memory_bytes"] = peak_memory_bytes()
    table = markdown_table(results)
    print(table)
    if args.out:
        path = pathlib.Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(sys.argv[1:] if argv is None else argv)
        payload = {"command": f"python -m ditjax.bench {command}", "results": results}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(path)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
