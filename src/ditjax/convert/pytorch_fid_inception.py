"""pytorch-fid's FID Inception weights (`pt_inception-2015-12-05-6726825d.pth`) -> the
variables of `ditjax.evaluation.inception`."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ditjax.convert.official_dit import convert_by_layout
from ditjax.convert.torch_checkpoint import load_torch_checkpoint
from ditjax.evaluation.inception import inception_param_shapes

# Torch BatchNorm2d names -> (Flax collection, name).
_BN_NAMES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def _layout(shapes: Mapping[tuple[str, ...], tuple[int, ...]]) -> dict[str, tuple]:
    """pytorch-fid key -> (our path, kind) for every leaf of our tree."""
    layout = {}
    for path in shapes:
        collection, *modules, leaf = path
        if modules[-1] == "conv":
            layout[".".join([*modules, "weight"])] = (path, "conv")
        elif modules[-1] == "bn":
            torch_leaf = next(k for k, v in _BN_NAMES.items() if v == (collection, leaf))
            layout[".".join([*modules, torch_leaf])] = (path, "copy")
        elif modules == ["fc"]:
            kind = "linear" if leaf == "kernel" else "copy"
            layout[f"fc.{'weight' if leaf == 'kernel' else 'bias'}"] = (path, kind)
        else:
            raise AssertionError(f"no pytorch-fid name for {path}")
    return layout


def pytorch_fid_inception_params(state_dict: Mapping[str, np.ndarray]) -> dict:
    """`{"params", "batch_stats"}` of the FID Inception from pytorch-fid's state dict
    (names such as `Mixed_5b.branch1x1.conv.weight` -> numpy arrays), as float32 numpy.

    `num_batches_tracked` entries are ignored. Unknown and missing keys and wrong shapes are
    all listed in one ValueError.
    """
    shapes = inception_param_shapes()
    layout = _layout(shapes)
    state = {
        k: np.asarray(v) for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")
    }
    unknown = sorted(set(state) - set(layout))
    variables, problems = convert_by_layout(state, layout, shapes)
    if unknown:
        problems.insert(0, f"unknown keys: {', '.join(unknown)}")
    if problems:
        raise ValueError(
            "state dict does not fit pytorch-fid's FID Inception: " + "; ".join(problems)
        )
    return variables


def load_pytorch_fid_inception(path: str | os.PathLike) -> dict:
    """`pytorch_fid_inception_params` of the `.pth` file at `path`, read without torch."""
    checkpoint = load_torch_checkpoint(path)
    if not isinstance(checkpoint, Mapping) or not all(isinstance(k, str) for k in checkpoint):
        raise ValueError(f"{os.fspath(path)}: expected a state dict (names -> tensors)")
    return pytorch_fid_inception_params(checkpoint)
