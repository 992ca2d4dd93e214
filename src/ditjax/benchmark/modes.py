"""The benchmark modes: a train step, a guided forward, a guided sampling loop and the latent
input pipeline, each timed after compilation and reported per device.

Model FLOPs come from the analytic forward cost (`forward_macs`, 2 FLOPs per multiply-add):
a train step costs about 3 forwards per image, a guided forward 2 (CFG doubles the batch),
a sampling loop `steps` guided forwards.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ditjax.benchmark.device import ReferencePeak, peak_memory_bytes, program_memory_bytes
from ditjax.benchmark.profiling import profile_calls
from ditjax.benchmark.program_flops import ProgramFlops, program_flops
from ditjax.diffusion import create_diffusion, guided_model_fn
from ditjax.inference_compile import inference_compiler_options
from ditjax.models import DiT, create_model, forward_macs
from ditjax.parallel import create_mesh, make_global_batch
from ditjax.sampling import make_sample_fn
from ditjax.training.optimizer import clipped_adamw
from ditjax.training.state import create_train_state
from ditjax.training.step import jit_train_step, make_train_step

TRAIN_FORWARDS = 3  # forward + backward ~ 3 forward passes


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """What to measure: the model and its input, and how often to repeat each timing."""

    model: str = "DiT-S/2"
    latent_size: int = 32
    batch_size: int = 8
    dtype: str = "float32"
    model_overrides: tuple[tuple[str, Any], ...] = ()
    repeats: int = 5
    warmup: int = 1
    cfg_scale: float = 4.0
    sampler: str = "ddpm"
    sample_steps: int = 250
    mesh: tuple[int, int] = (-1, 1)
    # Where to write a profiler trace of `profile_steps` calls made after the timed ones
    # ("": none); the result then carries kernel time per model operation.
    profile_dir: str = ""
    profile_steps: int = 2

    def __post_init__(self):
        if self.batch_size < 1 or self.repeats < 1 or self.warmup < 0 or self.latent_size < 1:
            raise ValueError(
                "batch_size, repeats and latent_size must be positive and warmup >= 0, got "
                f"{self.batch_size}, {self.repeats}, {self.latent_size}, {self.warmup}"
            )
        if self.profile_steps < 1:
            raise ValueError(f"profile_steps must be positive, got {self.profile_steps}")
        if self.cfg_scale < 1.0:
            raise ValueError(f"cfg_scale must be >= 1, got {self.cfg_scale}")

    def create_model(self) -> DiT:
        return create_model(
            self.model,
            input_size=self.latent_size,
            dtype=self.dtype,
            **dict(self.model_overrides),
        )


@dataclasses.dataclass(frozen=True)
class _Timing:
    """Seconds of each timed call of a mode, and the per-device FLOP/s its utilisation is
    against: the median of the reference matmul sampled between the calls, or the peak."""

    step_times: list[float]
    reference_flops_per_s: float


def _time_repeats(call: Callable[[], Any], spec: BenchSpec, peak: ReferencePeak) -> _Timing:
    """`spec.repeats` timed calls after `spec.warmup` untimed ones (`call` must block); with
    a measured peak, its probe is sampled after each timed call."""
    for _ in range(spec.warmup):
        call()
    times, reference_rates = [], []
    for _ in range(spec.repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        reference_rates.append(peak.sample())
    return _Timing(times, statistics.median(reference_rates))


def _profile(
    mode: str, spec: BenchSpec, call: Callable[[], Any], compiled: Any, timing: _Timing
) -> dict[str, Any]:
    """{"profile": kernel time per model operation} when `spec.profile_dir` is set, else {};
    each variant's trace goes to its own folder there, named after the mode and variant (and
    the process, where there are several)."""
    if not spec.profile_dir:
        return {}
    variant = "-".join(
        [mode, spec.model, f"b{spec.batch_size}", spec.dtype]
        + [f"{key}-{value}" for key, value in spec.model_overrides]
    )
    if jax.process_count() > 1:
        variant += f"-process{jax.process_index()}"
    folder = re.sub(r"[^A-Za-z0-9.=_-]+", "-", variant).strip("-")
    summary = profile_calls(
        call,
        compiled,
        os.path.join(spec.profile_dir, folder),
        steps=spec.profile_steps,
        step_s=statistics.median(timing.step_times),
    )
    return {"profile": summary}


@dataclasses.dataclass(frozen=True)
class CompiledProgram:
    """A compiled program, its compile seconds and the FLOPs its products run per call."""

    compiled: Any
    compile_s: float
    flops: ProgramFlops | None


def _compile(jitted, *args) -> CompiledProgram:
    start = time.perf_counter()
    traced = jitted.trace(*args)
    compiled = traced.lower().compile()
    compile_s = time.perf_counter() - start
    return CompiledProgram(compiled, compile_s, program_flops(traced.jaxpr))


def model_flops(model: DiT, images: int, forwards_per_image: float) -> float:
    """The model FLOPs of a call that runs `forwards_per_image` forward passes' worth of the
    model (a train step: TRAIN_FORWARDS) on each of `images` images, from its analytic cost."""
    return 2.0 * forward_macs(model) * forwards_per_image * images


def _model_result(
    mode: str,
    spec: BenchSpec,
    model: DiT,
    *,
    images: int,
    forwards_per_image: float,
    timing: _Timing,
    program: CompiledProgram,
    **extra: Any,
) -> dict[str, Any]:
    step_s = statistics.median(timing.step_times)
    flops = model_flops(model, images, forwards_per_image)
    achieved = flops / step_s
    reference = timing.reference_flops_per_s
    memory, memory_kind = peak_memory_bytes()
    run = program.flops
    return {
        "mode": mode,
        "model": spec.model,
        "model_overrides": dict(spec.model_overrides),
        "latent_shape": [spec.latent_size, spec.latent_size, model.in_channels],
        "dtype": spec.dtype,
        "batch_size": spec.batch_size,
        **extra,
        "devices": jax.device_count(),
        "images_per_s": images / step_s,
        "step_s": step_s,
        "step_times_s": timing.step_times,
        "compile_s": program.compile_s,
        "model_tflop_per_step": flops / 1e12,
        "tflops_per_s": achieved / 1e12,
        "reference_tflops_per_s": reference / 1e12,
        "utilisation": achieved / (reference * jax.device_count()),
        # What the program's products run (recomputation included), against the model's.
        "program_tflop_per_step": None if run is None else run.total / 1e12,
        "program_flops_per_model_flop": None if run is None else run.total / flops,
        "hardware_utilisation": (
            None if run is None else run.total / step_s / (reference * jax.device_count())
        ),
        "program_flops_by_dtype": None if run is None else run.shares(),
        "program_memory_bytes": program_memory_bytes(program.compiled),
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
    }


def _init_params(model: DiT, latent_shape: tuple[int, int, int]) -> dict:
    x = jnp.zeros((1, *latent_shape), jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(0), x, t, t)
    return nn.unbox(variables["params"])


def _reference_optimizer() -> tuple[optax.GradientTransformation, optax.Schedule]:
    """configs/base.py's optimizer (AdamW at a constant 1e-4, no weight decay or clipping) and
    its learning rate schedule, built without ml-collections."""
    learning_rate_fn = optax.constant_schedule(1e-4)
    optimizer = clipped_adamw(
        learning_rate_fn, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip_norm=0.0
    )
    return optimizer, learning_rate_fn


def compile_train_step(spec: BenchSpec) -> tuple[DiT, CompiledProgram, Callable[[], Any]]:
    """The benchmark's train step (hybrid loss, AdamW, EMA) on a fixed synthetic global batch,
    compiled: the model, the program and a call that runs one step, carrying the state from
    call to call, and blocks."""
    model = spec.create_model()
    mesh = create_mesh(spec.mesh)
    optimizer, learning_rate_fn = _reference_optimizer()
    latent_shape = (spec.latent_size, spec.latent_size, model.in_channels)
    state, shardings = create_train_state(model, optimizer, 0, latent_shape, mesh)
    step = jit_train_step(
        make_train_step(
            model,
            create_diffusion(),
            optimizer,
            ema_decay=0.9999,
            latent_scale=0.18215,
            learning_rate_fn=learning_rate_fn,
        ),
        shardings,
        mesh,
    )
    local = spec.batch_size // jax.process_count()
    rng = np.random.default_rng(0)
    batch = make_global_batch(
        {
            "mean": rng.normal(size=(local, *latent_shape)).astype(np.float32),
            "logvar": np.full((local, *latent_shape), -4.0, np.float32),
            "label": rng.integers(0, model.num_classes, size=(local,)).astype(np.int32),
        },
        mesh,
    )
    program = _compile(step, state, batch)
    carry = {"state": state}

    def call() -> None:
        carry["state"], metrics = program.compiled(carry["state"], batch)
        jax.block_until_ready(metrics)

    return model, program, call


def bench_train(spec: BenchSpec, peak: ReferencePeak) -> dict[str, Any]:
    """One jitted train step (`compile_train_step`), timed."""
    model, program, call = compile_train_step(spec)
    timing = _time_repeats(call, spec, peak)
    return _model_result(
        "train",
        spec,
        model,
        images=spec.batch_size,
        forwards_per_image=TRAIN_FORWARDS,
        timing=timing,
        program=program,
        **_profile("train", spec, call, program.compiled, timing),
    )


def guided_forwards(cfg_scale: float) -> int:
    """Model passes per image of a guided forward: 2 (conditional and unconditional) unless
    cfg_scale is 1."""
    return 2 if cfg_scale != 1.0 else 1


def compile_guided_forward(spec: BenchSpec) -> tuple[DiT, CompiledProgram, Callable[[], Any]]:
    """The benchmark's guided forward (x, t) -> eps of `batch_size` images, compiled: the
    model, the program and a call that runs it on fixed inputs and blocks. The model runs on
    2 x batch (conditional and unconditional) when cfg_scale != 1."""
    model = spec.create_model()
    latent_shape = (spec.latent_size, spec.latent_size, model.in_channels)
    params = _init_params(model, latent_shape)
    labels = jnp.arange(spec.batch_size, dtype=jnp.int32) % model.num_classes

    @functools.partial(jax.jit, compiler_options=inference_compiler_options())
    def forward(params, x, t):
        conditional = lambda x, t, y: model.apply({"params": params}, x, t, y)  # noqa: E731
        guided = guided_model_fn(
            conditional,
            labels,
            model.num_classes,
            spec.cfg_scale,
            channels=model.in_channels,
        )
        return guided(x, t)

    x = jax.random.normal(jax.random.key(1), (spec.batch_size, *latent_shape), jnp.float32)
    t = jnp.full((spec.batch_size,), 500, jnp.int32)
    program = _compile(forward, params, x, t)
    call = lambda: jax.block_until_ready(program.compiled(params, x, t))  # noqa: E731
    return model, program, call


def bench_forward(spec: BenchSpec, peak: ReferencePeak) -> dict[str, Any]:
    """One guided forward of `batch_size` images (`compile_guided_forward`), timed."""
    model, program, call = compile_guided_forward(spec)
    timing = _time_repeats(call, spec, peak)
    return _model_result(
        "forward",
        spec,
        model,
        images=spec.batch_size,
        forwards_per_image=guided_forwards(spec.cfg_scale),
        timing=timing,
        program=program,
        cfg_scale=spec.cfg_scale,
        model_batch=spec.batch_size * guided_forwards(spec.cfg_scale),
        compiler_options=inference_compiler_options(),
        **_profile("forward", spec, call, program.compiled, timing),
    )


def bench_sample(spec: BenchSpec, peak: ReferencePeak) -> dict[str, Any]:
    """The whole guided sampling loop (`sample_steps` steps of `sampler`) as one jitted
    program, from noise to latents of `batch_size` images."""
    model = spec.create_model()
    latent_shape = (spec.latent_size, spec.latent_size, model.in_channels)
    params = _init_params(model, latent_shape)
    sample = jax.jit(
        make_sample_fn(
            model,
            latent_shape=latent_shape,
            sampler=spec.sampler,
            steps=spec.sample_steps,
            cfg_scale=spec.cfg_scale,
        ),
        compiler_options=inference_compiler_options(),
    )
    labels = jnp.arange(spec.batch_size, dtype=jnp.int32) % model.num_classes
    key = jax.random.key(0)
    program = _compile(sample, params, labels, key)
    call = lambda: jax.block_until_ready(program.compiled(params, labels, key))  # noqa: E731
    timing = _time_repeats(call, spec, peak)
    result = _model_result(
        "sample",
        spec,
        model,
        images=spec.batch_size,
        forwards_per_image=spec.sample_steps * guided_forwards(spec.cfg_scale),
        timing=timing,
        program=program,
        cfg_scale=spec.cfg_scale,
        sampler=spec.sampler,
        sample_steps=spec.sample_steps,
        compiler_options=inference_compiler_options(),
        **_profile("sample", spec, call, program.compiled, timing),
    )
    result["denoising_step_s"] = result["step_s"] / spec.sample_steps
    return result


def bench_data(
    dataset_dir: str,
    *,
    batch_size: int,
    workers: int,
    batches: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """The latent input pipeline alone: `batches` batches of `batch_size` (per host) read by
    `make_train_iterator` with `workers` grain worker processes (0: threads), after `warmup`
    untimed ones. `step_s` is the mean time per batch (the worker queues make single batches
    bursty); images_per_s is per host."""
    if batches < 1 or warmup < 0 or workers < 0:
        raise ValueError(
            f"batches must be positive, warmup and workers >= 0, got {batches}, {warmup}, {workers}"
        )
    # Only this mode needs the data stack (grain, TFDS); the model modes run without it.
    from ditjax.data.pipeline import make_train_iterator

    iterator = make_train_iterator(
        dataset_dir,
        global_batch_size=batch_size * jax.process_count(),
        seed=seed,
        worker_count=workers,
    )
    try:
        start = time.perf_counter()
        first = next(iterator)
        first_s = time.perf_counter() - start
        for _ in range(warmup):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    memory, memory_kind = peak_memory_bytes()
    return {
        "mode": "data",
        "latent_shape": list(first["mean"].shape[1:]),
        "batch_size": batch_size,
        "workers": workers,
        "batches": batches,
        "images_per_s": batches * batch_size / seconds,
        "step_s": seconds / batches,
        "first_batch_s": first_s,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
    }
