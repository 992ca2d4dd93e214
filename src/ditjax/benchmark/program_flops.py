"""The matrix-product FLOPs a traced program runs, read from its jaxpr.

The benchmark's utilisation divides the model's analytic FLOPs (`forward_macs`) by the step
time. What the hardware runs can be more: a remat policy recomputes part of the forward pass
in the backward one, and flash attention computes q k^T again in its backward pass. Counting
every `dot_general`, convolution and fused attention of the program, loop bodies times their
trip count, gives that figure, and the share of it per operand dtype shows any product that
a bfloat16 model still runs in float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterator

from jax.extend import core as jax_core


@dataclasses.dataclass(frozen=True)
class ProgramFlops:
    """FLOPs (2 per multiply-add) of a program's matrix products, convolutions and fused
    attention.

    `by_dtype` maps 'lhs x rhs -> out' operand dtypes, e.g. 'bfloat16 x bfloat16 -> float32',
    to the FLOPs of the products with those dtypes.
    """

    total: float
    by_dtype: dict[str, float]

    def shares(self) -> dict[str, float]:
        """`by_dtype` as fractions of `total`, largest first."""
        ordered = sorted(self.by_dtype.items(), key=lambda item: -item[1])
        return {key: flops / self.total for key, flops in ordered} if self.total else {}


def _dot_flops(eqn) -> int:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    depth = math.prod(lhs.shape[axis] for axis in lhs_contracting)
    return 2 * math.prod(eqn.outvars[0].aval.shape) * depth


def _conv_flops(eqn) -> int:
    # Each output element sums over the kernel's window and the input features of its group:
    # the kernel's size over its output-feature axis (which the groups already divide).
    rhs = eqn.invars[1].aval
    out_feature_axis = eqn.params["dimension_numbers"].rhs_spec[0]
    window = math.prod(rhs.shape) // rhs.shape[out_feature_axis]
    return 2 * math.prod(eqn.outvars[0].aval.shape) * window


def _attention_products(eqn) -> tuple[int, int]:
    """FLOPs of the q k^T product and of the p v product of a cuDNN fused attention call,
    whose q, k and v are (B, T, N, H) or, with layout 1, (B, N, T, H)."""
    query, key, value = (var.aval for var in eqn.invars[:3])
    token_axis, head_axis = (2, 1) if eqn.params["layout"] == 1 else (1, 2)
    pairs = (
        query.shape[0] * query.shape[head_axis] * query.shape[token_axis] * key.shape[token_axis]
    )
    return 2 * pairs * query.shape[3], 2 * pairs * value.shape[3]


def _attention_forward_flops(eqn) -> int:
    logits, values = _attention_products(eqn)
    return logits + values


def _attention_backward_flops(eqn) -> int:
    # Flash attention's backward pass computes q k^T again, then the gradients of p, v, q, k.
    logits, values = _attention_products(eqn)
    return 3 * logits + 2 * values


_COUNTED = {
    "dot_general": _dot_flops,
    "conv_general_dilated": _conv_flops,
    # jax.nn.dot_product_attention(implementation="cudnn"); a mask's skipped blocks count too.
    "dot_product_attention_fwd_wrapper": _attention_forward_flops,
    "dot_product_attention_bwd_wrapper": _attention_backward_flops,
}
# Sub-programs that run a number of times the trace does not fix (a Pallas kernel runs once
# per block of its grid, with shapes of one block).
_UNCOUNTABLE = ("while", "pallas_call")


def _sub_jaxprs(eqn) -> Iterator[jax_core.Jaxpr]:
    for value in eqn.params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, jax_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax_core.Jaxpr):
                yield item


class _UnknownTripCountError(Exception):
    pass


def _count(jaxpr: jax_core.Jaxpr, times: int, flops: Counter) -> None:
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _COUNTED:
            lhs, rhs, out = eqn.invars[0].aval, eqn.invars[1].aval, eqn.outvars[0].aval
            key = f"{lhs.dtype} x {rhs.dtype} -> {out.dtype}"
            flops[key] += times * _COUNTED[name](eqn)
        subs = list(_sub_jaxprs(eqn))
        if name in _UNCOUNTABLE and any(_has_products(sub) for sub in subs):
            raise _UnknownTripCountError(name)
        if name == "cond":
            # One branch runs: count the costliest.
            branches = []
            for sub in subs:
                branch: Counter = Counter()
                _count(sub, times, branch)
                branches.append(branch)
            flops.update(max(branches, key=lambda c: sum(c.values()), default=Counter()))
            continue
        inner = times
        if name == "scan":
            inner *= eqn.params["length"]
        elif name == "shard_map":
            # The body sees one shard and runs once per device of its manual axes.
            inner *= math.prod(eqn.params["mesh"].shape[a] for a in eqn.params["newly_manual_axes"])
        for sub in subs:
            _count(sub, inner, flops)


def _has_products(jaxpr: jax_core.Jaxpr) -> bool:
    return any(
        eqn.primitive.name in _COUNTED or any(_has_products(sub) for sub in _sub_jaxprs(eqn))
        for eqn in jaxpr.eqns
    )


def program_flops(jaxpr: jax_core.ClosedJaxpr | jax_core.Jaxpr) -> ProgramFlops | None:
    """The FLOPs of the products one call of a traced program runs (e.g.
    `jax.jit(f).trace(*args).jaxpr`), over all devices: scan bodies count `length` times, a
    shard_map body once per device of its manual axes, a cond its costliest branch, and cuDNN's
    fused attention as the products it runs. None when a product sits in a while loop or a
    Pallas kernel, which run a number of times the trace does not fix.
    """
    if isinstance(jaxpr, jax_core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    flops: Counter = Counter()
    try:
        _count(jaxpr, 1, flops)
    except _UnknownTripCountError:
        return None
    return ProgramFlops(float(sum(flops.values())), {key: float(v) for key, v in flops.items()})
