"""Times each matrix product of one guided DiT forward pass on its own, at the shape and dtype
the model runs it, in the same rounds as the guided forward of `python -m ditjax.bench
--mode=forward`, and compares the two: the products' sum is the time that forward would take
if the work between them (LayerNorm and modulation, GELU, residual adds, slicing q, k and v out
of qkv) were free and each product ran as fast inside the program as alone.

    python benchmarks/forward_bound.py --model=DiT-S/2 --batch_size=8

The products of an adaLN-Zero DiT on M = 2 x batch x tokens rows (CFG doubles the batch):
patch embedding, timestep MLP, and per block the adaLN modulation, qkv, attention, proj, fc1
and fc2, then the final layer's modulation and linear. Dense ones are `x @ w + b` as the
model's Dense layers compute them; attention is the model's own `dot_product_attention` on
(N, T, H, d) inputs, so on CPU it includes the softmax between its two products and the
transposes to heads-first order. Their multiply-adds add up to `ditjax.models.forward_macs`,
and to those of every product and convolution in the compiled forward's trace.
Utilisation is against the same reference as the benchmark's: the device's published peak,
`--peak_tflops`, or on CPU a float32 `--matmul_size`^3 matmul timed after every round.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ditjax.bench import at_least
from ditjax.benchmark import BenchSpec, compile_guided_forward, guided_forwards, reference_peak
from ditjax.host_memory import retain_freed_host_memory
from ditjax.inference_compile import inference_compiler_options
from ditjax.models import DiT, forward_macs
from ditjax.models.attention import ATTENTION_IMPLS, check_attention_impl, dot_product_attention
from ditjax.models.dit import input_hw
from ditjax.models.embeddings import TIMESTEP_FREQUENCY_SIZE


@dataclasses.dataclass(frozen=True)
class Product:
    """One matrix product of the forward pass: `calls` per forward, each of `macs`
    multiply-adds. `build()` draws inputs of its shape, compiles the product for them and
    returns a call that computes it once and blocks."""

    name: str
    shape: str
    calls: int
    macs: int
    build: Callable[[], Callable[[], Any]]


_RANDOM = np.random.default_rng(0)


def _normal(shape: tuple[int, ...], dtype, scale: float = 1.0) -> jax.Array:
    return jnp.asarray(_RANDOM.standard_normal(shape, np.float32) * scale, dtype)


def _compiled_call(function: Callable[..., jax.Array], *inputs: jax.Array) -> Callable[[], Any]:
    """`function` jitted and compiled for `inputs` now, as a blocking call on them, so that no
    timed call compiles. It gets the guided forward's compiler options (on CPU, no YNNPACK),
    so that each product runs on the same kernels as in the forward."""
    jitted = jax.jit(function, compiler_options=inference_compiler_options())
    compiled = jitted.lower(*inputs).compile()
    return lambda: jax.block_until_ready(compiled(*inputs))


def _dense(name: str, rows: int, features_in: int, features_out: int, calls: int, dtype) -> Product:
    def build() -> Callable[[], Any]:
        x = _normal((rows, features_in), dtype)
        w = _normal((features_in, features_out), dtype, features_in**-0.5)
        b = _normal((features_out,), dtype)
        return _compiled_call(lambda x, w, b: x @ w + b, x, w, b)

    return Product(
        name,
        f"({rows}, {features_in}) x ({features_in}, {features_out})",
        calls,
        rows * features_in * features_out,
        build,
    )


def _attention(
    examples: int, tokens: int, heads: int, head_dim: int, calls: int, dtype, impl: str | None
) -> Product:
    def build() -> Callable[[], Any]:
        q, k, v = (_normal((examples, tokens, heads, head_dim), dtype) for _ in range(3))
        return _compiled_call(
            lambda q, k, v: dot_product_attention(q, k, v, implementation=impl), q, k, v
        )

    return Product(
        "attention",
        f"{examples} x {heads} heads x ({tokens}, {head_dim}) x ({head_dim}, {tokens}), twice",
        calls,
        2 * examples * tokens * tokens * heads * head_dim,
        build,
    )


def forward_products(model: DiT, examples: int) -> list[Product]:
    """The products of one forward pass of an adaLN-Zero `model` over `examples` images
    (the model's batch: 2 x images with CFG). Raises ValueError for another block type."""
    if model.block_type != "adaln_zero":
        raise ValueError(f"only adaLN-Zero blocks are listed, got block_type {model.block_type!r}")
    height, width = input_hw(model.input_size)
    p, d, dtype = model.patch_size, model.hidden_size, model.dtype
    tokens = (height // p) * (width // p)
    rows, hidden = examples * tokens, int(d * model.mlp_ratio)
    blocks = model.depth
    return [
        _dense("patch embedding", rows, p * p * model.in_channels, d, 1, dtype),
        _dense("timestep MLP, first", examples, TIMESTEP_FREQUENCY_SIZE, d, 1, dtype),
        _dense("timestep MLP, second", examples, d, d, 1, dtype),
        _dense("adaLN modulation", examples, d, 6 * d, blocks, dtype),
        _dense("qkv", rows, d, 3 * d, blocks, dtype),
        _attention(
            examples,
            tokens,
            model.num_heads,
            d // model.num_heads,
            blocks,
            dtype,
            model.attention_impl,
        ),
        _dense("proj", rows, d, d, blocks, dtype),
        _dense("fc1", rows, d, hidden, blocks, dtype),
        _dense("fc2", rows, hidden, d, blocks, dtype),
        _dense("final modulation", examples, d, 2 * d, 1, dtype),
        _dense("final linear", rows, d, p * p * model.out_channels, 1, dtype),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="DiT-S/2")
    parser.add_argument("--latent_size", type=at_least(1), default=32)
    parser.add_argument("--batch_size", type=at_least(1), default=8, help="images; CFG doubles it")
    parser.add_argument("--cfg_scale", type=at_least(1, float), default=4.0)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument(
        "--attention_impl", default="", choices=ATTENTION_IMPLS, help="as the benchmark's"
    )
    parser.add_argument("--repeats", type=at_least(1), default=15, help="rounds over every product")
    parser.add_argument("--warmup", type=at_least(0), default=2)
    parser.add_argument(
        "--matmul_size", type=at_least(1), default=2048, help="CPU reference matmul"
    )
    parser.add_argument(
        "--peak_tflops", type=at_least(0, float), default=0.0, help="override the peak"
    )
    return parser.parse_args(argv)


def time_calls(
    calls: list[Callable[[], Any]], repeats: int, warmup: int, reference: Callable[[], float]
) -> tuple[list[float], float]:
    """Median seconds of each blocking call over `repeats` rounds (every call once per round,
    after `warmup` untimed rounds), and the median of `reference()` (FLOP/s) sampled after
    each round."""
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    rates = []
    for _ in range(repeats):
        for call, samples in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        rates.append(reference())
    return [statistics.median(samples) for samples in times], statistics.median(rates)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    retain_freed_host_memory()
    overrides = (("attention_impl", args.attention_impl),) if args.attention_impl else ()
    spec = BenchSpec(
        model=args.model,
        latent_size=args.latent_size,
        batch_size=args.batch_size,
        dtype=args.dtype,
        model_overrides=overrides,
        cfg_scale=args.cfg_scale,
    )
    examples = args.batch_size * guided_forwards(args.cfg_scale)
    try:
        check_attention_impl(args.attention_impl)
        model = spec.create_model()
        products = forward_products(model, examples)
    except ValueError as error:
        sys.exit(f"forward_bound.py: error: {error}")
    macs = sum(product.calls * product.macs for product in products)
    if macs != forward_macs(model) * examples:
        raise AssertionError(
            f"the products do {macs} MACs, the model {forward_macs(model) * examples}"
        )
    flops = 2 * macs
    _, program, forward = compile_guided_forward(spec)
    if program.flops is not None and program.flops.total != flops:
        raise AssertionError(
            f"the products do {flops} FLOPs, the compiled forward {program.flops.total:.0f}"
        )
    calls = [product.build() for product in products] + [forward]
    peak = reference_peak(args.peak_tflops, args.matmul_size)
    seconds, reference_rate = time_calls(calls, args.repeats, args.warmup, peak.sample)
    forward_s = seconds.pop()
    products_s = sum(product.calls * s for product, s in zip(products, seconds, strict=True))

    print(
        f"{args.model}, {args.dtype}, guided forward of batch {args.batch_size} "
        f"({examples} examples) and each of its products alone, in the same rounds; reference "
        f"{peak.source} ({reference_rate / 1e12:.3f} TFLOP/s, {peak.device_kind})\n"
    )
    print("| product | shape | calls | ms per call | of the reference | ms per forward |")
    print("|---|---|---:|---:|---:|---:|")
    for product, s in zip(products, seconds, strict=True):
        share = 2 * product.macs / s / reference_rate
        print(
            f"| {product.name} | {product.shape} | {product.calls} | {1000 * s:.3f} | "
            f"{100 * share:.1f}% | {1000 * product.calls * s:.1f} |"
        )
    print(
        f"\nproducts alone: {1000 * products_s:.0f} ms, "
        f"{100 * flops / products_s / reference_rate:.1f}% of the reference\n"
        f"guided forward: {1000 * forward_s:.0f} ms, "
        f"{100 * flops / forward_s / reference_rate:.1f}% of the reference "
        f"({forward_s / products_s:.3f} x its products alone)"
    )
    return {
        "products": {product.name: s for product, s in zip(products, seconds, strict=True)},
        "products_s": products_s,
        "forward_s": forward_s,
        "reference_flops_per_s": reference_rate,
        "flops": flops,
    }


if __name__ == "__main__":
    main()
