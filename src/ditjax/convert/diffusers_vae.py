"""Diffusers `AutoencoderKL` weights -> Flax params of `ditjax.autoencoder.sd_vae_layers.SDVAE`.

A diffusers VAE directory holds `diffusion_pytorch_model.safetensors` (or `.bin`) and
`config.json`. Convolution weights are transposed OIHW -> HWIO, linear weights (out, in) ->
(in, out); the legacy attention names `query/key/value/proj_attn` and 1x1-convolution-shaped
attention weights (out, in, 1, 1) are accepted.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ditjax.autoencoder.sd_vae_layers import SDVAE, SDVAEConfig

SAFETENSORS_MAX_HEADER = 100 * 2**20  # the limit the safetensors library itself sets
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
CONFIG_NAME = "config.json"

_LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_ATTENTION_KEY = re.compile(
    r"^((?:encoder|decoder)\.mid_block\.attentions\.0)\.(query|key|value|proj_attn)\.(weight|bias)$"
)
_ATTENTION_WEIGHT_KEY = re.compile(
    r"^(?:encoder|decoder)\.mid_block\.attentions\.0\.(?:to_q|to_k|to_v|to_out\.0)\.weight$"
)
_INDEXED_MODULE = re.compile(r"^(down_blocks|up_blocks|resnets)_(\d+)$")
_FLAX_TO_DIFFUSERS_MODULE = {
    "downsample": "downsamplers.0",
    "upsample": "upsamplers.0",
    "attention": "attentions.0",
    "to_out": "to_out.0",
}
_FLAX_TO_DIFFUSERS_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def flax_path_to_diffusers_key(path: tuple[str, ...]) -> str:
    """('encoder', 'down_blocks_0', 'downsample', 'conv', 'kernel') ->
    'encoder.down_blocks.0.downsamplers.0.conv.weight'."""
    parts = []
    for name in path[:-1]:
        indexed = _INDEXED_MODULE.match(name)
        if indexed:
            parts.append(f"{indexed.group(1)}.{indexed.group(2)}")
        else:
            parts.append(_FLAX_TO_DIFFUSERS_MODULE.get(name, name))
    parts.append(_FLAX_TO_DIFFUSERS_LEAF[path[-1]])
    return ".".join(parts)


def sd_vae_param_shapes(config: SDVAEConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax parameter path -> shape of `SDVAE(config)`, computed without allocating."""
    size = config.downsample_factor
    images = jax.ShapeDtypeStruct((1, size, size, config.in_channels), jnp.float32)
    shapes_only = dataclasses.replace(config, norm_num_groups=1)  # groups do not change shapes
    variables = jax.eval_shape(SDVAE(shapes_only).init, jax.random.key(0), images)
    flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The diffusers shape of a Flax param: HWIO -> OIHW, (in, out) -> (out, in)."""
    if len(flax_shape) == 4:
        kh, kw, cin, cout = flax_shape
        return (cout, cin, kh, kw)
    if len(flax_shape) == 2:
        return flax_shape[::-1]
    return flax_shape


def _to_flax(value: np.ndarray) -> np.ndarray:
    """A diffusers weight as a float32 Flax array: OIHW -> HWIO, (out, in) -> (in, out)."""
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def _canonical_key(key: str) -> str:
    """The current diffusers name of a possibly legacy (`query`, `proj_attn`, ...) key."""
    legacy = _LEGACY_ATTENTION_KEY.match(key)
    if legacy is None:
        return key
    prefix, name, leaf = legacy.groups()
    return f"{prefix}.{_LEGACY_ATTENTION_NAMES[name]}.{leaf}"


def _indices(state_dict: Mapping[str, Any], prefix: str) -> list[int]:
    """Sorted distinct integers N over the keys that start with `prefix` + 'N.'."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in state_dict if (m := pattern.match(key))})


def infer_sd_vae_config(
    state_dict: Mapping[str, Any], norm_num_groups: int = 32, **overrides: Any
) -> SDVAEConfig:
    """The `SDVAEConfig` implied by a diffusers state dict's keys and shapes.

    `norm_num_groups` and `scaling_factor` leave no trace in the weights; they come from
    `norm_num_groups` and `overrides`. Entries the weights do not determine (missing keys) keep
    their defaults, so that `diffusers_vae_params` can report every missing key at once.
    """
    defaults = SDVAEConfig()

    def dim(key: str, axis: int) -> int | None:
        value = state_dict.get(key)
        return None if value is None else int(np.shape(value)[axis])

    num_blocks = len(_indices(state_dict, "encoder.down_blocks.")) or len(
        defaults.block_out_channels
    )
    block_out_channels = []
    for i in range(num_blocks):
        prefix = f"encoder.down_blocks.{i}.resnets.0."
        channels = dim(prefix + "conv2.weight", 0) or dim(prefix + "conv1.weight", 0)
        if channels is None:
            channels = defaults.block_out_channels[min(i, len(defaults.block_out_channels) - 1)]
        block_out_channels.append(channels)
    latent_channels = dim("decoder.conv_in.weight", 1)
    if latent_channels is None and (encoder_out := dim("encoder.conv_out.weight", 0)):
        latent_channels = encoder_out // 2
    values: dict[str, Any] = {
        "in_channels": dim("encoder.conv_in.weight", 1) or defaults.in_channels,
        "out_channels": dim("decoder.conv_out.weight", 0) or defaults.out_channels,
        "latent_channels": latent_channels or defaults.latent_channels,
        "block_out_channels": tuple(block_out_channels),
        "layers_per_block": len(_indices(state_dict, "encoder.down_blocks.0.resnets."))
        or defaults.layers_per_block,
        "norm_num_groups": norm_num_groups,
        "use_quant_conv": any(k.startswith("quant_conv.") for k in state_dict),
        "use_post_quant_conv": any(k.startswith("post_quant_conv.") for k in state_dict),
        "mid_block_add_attention": any(
            k.startswith(("encoder.mid_block.attentions.", "decoder.mid_block.attentions."))
            for k in state_dict
        ),
    }
    values.update(overrides)
    return SDVAEConfig(**values)


def diffusers_vae_params(
    state_dict: Mapping[str, Any], config: SDVAEConfig | None = None
) -> dict[str, Any]:
    """Flax params (nested dict of float32 numpy arrays) of `SDVAE(config)` from diffusers weights.

    `config` defaults to the one inferred from the state dict's shapes. Raises ValueError naming
    every unknown key, missing key and misshaped weight.
    """
    if any(k.startswith(("first_stage_model.", "encoder.down.")) for k in state_dict):
        raise ValueError(
            "this is an original (CompVis/LDM) VAE checkpoint; convert it to the diffusers "
            "AutoencoderKL layout first"
        )
    if config is None:
        config = infer_sd_vae_config(state_dict)

    weights: dict[str, Any] = {}
    source_key: dict[str, str] = {}
    duplicated = []
    for key, value in state_dict.items():
        canonical = _canonical_key(key)
        if canonical in weights:
            duplicated.append(key)
        weights[canonical] = value
        source_key[canonical] = key

    expected = {
        flax_path_to_diffusers_key(path): (path, shape)
        for path, shape in sd_vae_param_shapes(config).items()
    }
    unknown = [source_key[key] for key in weights if key not in expected]
    missing, misshaped = [], []
    params: dict[str, Any] = {}
    for key, (path, flax_shape) in expected.items():
        if key not in weights:
            missing.append(key)
            continue
        value = np.asarray(weights[key])
        if value.ndim == 4 and _ATTENTION_WEIGHT_KEY.match(key) and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        want = _torch_shape(flax_shape)
        if value.shape != want:
            misshaped.append(f"{source_key[key]}: {tuple(value.shape)}, expected {want}")
            continue
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = _to_flax(value)

    problems = []
    for label, keys in (
        ("unknown keys", unknown),
        ("missing keys", missing),
        ("wrong shapes", misshaped),
        ("duplicated keys (legacy and current names)", duplicated),
    ):
        if keys:
            problems.append(f"{label} ({len(keys)}): " + ", ".join(sorted(keys)))
    if problems:
        raise ValueError(
            f"state dict does not match AutoencoderKL {config}:\n" + "\n".join(problems)
        )
    return params


def _weights_file(path: pathlib.Path) -> pathlib.Path:
    """The weights file of a diffusers VAE file, directory, or pipeline directory (`vae/`)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or directory: {path}")
    for directory in (path, path / "vae"):
        for name in WEIGHTS_NAMES:
            if (directory / name).is_file():
                return directory / name
    raise FileNotFoundError(f"{path} holds none of {', '.join(WEIGHTS_NAMES)} (nor vae/ with one)")


def _check_safetensors_layout(path: pathlib.Path) -> None:
    """Refuses a truncated `.safetensors` file or one whose header declares data past its end.

    Layout: 8-byte little-endian header length H, a JSON header of H bytes mapping names to
    {dtype, shape, data_offsets: [begin, end]} (offsets into the data after the header).
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        header_size = int.from_bytes(prefix, "little")
        if header_size > min(size - 8, SAFETENSORS_MAX_HEADER):
            raise ValueError(
                f"{path}: safetensors header declares {header_size} bytes but the file has "
                f"{size - 8} after the length (limit {SAFETENSORS_MAX_HEADER}); truncated or "
                "not a safetensors file"
            )
        try:
            header = json.loads(file.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    data_size = size - 8 - header_size
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise ValueError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r:.100}")
        if offsets[1] > data_size:
            raise ValueError(
                f"{path}: tensor {name!r} declares data up to byte {offsets[1]} but the file "
                f"holds {data_size} data bytes; truncated or corrupt"
            )


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    _check_safetensors_layout(path)
    try:
        return load_file(path)
    except SafetensorError as error:
        raise ValueError(f"{path}: invalid safetensors file ({error})") from error


def _read_torch_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"reading {path.name} needs PyTorch (pip install torch); a .safetensors file does not"
        ) from err
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() for k, v in state_dict.items()}


def read_diffusers_vae(path: str | pathlib.Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """(state dict of numpy arrays, parsed config.json or None) of a diffusers VAE.

    `path` is a weights file (`.safetensors` or `.bin`; config.json is looked for beside it), a
    VAE directory, or a pipeline directory with a `vae/` subdirectory.
    """
    weights_file = _weights_file(pathlib.Path(path))
    if weights_file.suffix == ".safetensors":
        state_dict = _read_safetensors(weights_file)
    elif weights_file.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        state_dict = _read_torch_bin(weights_file)
    else:
        raise ValueError(f"unsupported weights file type: {weights_file}")
    config_file = weights_file.parent / CONFIG_NAME
    config = json.loads(config_file.read_text()) if config_file.is_file() else None
    return state_dict, config
