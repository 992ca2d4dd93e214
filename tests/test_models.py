"""ditjax.models against the reference DiT: sizes, costs, initialisation and the forward pass."""

from __future__ import annotations

import math
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_numpy as ref
from ditjax.models import (
    MODEL_NAMES,
    abstract_params,
    count_parameters,
    create_model,
    forward_macs,
    position_table_size,
    sincos_2d_position_table,
    timestep_frequencies,
)
from ditjax.models.embeddings import LabelEmbedder
from ditjax.models.layers import LayerNorm
from model_fixtures import init_params, randomize

# A small model: DiT-S/8 with two blocks on 16 x 16 latents (2 x 2 tokens).
SMALL = dict(depth=2, input_size=16)


def small_model(name: str = "DiT-S/8", **overrides):
    return create_model(name, **{**SMALL, **overrides})


def inputs(n: int = 2, height: int = 16, width: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, height, width, 4)).astype(np.float32)
    t = np.array([0, 17, 40, 3][:n], dtype=np.int32)
    y = np.array([3, 1000, 999, 0][:n], dtype=np.int32)  # 1000 is the null class
    return jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)


def to_numpy(tree):
    return jax.tree.map(np.asarray, tree)


def stack_blocks(params, depth: int):
    """Unscanned params (blocks/blocks_i) -> the scanned layout (blocks/blocks, leading axis)."""
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs), *[params["blocks"][f"blocks_{i}"] for i in range(depth)]
    )
    return {**params, "blocks": {"blocks": stacked}}


def assert_close_to_scale(actual, expected, rel: float):
    """max |actual - expected| <= rel * max |expected| (and expected is not trivially zero)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 1e-3
    err = np.abs(actual - expected).max()
    assert err <= rel * scale, f"max error {err:.3g} > {rel:.1g} * {scale:.3g}"


# --------------------------------------------------------------------------- sizes and costs


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_of_every_variant(name):
    x = jax.ShapeDtypeStruct((3, 32, 32, 4), jnp.float32)
    t = jax.ShapeDtypeStruct((3,), jnp.int32)
    y = jax.ShapeDtypeStruct((3,), jnp.int32)
    for learn_sigma, channels in ((True, 8), (False, 4)):
        model = create_model(name, learn_sigma=learn_sigma)
        params = abstract_params(model)
        out = jax.eval_shape(
            lambda p, *args, m=model: m.apply({"params": p}, *args), params, x, t, y
        )
        assert out.shape == (3, 32, 32, channels)
        assert out.dtype == jnp.float32


REFERENCE_TOTALS = {
    # name: (parameters incl. the fixed position table, table size, paper Gflops)
    "DiT-XL/2": (675_129_632, 294_912, 118.6),
    "DiT-L/2": (458_102_816, 262_144, 80.7),
    "DiT-B/2": (130_512_416, 196_608, 23.0),
    "DiT-S/2": (32_963_360, 98_304, 6.1),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_TOTALS))
def test_parameter_counts_and_flops_match_reference(name):
    total, table, gflops = REFERENCE_TOTALS[name]
    model = create_model(name)
    assert position_table_size(model) == table
    assert count_parameters(abstract_params(model)) + table == total
    assert round(forward_macs(model) / 1e9, 1) == gflops


def test_patch_size_changes_only_patch_embed_and_final_layer():
    counts = {p: count_parameters(abstract_params(create_model(f"DiT-B/{p}"))) for p in (2, 4, 8)}
    d, c = 768, 4
    for p in (4, 8):
        # conv kernel p*p*C*D and final linear D*p*p*2C (+ bias p*p*2C) grow with p^2.
        delta = (p * p - 4) * (c * d + d * 2 * c + 2 * c)
        assert counts[p] - counts[2] == delta


@pytest.mark.slow
def test_models_main_prints_table():
    proc = subprocess.run(
        [sys.executable, "-m", "ditjax.models"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [line for line in proc.stdout.splitlines() if line.startswith("DiT-XL/2 ")]
    assert len(rows) == 1, proc.stdout
    assert "675,129,632" in rows[0]
    assert "118.6" in rows[0]
    assert sum(line.startswith("DiT-") for line in proc.stdout.splitlines()) == 12


# --------------------------------------------------------------------------- initialisation


def test_fresh_adaln_zero_model_outputs_exact_zero():
    model = small_model()
    x, t, y = inputs(3)
    params = init_params(model, x, t, y, seed=1)
    out = model.apply({"params": params}, x * 7.0 + 3.0, t + 500, y)
    assert out.shape == (3, 16, 16, 8)
    assert np.all(np.asarray(out) == 0.0)


def test_initialisation_matches_reference():
    model = small_model("DiT-S/2")
    x, t, y = inputs(2)
    params = to_numpy(nn.unbox(init_params(model, x, t, y, seed=3)))
    d, p, c = 384, 2, 4
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == np.float32

    def xavier(kernel, bound):
        assert np.abs(kernel).max() <= bound * (1 + 1e-6)
        assert np.abs(kernel).max() >= 0.97 * bound
        assert np.std(kernel) == pytest.approx(bound / math.sqrt(3.0), rel=0.03)

    blocks = [params["blocks"][f"blocks_{i}"] for i in range(2)]
    for block in blocks:
        mod = block["adaLN_modulation"]["linear"]
        assert mod["kernel"].shape == (d, 6 * d)
        assert not mod["kernel"].any() and not mod["bias"].any()
        for layer in (
            block["attn"]["qkv"],
            block["attn"]["proj"],
            block["mlp"]["fc1"],
            block["mlp"]["fc2"],
        ):
            fan_in, fan_out = layer["kernel"].shape
            xavier(layer["kernel"], math.sqrt(6.0 / (fan_in + fan_out)))
            assert not layer["bias"].any()
    # The blocks are initialised independently.
    qkv0, qkv1 = (block["attn"]["qkv"]["kernel"] for block in blocks)
    assert not np.array_equal(qkv0, qkv1)

    final = params["final_layer"]
    for layer in (final["adaLN_modulation"]["linear"], final["linear"]):
        assert not layer["kernel"].any() and not layer["bias"].any()
    assert final["linear"]["kernel"].shape == (d, p * p * 2 * c)

    table = params["y_embedder"]["embedding_table"]
    assert table.shape == (1001, d)
    assert np.std(table) == pytest.approx(0.02, rel=0.03)
    assert abs(np.mean(table)) < 0.002
    for layer in (params["t_embedder"]["mlp_0"], params["t_embedder"]["mlp_2"]):
        assert np.std(layer["kernel"]) == pytest.approx(0.02, rel=0.05)
        assert not layer["bias"].any()

    conv = params["x_embedder"]["proj"]
    assert conv["kernel"].shape == (p, p, c, d)
    xavier(conv["kernel"], math.sqrt(6.0 / (p * p * c + d)))
    assert not conv["bias"].any()


# --------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize(("dim", "grid_h", "grid_w"), [(8, 2, 3), (16, 4, 4), (384, 3, 5)])
def test_position_table_matches_formula(dim, grid_h, grid_w):
    table = sincos_2d_position_table(dim, grid_h, grid_w)
    assert table.shape == (grid_h * grid_w, dim)
    np.testing.assert_allclose(table, ref.sincos_position_table(dim, grid_h, grid_w), atol=1e-6)


def test_position_table_hand_values():
    table = np.asarray(sincos_2d_position_table(8, 2, 3), np.float64)
    # D = 8: omega = [1, 1 / 100]; token (r=1, c=2) is row 1 * 3 + 2.
    expected = [
        math.sin(2.0), math.sin(0.02), math.cos(2.0), math.cos(0.02),
        math.sin(1.0), math.sin(0.01), math.cos(1.0), math.cos(0.01),
    ]  # fmt: skip
    np.testing.assert_allclose(table[5], expected, atol=1e-7)
    # token (r=0, c=1): column half moves, row half is that of r = 0.
    expected = [math.sin(1.0), math.sin(0.01), math.cos(1.0), math.cos(0.01), 0, 0, 1, 1]
    np.testing.assert_allclose(table[1], expected, atol=1e-7)
    # token (r=1, c=0): the row half encodes r = 1.
    expected = [0, 0, 1, 1, math.sin(1.0), math.sin(0.01), math.cos(1.0), math.cos(0.01)]
    np.testing.assert_allclose(table[3], expected, atol=1e-7)


def test_timestep_frequencies():
    t = jnp.array([0, 1, 999])
    emb = np.asarray(timestep_frequencies(t, 256), np.float64)
    assert emb.shape == (3, 256)
    np.testing.assert_array_equal(emb[0, :128], 1.0)
    np.testing.assert_array_equal(emb[0, 128:], 0.0)
    f = np.exp(-math.log(10000.0) * np.arange(128) / 128)
    np.testing.assert_allclose(emb[1], np.concatenate([np.cos(f), np.sin(f)]), atol=1e-6)
    assert emb[1, 0] == pytest.approx(math.cos(1.0), abs=1e-6)
    assert emb[1, 128] == pytest.approx(math.sin(1.0), abs=1e-6)
    assert emb[1, 127] == pytest.approx(math.cos(10000 ** (-127 / 128)), abs=1e-7)
    # t = 999: angles up to 999 rad are formed in float32 (ulp ~6e-5).
    np.testing.assert_allclose(emb[2], ref.timestep_features(np.array([999]))[0], atol=2e-4)
    assert emb[2, 0] == pytest.approx(math.cos(999.0), abs=2e-4)
    assert emb[2, 128] == pytest.approx(math.sin(999.0), abs=2e-4)


def test_layer_norm_eps_and_no_affine():
    # Variance ~1e-6 makes eps matter: 1e-6 (the reference) halves the variance, 1e-5 would not.
    x = np.random.default_rng(0).standard_normal((2, 5, 64)) * 1e-3
    layer = LayerNorm()
    variables = layer.init(jax.random.key(0), jnp.asarray(x, jnp.float32))
    assert not jax.tree.leaves(variables)  # no scale or bias
    out = layer.apply(variables, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(out), ref.layer_norm(x), rtol=1e-4, atol=1e-5)
    assert 0.6 < float(np.std(np.asarray(out))) < 0.8


def label_share(out: np.ndarray, null: int) -> float:
    return float(np.mean(out[:, 0] == null))


def test_label_dropout():
    num_classes, n = 10, 20_000
    labels = jnp.arange(n) % num_classes
    embedder = LabelEmbedder(num_classes, 1, 0.1)
    # Table row k holds k, so the output reads back the (possibly dropped) label.
    params = {"embedding_table": jnp.arange(num_classes + 1, dtype=jnp.float32)[:, None]}
    shapes = jax.eval_shape(lambda k, ls: embedder.init(k, ls, False), jax.random.key(0), labels)
    shapes = shapes["params"]
    assert nn.unbox(shapes)["embedding_table"].shape == (num_classes + 1, 1)

    def run(train, key=None, force=None):
        rngs = {} if key is None else {"dropout": key}
        return np.asarray(embedder.apply({"params": params}, labels, train, force, rngs=rngs))

    out = run(True, jax.random.key(1))
    dropped = out[:, 0] == num_classes
    assert 0.09 <= dropped.mean() <= 0.11
    np.testing.assert_array_equal(out[~dropped, 0], np.asarray(labels)[~dropped])
    other = run(True, jax.random.key(2))
    assert 0.09 <= label_share(other, num_classes) <= 0.11
    assert not np.array_equal(other, out)

    np.testing.assert_array_equal(run(False)[:, 0], np.asarray(labels))

    force = jnp.arange(n) % 3 == 0
    forced = run(False, force=force)[:, 0]
    np.testing.assert_array_equal(forced, np.where(force, num_classes, labels))


def test_force_drop_ids_and_train_flag_in_dit():
    model = small_model()
    x, t, y = inputs(3)
    params = randomize(init_params(model, x, t, y), seed=5)
    null = jnp.full_like(y, 1000)

    def apply(labels, **kwargs):
        return np.asarray(model.apply({"params": params}, x, t, labels, **kwargs))

    cond, uncond = apply(y), apply(null)
    assert np.abs(cond - uncond).max() > 1e-2
    np.testing.assert_array_equal(apply(y, force_drop_ids=jnp.ones_like(y)), uncond)
    partly = apply(y, force_drop_ids=jnp.array([1, 0, 0]))
    np.testing.assert_array_equal(partly[0], uncond[0])
    np.testing.assert_array_equal(partly[1:], cond[1:])
    np.testing.assert_array_equal(apply(y, train=False), cond)
    trained = apply(y, train=True, rngs={"dropout": jax.random.key(0)})
    for i in range(3):
        assert np.array_equal(trained[i], cond[i]) or np.array_equal(trained[i], uncond[i])


# --------------------------------------------------------------------------- forward pass


def check_against_reference(model_name, overrides, height, width, scanned, oracle=None):
    model = create_model(model_name, depth=2, **overrides)
    x, t, y = inputs(3, height, width, seed=2)
    params = randomize(init_params(model, x, t, y), seed=7)
    with jax.default_matmul_precision("float32"):  # no TF32 / bf16 passes on accelerators
        out = model.apply({"params": params}, x, t, y)
    p = to_numpy(params)
    blocks = ref.scanned_block_params(p, 2) if scanned else ref.unscanned_block_params(p, 2)
    expected = (oracle or ref.dit_forward)(
        p, blocks, np.asarray(x), np.asarray(t), np.asarray(y),
        patch_size=model.patch_size, num_heads=model.num_heads,
    )  # fmt: skip
    assert out.shape == (3, height, width, 8)
    assert out.dtype == jnp.float32
    assert_close_to_scale(out, expected, 1e-5)


def test_forward_matches_numpy_reference():
    check_against_reference("DiT-S/8", {"input_size": 16}, 16, 16, scanned=False)


def test_forward_matches_numpy_reference_scanned_layout():
    check_against_reference(
        "DiT-S/8", {"input_size": 16, "scan_blocks": True}, 16, 16, scanned=True
    )


def test_forward_matches_numpy_reference_non_square():
    # 4 x 6 tokens: exercises the row-major token order and the unpatchify axes.
    check_against_reference("DiT-S/4", {"input_size": (16, 24)}, 16, 24, scanned=False)


def test_forward_non_square_scanned():
    check_against_reference(
        "DiT-S/4", {"input_size": (16, 24), "scan_blocks": True}, 16, 24, scanned=True
    )


def test_in_context_forward_matches_numpy_reference():
    # The conditioning tokens go last and are dropped after the blocks.
    check_against_reference(
        "DiT-S/4", {"input_size": (16, 24), "block_type": "in_context"}, 16, 24,
        scanned=False, oracle=ref.in_context_forward,
    )  # fmt: skip


# --------------------------------------------------------------------------- variants


@pytest.mark.parametrize("block_type", ["adaln", "cross_attention", "in_context"])
def test_block_types(block_type):
    model = small_model(block_type=block_type)
    x, t, y = inputs(2)
    params = randomize(init_params(model, x, t, y), seed=11)
    out = np.asarray(model.apply({"params": params}, x, t, y))
    assert out.shape == (2, 16, 16, 8)
    assert np.isfinite(out).all()
    # The conditioning reaches the output through the block's own mechanism.
    other_y = np.asarray(model.apply({"params": params}, x, t, jnp.array([5, 6])))
    other_t = np.asarray(model.apply({"params": params}, x, t + 300, y))
    assert np.abs(out - other_y).max() > 1e-3
    assert np.abs(out - other_t).max() > 1e-3
    costs = forward_macs(create_model("DiT-XL/2", block_type=block_type))
    assert costs > 0
    # The block design really changes the parameters (adaLN-Zero has a 6D modulation).
    zero = count_parameters(abstract_params(model.clone(block_type="adaln_zero")))
    assert count_parameters(params) != zero


@pytest.mark.parametrize("remat_policy", ["none", "full", "dots_saveable"])
def test_scanned_blocks_equal_unscanned(remat_policy):
    depth = 2
    model = small_model()
    scanned = small_model(scan_blocks=True, remat_policy=remat_policy)
    x, t, y = inputs(2)
    params = randomize(init_params(model, x, t, y), seed=13)
    stacked = stack_blocks(params, depth)
    # The stacked mapping has exactly the scanned model's parameter structure.
    expected_tree = jax.tree.structure(nn.unbox(abstract_params(scanned)))
    assert jax.tree.structure(stacked) == expected_tree

    def loss(m, p):
        return jnp.mean(jnp.square(m.apply({"params": p}, x, t, y)))

    out = model.apply({"params": params}, x, t, y)
    out_scanned = scanned.apply({"params": stacked}, x, t, y)
    assert_close_to_scale(out_scanned, out, 1e-5)

    grads = jax.grad(lambda p: loss(model, p))(params)
    grads_scanned = jax.grad(lambda p: loss(scanned, p))(stacked)
    expected = stack_blocks(grads, depth)
    for a, b in zip(jax.tree.leaves(grads_scanned), jax.tree.leaves(expected), strict=True):
        assert_close_to_scale(a, b, 1e-4)


def test_unscanned_remat_equals_plain():
    model = small_model()
    remat = small_model(remat_policy="full")
    x, t, y = inputs(2)
    params = randomize(init_params(model, x, t, y), seed=17)
    grad = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, t, y) ** 2))(params)
    grad_remat = jax.grad(lambda p: jnp.sum(remat.apply({"params": p}, x, t, y) ** 2))(params)
    for a, b in zip(jax.tree.leaves(grad_remat), jax.tree.leaves(grad), strict=True):
        assert_close_to_scale(a, b, 1e-5)


def test_scanned_params_carry_layer_axis_name():
    boxed = abstract_params(small_model(scan_blocks=True))
    kernel = boxed["blocks"]["blocks"]["attn"]["qkv"]["kernel"]
    assert isinstance(kernel, nn.LogicallyPartitioned)
    assert kernel.names[0] == "layers"
    assert kernel.value.shape == (2, 384, 3 * 384)


def test_bfloat16_model():
    model = small_model()
    bf16 = small_model(dtype="bfloat16")
    assert bf16.dtype == jnp.bfloat16
    x, t, y = inputs(2)
    fresh = init_params(bf16, x, t, y)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nn.unbox(fresh)))
    params = randomize(init_params(model, x, t, y), seed=19)
    out = model.apply({"params": params}, x, t, y)
    out_bf16 = bf16.apply({"params": params}, x, t, y)
    assert out_bf16.dtype == jnp.float32
    assert_close_to_scale(out_bf16, out, 5e-2)
    assert np.abs(np.asarray(out_bf16) - np.asarray(out)).max() > 0  # bfloat16 really used


def test_create_model_rejects_bad_configurations():
    with pytest.raises(ValueError, match="DiT-XXL/2"):
        create_model("DiT-XXL/2")
    with pytest.raises(ValueError, match="hidden_dim"):
        create_model("DiT-S/2", hidden_dim=64)
    with pytest.raises(ValueError, match=r"block_type.*'bogus'"):
        create_model("DiT-S/2", block_type="bogus")
    with pytest.raises(ValueError, match="remat_policy"):
        create_model("DiT-S/2", remat_policy="sometimes")
    with pytest.raises(ValueError, match="input_size"):
        create_model("DiT-S/8", input_size=20)
    model = create_model("DiT-S/2", depth=3, learn_sigma=False)
    assert (model.depth, model.hidden_size, model.patch_size, model.out_channels) == (3, 384, 2, 4)
