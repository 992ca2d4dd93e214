"""`python -m ditjax.bench`: training and sampling throughput of a DiT on the local devices.

Prints images/s, step time and model FLOP utilisation (from the analytic forward cost:
a training step costs about 3 forward passes) for synthetic data, after compilation.
"""

from __future__ import annotations

import argparse
import json
import time

import flax.linen as nn
import jax
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


def _optimizer_config(learning_rate: float = 1e-4) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "learning_rate": learning_rate,
            "warmup_steps": 0,
            "adam_b1": 0.9,
            "adam_b2": 0.999,
            "adam_eps": 1e-8,
            "weight_decay": 0.0,
            "grad_clip_norm": 0.0,
        }
    )


def bench_train(args) -> dict:
    """Times `args.steps` train steps on a fixed synthetic batch."""
    model = create_model(
        args.model,
        input_size=args.latent_size,
        dtype=DTYPES[args.dtype],
        scan_blocks=args.scan_blocks,
        remat_policy=args.remat,
        attention_impl=args.attention_impl or None,
    )
    mesh = create_mesh(tuple(args.mesh))
    config = _optimizer_config()
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
            "label": rng.integers(0, 1000, size=(local,)).astype(np.int32),
        },
        mesh,
    )
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / args.steps
    flops_per_step = 3 * 2 * forward_macs(model) * args.batch_size
    achieved = flops_per_step / seconds
    result = {
        "mode": "train",
        "model": args.model,
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "first_step_s": round(compile_s, 2),
        "step_s": round(seconds, 4),
        "images_per_s": round(args.batch_size / seconds, 1),
        "tflops_per_s": round(achieved / 1e12, 2),
        "loss": float(metrics["loss"]),
    }
    if args.peak_tflops:
        result["mfu"] = round(achieved / (args.peak_tflops * 1e12 * jax.device_count()), 4)
    return result


def bench_sample(args) -> dict:
    """Times one jitted sampling loop of `args.sample_steps` DDIM steps (no guidance)."""
    model = create_model(args.model, input_size=args.latent_size, dtype=DTYPES[args.dtype])
    latent_shape = (args.latent_size, args.latent_size, model.in_channels)
    x = np.zeros((1, *latent_shape), np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x, np.zeros(1), np.zeros(1, np.int32))
    params = nn.unbox(variables["params"])
    sample = jax.jit(
        make_sample_fn(model, latent_shape=latent_shape, sampler="ddim", steps=args.sample_steps)
    )
    labels = np.arange(args.batch_size, dtype=np.int32) % 1000
    start = time.perf_counter()
    jax.block_until_ready(sample(params, labels, jax.random.key(0)))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(sample(params, labels, jax.random.key(1)))
    seconds = time.perf_counter() - start
    return {
        "mode": "sample",
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.sample_steps,
        "first_call_s": round(compile_s, 2),
        "loop_s": round(seconds, 3),
        "images_per_s": round(args.batch_size / seconds, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ditjax.bench", description=__doc__)
    parser.add_argument("--mode", choices=["train", "sample"], default="train")
    parser.add_argument("--model", default="DiT-S/2")
    parser.add_argument("--latent_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed train steps")
    parser.add_argument("--sample_steps", type=int, default=10)
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--scan_blocks", action="store_true")
    parser.add_argument("--remat", default="none")
    parser.add_argument("--attention_impl", default="", choices=["", "xla", "cudnn"])
    parser.add_argument("--mesh", type=int, nargs=2, default=(-1, 1), help="data fsdp")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="per device, for MFU")
    args = parser.parse_args(argv)
    result = bench_train(args) if args.mode == "train" else bench_sample(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
