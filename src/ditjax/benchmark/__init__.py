"""Benchmarks: throughput, model FLOP utilisation and memory of training, guided sampling and
the input pipeline (`python -m ditjax.bench`)."""

from ditjax.benchmark.device import (
    PEAK_TFLOPS,
    MatmulProbe,
    ReferencePeak,
    known_peak_tflops,
    peak_memory_bytes,
    program_memory_bytes,
    reference_peak,
)
from ditjax.benchmark.modes import (
    TRAIN_FORWARDS,
    BenchSpec,
    CompiledProgram,
    bench_data,
    bench_forward,
    bench_sample,
    bench_train,
    compile_guided_forward,
    compile_train_step,
    guided_forwards,
    model_flops,
)
from ditjax.benchmark.program_flops import ProgramFlops, program_flops
from ditjax.benchmark.report import (
    describe,
    format_table,
    markdown_table,
    profile_markdown,
)
from ditjax.benchmark.synthetic_latents import write_synthetic_latents

__all__ = [
    "PEAK_TFLOPS",
    "TRAIN_FORWARDS",
    "BenchSpec",
    "CompiledProgram",
    "MatmulProbe",
    "ProgramFlops",
    "ReferencePeak",
    "bench_data",
    "bench_forward",
    "bench_sample",
    "bench_train",
    "compile_guided_forward",
    "compile_train_step",
    "describe",
    "format_table",
    "guided_forwards",
    "known_peak_tflops",
    "markdown_table",
    "model_flops",
    "peak_memory_bytes",
    "profile_markdown",
    "program_flops",
    "program_memory_bytes",
    "reference_peak",
    "write_synthetic_latents",
]
