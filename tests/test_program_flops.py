"""`program_flops`: the matrix-product FLOPs a traced program runs, loops and remat included."""

import jax
import jax.numpy as jnp
import pytest

from ditjax.benchmark import program_flops
from ditjax.models import create_model, forward_macs


def traced(fn, *args):
    return jax.jit(fn).trace(*args).jaxpr


def test_products_convolutions_scans_and_conds_are_counted():
    a = jnp.ones((4, 8), jnp.bfloat16)
    w = jnp.ones((8, 16), jnp.bfloat16)
    image = jnp.ones((2, 6, 6, 3))
    kernel = jnp.ones((3, 3, 3, 5))

    def fn(a, w, image, kernel, flag):
        logits = jnp.dot(a, w, preferred_element_type=jnp.float32)  # 2*4*8*16
        looped, _ = jax.lax.scan(lambda c, _: (c @ w @ w.T, None), a, None, length=3)
        conv = jax.lax.conv_general_dilated(
            image, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )  # output (2, 4, 4, 5), each a 3x3x3 window
        branch = jax.lax.cond(flag, lambda: a @ w, lambda: jnp.zeros((4, 16), a.dtype))
        return logits, looped, conv, branch

    flops = program_flops(traced(fn, a, w, image, kernel, True))
    assert flops.by_dtype == {
        "bfloat16 x bfloat16 -> float32": 2 * 4 * 8 * 16,
        # The scan's two products per step, 3 steps; the cond's costlier branch.
        "bfloat16 x bfloat16 -> bfloat16": 3 * 2 * (2 * 4 * 16 * 8) + 2 * 4 * 8 * 16,
        "float32 x float32 -> float32": 2 * (2 * 4 * 4 * 5) * 27,
    }
    assert flops.total == sum(flops.by_dtype.values())
    shares = flops.shares()
    assert list(shares.values()) == sorted(shares.values(), reverse=True)
    assert shares["float32 x float32 -> float32"] == 8640 / flops.total
    assert sum(shares.values()) == pytest.approx(1.0)


def test_a_product_in_a_while_loop_has_no_count():
    w = jnp.ones((8, 8))

    def looped(x):
        return jax.lax.while_loop(lambda c: c[0, 0] < 10.0, lambda c: c @ w, x)

    def counter_only(x):
        steps = jax.lax.while_loop(lambda i: i < 3, lambda i: i + 1, 0)
        return x @ w * steps

    assert program_flops(traced(looped, jnp.ones((2, 8)))) is None
    assert program_flops(traced(counter_only, jnp.ones((2, 8)))).total == 2 * 2 * 8 * 8


def _gradient_flops(remat_policy: str, scan_blocks: bool = False, dtype: str = "bfloat16"):
    model = create_model(
        "DiT-S/4",
        depth=2,
        hidden_size=64,
        num_heads=2,
        input_size=8,
        dtype=dtype,
        remat_policy=remat_policy,
        scan_blocks=scan_blocks,
    )
    batch = 2
    x = jnp.ones((batch, 8, 8, 4))
    t = jnp.zeros((batch,), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), x, t, t)["params"]

    def loss(params):
        return model.apply({"params": params}, x, t, t).astype(jnp.float32).sum()

    flops = program_flops(traced(jax.grad(loss), params))
    blocks_forward = 2 * batch * (forward_macs(model) - forward_macs(model.clone(depth=0)))
    seq = (8 // 4) ** 2
    attention_forward = 2 * batch * model.depth * 2 * seq * seq * model.hidden_size
    return flops, blocks_forward, attention_forward


@pytest.mark.parametrize("scan_blocks", [False, True])
def test_remat_policies_recompute_what_they_name(scan_blocks):
    plain, blocks_forward, attention_forward = _gradient_flops("none", scan_blocks)
    full, _, _ = _gradient_flops("full", scan_blocks)
    dots, _, _ = _gradient_flops("dots_saveable", scan_blocks)
    unbatched, _, _ = _gradient_flops("dots_with_no_batch_dims_saveable", scan_blocks)
    # Full remat runs every block's products again; saving dots runs none again; saving only
    # the unbatched ones runs the attention's batched products again.
    assert full.total - plain.total == blocks_forward
    assert dots.total == plain.total
    assert unbatched.total - plain.total == attention_forward


def test_a_bfloat16_model_runs_every_product_on_bfloat16_operands():
    flops, _, _ = _gradient_flops("none")
    assert flops.total > 0
    assert all(key.startswith("bfloat16 x bfloat16 -> ") for key in flops.by_dtype), flops
    float32, _, _ = _gradient_flops("none", dtype="float32")
    assert set(float32.by_dtype) == {"float32 x float32 -> float32"}
    assert float32.total == flops.total


def test_a_shard_map_body_counts_once_per_device():
    mesh = jax.sharding.AbstractMesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    spec = jax.sharding.PartitionSpec("data")
    per_shard = jax.shard_map(lambda x: x @ x.T, mesh=mesh, in_specs=spec, out_specs=spec)
    x = jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=jax.NamedSharding(mesh, spec))
    # Each of the 4 devices multiplies its (2, 16) rows by their transpose.
    assert program_flops(jax.jit(per_shard).trace(x).jaxpr).total == 4 * (2 * 2 * 2 * 16)


def test_cudnn_attention_counts_its_products(monkeypatch):
    # Tracing needs no GPU once JAX's cuDNN checks pass; nothing here is compiled or run.
    from jax._src.cudnn import fused_attention_stablehlo

    monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(fused_attention_stablehlo, "check_compute_capability", lambda _: True)

    def loss(q, k, v):
        out = jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
        return out.astype(jnp.float32).sum()

    batch, tokens, heads, head_dim = 2, 16, 4, 64
    q = jax.ShapeDtypeStruct((batch, tokens, heads, head_dim), jnp.bfloat16)
    forward = program_flops(traced(loss, q, q, q))
    gradient = program_flops(traced(jax.grad(loss, argnums=(0, 1, 2)), q, q, q))
    product = 2 * batch * heads * tokens * tokens * head_dim
    assert forward.by_dtype == {"bfloat16 x bfloat16 -> bfloat16": 2 * product}
    # q k^T and p v, then the backward pass: q k^T again and the gradients of p, v, q and k.
    assert gradient.total == (2 + 5) * product


def test_a_product_in_a_pallas_kernel_has_no_count():
    from jax.experimental import pallas as pl

    def kernel(x_ref, out_ref):
        out_ref[...] = x_ref[...] @ x_ref[...]

    square = pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((8, 8), jnp.float32), grid=(3,), interpret=True
    )
    assert program_flops(traced(square, jnp.ones((8, 8)))) is None
