"""XLA compiler options for programs that run the model forward only: sampling loops and
guided forward passes.

On CPU they compile without XLA's YNNPACK kernels, so XLA runs their matrix products with
Eigen. DiT's dense products contract over 384-1536 features, and there Eigen's kernels run
faster than YNNPACK's: in alternating calls on a 2-core EPYC, a guided DiT-S/2 forward pass
took 0.88-0.96x the time and the sampling loop 0.96-1.01x (on another day the forward was
level). Train steps keep the default, where the two were level. Other backends get no options.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

YNNPACK_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"


def inference_compiler_options() -> dict[str, str]:
    """`compiler_options` for `jax.jit` of a forward-only program on the default backend.

    On CPU: YNNPACK off (`{YNNPACK_FUSION_OPTION: ""}`). Empty elsewhere, with a jaxlib that
    has no such option, or when XLA_FLAGS sets that option itself (the user's choice holds).
    """
    if jax.default_backend() != "cpu":
        return {}
    if YNNPACK_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}
    return dict(_supported_cpu_options())


@functools.cache
def _supported_cpu_options() -> tuple[tuple[str, str], ...]:
    """The CPU options, or none if this jaxlib refuses them (they are experimental)."""
    options = {YNNPACK_FUSION_OPTION: ""}
    try:
        jax.jit(jnp.negative, compiler_options=options).lower(jnp.zeros(1)).compile()
    except jax.errors.JaxRuntimeError:
        return ()
    return tuple(options.items())
