"""Official DiT checkpoints: reading .pt without torch, converting both ways, run dirs."""

import argparse
import collections

import flax.linen as nn
import jax
import numpy as np
import pytest

from ditjax.convert import (
    extract_state_dict,
    load_torch_checkpoint,
    official_dit_params,
    official_dit_state_dict,
)
from ditjax.convert.__main__ import main
from ditjax.models import create_model

NAME, IMAGE_SIZE = "DiT-S/8", 128  # 16 x 16 latents, a 2 x 2 token grid


def random_params(seed=0, scan_blocks=False):
    model = create_model(NAME, input_size=IMAGE_SIZE // 8, scan_blocks=scan_blocks)
    x = np.zeros((1, 16, 16, 4), np.float32)
    params = nn.unbox(model.init(jax.random.key(seed), x, np.zeros(1), np.zeros(1, np.int32)))
    rng = np.random.default_rng(seed)
    return model, jax.tree.map(
        lambda p: rng.normal(size=p.shape).astype(np.float32) * 0.05, params["params"]
    )


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_identity_and_has_official_layout():
    _, params = random_params()
    state = official_dit_state_dict(params, NAME, image_size=IMAGE_SIZE)
    assert len(state) == 2 + 4 + 1 + 12 * 10 + 4 + 1  # S has 12 blocks
    assert state["x_embedder.proj.weight"].shape == (384, 4, 8, 8)  # OIHW
    assert state["blocks.0.attn.qkv.weight"].shape == (3 * 384, 384)  # (out, in)
    assert state["y_embedder.embedding_table.weight"].shape == (1001, 384)
    assert state["final_layer.linear.weight"].shape == (8 * 8 * 8, 384)
    assert_trees_equal(official_dit_params(state, NAME, image_size=IMAGE_SIZE), params)


def test_xl2_layout_has_the_released_292_tensors():
    from ditjax.convert.official_dit import _official_layout

    assert len(_official_layout(28)) + 1 == 292  # + pos_embed


def test_scanned_layout_round_trip():
    _, params = random_params()
    _, scanned_like = random_params(scan_blocks=True)
    state = official_dit_state_dict(params, NAME, image_size=IMAGE_SIZE)
    scanned = official_dit_params(state, NAME, image_size=IMAGE_SIZE, scan_blocks=True)
    assert jax.tree.structure(scanned) == jax.tree.structure(scanned_like)
    assert scanned["blocks"]["blocks"]["attn"]["qkv"]["kernel"].shape == (12, 384, 1152)
    back = official_dit_state_dict(scanned, NAME, image_size=IMAGE_SIZE)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_bad_state_dicts_are_refused_with_every_problem_listed():
    _, params = random_params()
    state = official_dit_state_dict(params, NAME, image_size=IMAGE_SIZE)
    state["blocks.99.attn.qkv.weight"] = np.zeros((3, 3), np.float32)
    del state["blocks.3.mlp.fc2.bias"]
    state["final_layer.linear.weight"] = np.zeros((7, 384), np.float32)
    with pytest.raises(ValueError) as info:
        official_dit_params(state, NAME, image_size=IMAGE_SIZE)
    message = str(info.value)
    assert "unknown keys: blocks.99.attn.qkv.weight" in message
    assert "missing keys: blocks.3.mlp.fc2.bias" in message
    assert "final_layer.linear.weight: (7, 384) (expected (512, 384))" in message


def test_wrong_position_table_is_refused():
    _, params = random_params()
    state = official_dit_state_dict(params, NAME, image_size=IMAGE_SIZE)
    state["pos_embed"] = state["pos_embed"] + 0.1
    with pytest.raises(ValueError, match="pos_embed"):
        official_dit_params(state, NAME, image_size=IMAGE_SIZE)


def test_torch_checkpoints_read_without_torch(tmp_path):
    import torch

    _, params = random_params()
    state = official_dit_state_dict(params, NAME, image_size=IMAGE_SIZE)
    tensors = collections.OrderedDict(
        (k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in state.items()
    )
    # A transposed (non-contiguous) and a half-precision tensor exercise strides and dtypes.
    extra = {
        "t": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),
        "h": torch.ones(2, dtype=torch.float16),
        "step": torch.tensor(7),
    }
    torch.save(tensors, tmp_path / "ema.pt")
    torch.save(
        {"model": tensors, "ema": tensors, "opt": extra, "args": argparse.Namespace(model=NAME)},
        tmp_path / "train.pt",
    )
    plain = load_torch_checkpoint(str(tmp_path / "ema.pt"))
    full = load_torch_checkpoint(str(tmp_path / "train.pt"))
    for key, value in state.items():
        np.testing.assert_array_equal(plain[key], value)
    np.testing.assert_array_equal(full["opt"]["t"], np.arange(12).reshape(3, 4).T)
    assert full["opt"]["h"].dtype == np.float16 and int(full["opt"]["step"]) == 7
    assert full["args"].model == NAME
    assert_trees_equal(
        official_dit_params(extract_state_dict(full), NAME, image_size=IMAGE_SIZE), params
    )


def test_reader_refuses_code(tmp_path):
    import torch

    torch.save({"danger": collections.Counter("abc")}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"refusing to load collections\.Counter"):
        load_torch_checkpoint(str(tmp_path / "bad.pt"))


def test_convert_command_writes_a_loadable_run(tmp_path):
    import torch

    from ditjax.training.restore import load_for_sampling

    _, params = random_params()
    state = official_dit_state_dict(params, NAME, image_size=IMAGE_SIZE)
    torch.save(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, tmp_path / "w.pt"
    )
    out = tmp_path / "run"
    args = [
        "official-dit",
        str(tmp_path / "w.pt"),
        "--out",
        str(out),
        "--name",
        NAME,
        "--image_size",
        str(IMAGE_SIZE),
    ]
    assert main(args) == 0
    config, model, loaded, step = load_for_sampling(str(out))
    assert step == 0 and config.model == NAME and model.patch_size == 8
    assert_trees_equal(jax.device_get(loaded), params)
    assert main(args) == 2  # refuses to overwrite an existing run


def torch_linear(x, state, name):
    """y = x W^T + b with a PyTorch (out, in) weight."""
    return x @ state[f"{name}.weight"].astype(np.float64).T + state[f"{name}.bias"]


def reference_block(x, c, state, prefix, num_heads):
    """The reference adaLN-Zero DiT block in float64, on PyTorch-layout weights."""

    def norm(v):
        mean = v.mean(-1, keepdims=True)
        return (v - mean) / np.sqrt(((v - mean) ** 2).mean(-1, keepdims=True) + 1e-6)

    silu_c = c / (1 + np.exp(-c))
    chunks = np.split(torch_linear(silu_c, state, f"{prefix}.adaLN_modulation.1"), 6, axis=-1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (v[:, None] for v in chunks)
    n, t, d = x.shape
    h = norm(x) * (1 + scale_msa) + shift_msa
    qkv = torch_linear(h, state, f"{prefix}.attn.qkv").reshape(n, t, 3, num_heads, d // num_heads)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    logits = q @ k.transpose(0, 1, 3, 2) * (d // num_heads) ** -0.5
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attn = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    x = x + gate_msa * torch_linear(attn, state, f"{prefix}.attn.proj")
    h = norm(x) * (1 + scale_mlp) + shift_mlp
    h = torch_linear(h, state, f"{prefix}.mlp.fc1")
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    return x + gate_mlp * torch_linear(h, state, f"{prefix}.mlp.fc2")


def test_converted_block_matches_numpy_reference_block():
    from ditjax.models.blocks import AdaLNZeroBlock

    _, params = random_params(seed=4)
    state = {
        k: v.astype(np.float64)
        for k, v in official_dit_state_dict(params, NAME, image_size=IMAGE_SIZE).items()
    }
    converted = official_dit_params(state, NAME, image_size=IMAGE_SIZE)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, 384))
    c = rng.normal(size=(2, 384))
    expected = reference_block(x, c, state, "blocks.5", num_heads=6)
    block = AdaLNZeroBlock(num_heads=6)
    with jax.default_matmul_precision("highest"):
        ours = block.apply(
            {"params": converted["blocks"]["blocks_5"]}, x.astype(np.float32), c.astype(np.float32)
        )
    np.testing.assert_allclose(np.asarray(ours), expected, atol=2e-5 * np.abs(expected).max())
    assert np.abs(expected - x).max() > 0.01  # the block does change its input
