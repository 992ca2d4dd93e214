"""The official DiT checkpoints (facebookresearch/DiT) <-> ditjax DiT params."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict

from ditjax.models import DiT, create_model, sincos_2d_position_table
from ditjax.models.costs import abstract_params

LATENT_DOWNSAMPLE = 8


# Official DiT names -> (our path, kind); blocks use "{i}" for the block index.
def _official_layout(depth: int) -> dict[str, tuple[tuple[str, ...], str]]:
    layout: dict[str, tuple[tuple[str, ...], str]] = {
        "x_embedder.proj.weight": (("x_embedder", "proj", "kernel"), "conv"),
        "x_embedder.proj.bias": (("x_embedder", "proj", "bias"), "copy"),
        "t_embedder.mlp.0.weight": (("t_embedder", "mlp_0", "kernel"), "linear"),
        "t_embedder.mlp.0.bias": (("t_embedder", "mlp_0", "bias"), "copy"),
        "t_embedder.mlp.2.weight": (("t_embedder", "mlp_2", "kernel"), "linear"),
        "t_embedder.mlp.2.bias": (("t_embedder", "mlp_2", "bias"), "copy"),
        "y_embedder.embedding_table.weight": (("y_embedder", "embedding_table"), "copy"),
        "final_layer.linear.weight": (("final_layer", "linear", "kernel"), "linear"),
        "final_layer.linear.bias": (("final_layer", "linear", "bias"), "copy"),
        "final_layer.adaLN_modulation.1.weight": (
            ("final_layer", "adaLN_modulation", "linear", "kernel"),
            "linear",
        ),
        "final_layer.adaLN_modulation.1.bias": (
            ("final_layer", "adaLN_modulation", "linear", "bias"),
            "copy",
        ),
    }
    block_layers = {
        "attn.qkv": ("attn", "qkv"),
        "attn.proj": ("attn", "proj"),
        "mlp.fc1": ("mlp", "fc1"),
        "mlp.fc2": ("mlp", "fc2"),
        "adaLN_modulation.1": ("adaLN_modulation", "linear"),
    }
    for i in range(depth):
        for torch_name, path in block_layers.items():
            ours = ("blocks", f"blocks_{i}", *path)
            layout[f"blocks.{i}.{torch_name}.weight"] = ((*ours, "kernel"), "linear")
            layout[f"blocks.{i}.{torch_name}.bias"] = ((*ours, "bias"), "copy")
    return layout


def _to_ours(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # OIHW -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    if kind == "linear":  # (out, in) -> (in, out)
        return np.transpose(value)
    return value


def _to_torch(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":
        return np.transpose(value, (3, 2, 0, 1))
    if kind == "linear":
        return np.transpose(value)
    return value


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def convert_by_layout(
    state: Mapping[str, np.ndarray],
    layout: Mapping[str, tuple[tuple[str, ...], str]],
    shapes: Mapping[tuple[str, ...], tuple[int, ...]],
) -> tuple[dict, list[str]]:
    """(nested float32 params, problems) from a PyTorch state dict: each `layout` key maps
    to a Flax path and a kind (conv, linear, copy) whose Flax shape is `shapes[path]`.
    Problems list the missing keys and wrong shapes; unknown keys are the caller's."""
    missing = sorted(set(layout) - set(state))
    wrong = []
    params: dict = {}
    for key, (path, kind) in layout.items():
        if key not in state:
            continue
        expected = _to_torch_shape(shapes[path], kind)
        if state[key].shape != expected:
            wrong.append(f"{key}: {state[key].shape} (expected {expected})")
            continue
        _set(params, path, np.ascontiguousarray(_to_ours(state[key], kind), dtype=np.float32))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong)}")
    return params, problems


def _model_for(name: str, image_size: int, **overrides: Any) -> DiT:
    if image_size % LATENT_DOWNSAMPLE:
        raise ValueError(f"image_size {image_size} is not a multiple of {LATENT_DOWNSAMPLE}")
    return create_model(name, input_size=image_size // LATENT_DOWNSAMPLE, **overrides)


def _stack_blocks(params: dict, depth: int) -> dict:
    blocks = params["blocks"]
    stacked = [blocks[f"blocks_{i}"] for i in range(depth)]
    params = dict(params)
    params["blocks"] = {"blocks": jax.tree.map(lambda *xs: np.stack(xs), *stacked)}
    return params


def _unstack_blocks(params: Mapping, depth: int) -> dict:
    stacked = params["blocks"]["blocks"]
    params = dict(params)
    params["blocks"] = {
        f"blocks_{i}": jax.tree.map(lambda x, i=i: np.asarray(x[i]), stacked) for i in range(depth)
    }
    return params


def official_dit_params(
    state_dict: Mapping[str, np.ndarray],
    name: str,
    *,
    image_size: int = 256,
    scan_blocks: bool = False,
) -> dict:
    """Flax params of `name` from an official DiT state dict (names -> numpy arrays).

    Refuses unknown and missing keys and wrong shapes, listing all of them; checks the
    stored `pos_embed` against our fixed table. With `scan_blocks` the blocks are stacked
    for a model created with `scan_blocks=True`.
    """
    model = _model_for(name, image_size)
    layout = _official_layout(model.depth)
    expected = _flat_shapes(model)
    state = {k: np.asarray(v) for k, v in state_dict.items()}
    unknown = sorted(set(state) - set(layout) - {"pos_embed"})
    params, problems = convert_by_layout(state, layout, expected)
    if unknown:
        problems.insert(0, f"unknown keys: {', '.join(unknown)}")
    if "pos_embed" in state:
        grid = image_size // LATENT_DOWNSAMPLE // model.patch_size
        table = sincos_2d_position_table(model.hidden_size, grid, grid)
        stored = state["pos_embed"].reshape(-1, model.hidden_size)
        if stored.shape != table.shape or not np.allclose(stored, table, atol=1e-5):
            problems.append(
                f"pos_embed {state['pos_embed'].shape} differs from the {name} position table "
                f"at {image_size}px"
            )
    if problems:
        raise ValueError(
            f"state dict does not fit {name} at {image_size}px: " + "; ".join(problems)
        )
    return _stack_blocks(params, model.depth) if scan_blocks else params


def official_dit_state_dict(params: Mapping, name: str, *, image_size: int = 256) -> dict:
    """The inverse of `official_dit_params`: our params -> official names and layouts."""
    model = _model_for(name, image_size)
    if "blocks" in params["blocks"]:
        params = _unstack_blocks(params, model.depth)
    out = {
        key: _to_torch(np.asarray(_get(params, path)), kind)
        for key, (path, kind) in _official_layout(model.depth).items()
    }
    grid = image_size // LATENT_DOWNSAMPLE // model.patch_size
    out["pos_embed"] = sincos_2d_position_table(model.hidden_size, grid, grid)[None]
    return out


def _to_torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    return _to_torch(np.empty(shape, np.uint8), kind).shape


def _flat_shapes(model: DiT) -> dict[tuple[str, ...], tuple[int, ...]]:
    abstract = nn.unbox(abstract_params(model))
    return {path: tuple(leaf.shape) for path, leaf in flatten_dict(abstract).items()}


def extract_state_dict(checkpoint: Any) -> dict[str, np.ndarray]:
    """The EMA state dict of a released checkpoint or of a reference train.py checkpoint."""
    if isinstance(checkpoint, Mapping) and "ema" in checkpoint and "model" in checkpoint:
        return dict(checkpoint["ema"])
    if isinstance(checkpoint, Mapping) and all(isinstance(k, str) for k in checkpoint):
        return dict(checkpoint)
    raise ValueError("checkpoint is neither a state dict nor a train.py checkpoint with 'ema'")
