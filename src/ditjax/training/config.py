"""Checks a training config before any compilation, fills in what the dataset records, and
builds the model it names."""

from __future__ import annotations

import copy
import os
import pathlib
import runpy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from etils import epath

from ditjax.models import (
    BLOCK_TYPES,
    MODEL_NAMES,
    REMAT_POLICIES,
    DiT,
    check_attention_impl,
    create_model,
    parse_model_name,
)
from ditjax.models.registry import DTYPES
from ditjax.parallel import resolve_mesh_shape
from ditjax.training.optimizer import LR_DECAYS

if TYPE_CHECKING:
    import ml_collections

# Fields that 0 leaves to the latent dataset's description (see resolve_dataset_fields).
DATASET_FIELDS = ("image_size", "latent_size", "latent_channels", "num_classes")
DEFAULT_PREVIEW_CLASSES = 8


class ConfigError(ValueError):
    """A config field that cannot work; the message starts with the field's name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"config.{field}: {message}")
        self.field = field


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(field, message)


def build_model(config: ml_collections.ConfigDict) -> DiT:
    """The DiT a config describes."""
    overrides = dict(config.model_overrides)
    try:
        return create_model(
            config.model,
            input_size=config.latent_size,
            in_channels=config.latent_channels,
            num_classes=config.num_classes,
            class_dropout_prob=config.class_dropout_prob,
            learn_sigma=config.learn_sigma,
            block_type=config.block_type,
            dtype=DTYPES[config.dtype],
            scan_blocks=config.scan_blocks,
            remat_policy=config.remat,
            attention_impl=config.attention_impl or None,
            **overrides,
        )
    except ValueError as error:
        raise ConfigError("model_overrides" if overrides else "model", str(error)) from None


def _dataset_image_size(info: Mapping[str, Any]) -> int | None:
    if "image_size" in info:
        return int(info["image_size"])
    if "downsample" in info:
        return int(info["latent_shape"][0]) * int(info["downsample"])
    return None


def resolve_dataset_fields(
    config: ml_collections.ConfigDict, info: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """A copy of `config` with the fields of DATASET_FIELDS that are 0 taken from the latent
    dataset's description `info` (see `read_latent_info`), and an empty `preview_labels` made
    the first classes.

    A set field must agree with the dataset (num_classes may exceed the dataset's class count,
    e.g. a 1000-class model on part of ImageNet); otherwise ConfigError names the field.
    """
    where = f"dataset {config.dataset_dir}"
    height, width, channels = (int(n) for n in info["latent_shape"])
    dataset_classes = int(info["num_classes"])
    _check(
        height == width,
        "latent_size",
        f"{where} holds non-square latents {height} x {width}; DiT needs square ones",
    )
    resolved = copy.deepcopy(config)
    found = {"latent_size": height, "latent_channels": channels}
    image_size = _dataset_image_size(info)
    if image_size is not None:
        found["image_size"] = image_size
    for field in DATASET_FIELDS:
        value = config[field]
        if field == "num_classes":
            _check(
                value == 0 or value >= dataset_classes,
                field,
                f"{value}, but {where} has {dataset_classes} classes (0 takes the dataset's)",
            )
            resolved[field] = value or dataset_classes
            continue
        if field not in found:
            _check(value != 0, field, f"{where} does not record it; set it in the config")
            continue
        _check(
            value in (0, found[field]),
            field,
            f"{value}, but {where} holds {found[field]} (latents {height} x {width} x "
            f"{channels} of {image_size} px images; 0 takes the dataset's value)",
        )
        resolved[field] = found[field]
    if not tuple(config.preview_labels):
        resolved.preview_labels = tuple(range(min(DEFAULT_PREVIEW_CLASSES, resolved.num_classes)))
    return resolved


def validate_config(
    config: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1
) -> tuple[int, int]:
    """Raises ConfigError naming the first impossible field; returns the (data, fsdp) mesh.

    Fields left to the dataset (0) must have been filled by `resolve_dataset_fields`.
    """
    for field in DATASET_FIELDS:
        _check(
            config[field] != 0,
            field,
            "0 (take it from the dataset) is not resolved yet; call resolve_dataset_fields",
        )
    _check(config.model in MODEL_NAMES, "model", f"must be one of {', '.join(MODEL_NAMES)}")
    _check(config.block_type in BLOCK_TYPES, "block_type", f"must be one of {BLOCK_TYPES}")
    _check(config.dtype in DTYPES, "dtype", f"must be one of {list(DTYPES)}")
    _check(config.remat in REMAT_POLICIES, "remat", f"must be one of {REMAT_POLICIES}")
    try:
        check_attention_impl(config.attention_impl)
    except ValueError as error:
        raise ConfigError("attention_impl", str(error)) from None
    _check(config.num_classes >= 1, "num_classes", "must be positive")
    _check(0 <= config.class_dropout_prob < 1, "class_dropout_prob", "must be in [0, 1)")
    _check(config.latent_channels >= 1, "latent_channels", "must be positive")
    _check(config.image_size >= 1, "image_size", "must be positive")
    patch_size = config.model_overrides.get(
        "patch_size", parse_model_name(config.model)["patch_size"]
    )
    _check(
        config.latent_size >= 1 and config.latent_size % patch_size == 0,
        "latent_size",
        f"{config.latent_size} is not divisible by the patch size {patch_size} "
        f"(image_size must be a multiple of 8 x patch for the SD VAE)",
    )
    model = build_model(config)
    _check(config.diffusion_steps >= 1, "diffusion_steps", "must be positive")
    _check(config.min_snr_gamma >= 0, "min_snr_gamma", "must be >= 0 (0: uniform)")
    _check(config.global_batch_size >= 1, "global_batch_size", "must be positive")
    _check(
        config.global_batch_size % num_devices == 0,
        "global_batch_size",
        f"{config.global_batch_size} is not divisible by the {num_devices} devices",
    )
    _check(
        config.global_batch_size % num_processes == 0,
        "global_batch_size",
        f"{config.global_batch_size} is not divisible by the {num_processes} processes",
    )
    _check(config.learning_rate > 0, "learning_rate", "must be positive")
    _check(config.warmup_steps >= 0, "warmup_steps", "must be >= 0")
    _check(config.lr_decay in LR_DECAYS, "lr_decay", f"must be one of {LR_DECAYS}")
    _check(0 <= config.lr_final_fraction <= 1, "lr_final_fraction", "must be in [0, 1]")
    _check(config.weight_decay >= 0, "weight_decay", "must be >= 0")
    _check(0 <= config.adam_b1 < 1, "adam_b1", "must be in [0, 1)")
    _check(0 <= config.adam_b2 < 1, "adam_b2", "must be in [0, 1)")
    _check(config.grad_clip_norm >= 0, "grad_clip_norm", "must be >= 0 (0 disables)")
    _check(0 <= config.ema_decay < 1, "ema_decay", "must be in [0, 1)")
    _check(config.total_steps >= 1, "total_steps", "must be positive")
    _check(
        config.time_limit_minutes >= 0,
        "time_limit_minutes",
        "must be >= 0 (0: no limit)",
    )
    _check(config.log_every >= 1, "log_every", "must be positive")
    _check(config.checkpoint_every >= 1, "checkpoint_every", "must be positive")
    _check(config.keep_checkpoints >= 1, "keep_checkpoints", "must be positive")
    _check(config.keep_every >= 0, "keep_every", "must be >= 0 (0 disables)")
    _check(config.sample_every >= 0, "sample_every", "must be >= 0 (0 disables)")
    check_eval_config(config)
    _check(config.profile_steps >= 0, "profile_steps", "must be >= 0")
    _check(config.data_workers >= 0, "data_workers", "must be >= 0")
    labels = tuple(config.preview_labels)
    _check(
        len(labels) > 0 and all(0 <= y < config.num_classes for y in labels),
        "preview_labels",
        f"must be a non-empty list of classes in [0, {config.num_classes})",
    )
    _check(config.preview_cfg_scale >= 1, "preview_cfg_scale", "must be >= 1")
    sampler = config.preview_sampler
    steps = sampler[len("ddim") :] if sampler.startswith("ddim") else sampler
    _check(
        steps.isdigit() and 1 <= int(steps) <= config.diffusion_steps,
        "preview_sampler",
        f"must be 'N' (DDPM) or 'ddimN' with 1 <= N <= {config.diffusion_steps}",
    )
    _check(bool(config.dataset_dir), "dataset_dir", "must name a latent dataset directory")
    try:
        mesh = resolve_mesh_shape(tuple(config.mesh_shape), num_devices)
    except ValueError as error:
        raise ConfigError("mesh_shape", str(error)) from None
    _check(
        model.hidden_size % mesh[1] == 0,
        "mesh_shape",
        f"fsdp size {mesh[1]} does not divide the model width {model.hidden_size}",
    )
    return mesh


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of a config file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    return runpy.run_path(str(path))["get_config"]()


def check_eval_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unusable `eval_*` field (when `eval_every` > 0)."""
    if config.get("eval_every", 0) < 0:
        raise ConfigError("eval_every", "must be >= 0 (0 disables)")
    if config.get("eval_every", 0) == 0:
        return
    if config.eval_num_samples < 2:
        raise ConfigError("eval_num_samples", "must be at least 2 (FID needs a covariance)")
    if config.eval_per_device_batch < 1:
        raise ConfigError("eval_per_device_batch", "must be positive")
    if config.eval_cfg_scale < 1.0:
        raise ConfigError("eval_cfg_scale", "must be >= 1 (1: no guidance)")
    if config.eval_steps < 1 or config.eval_steps > config.diffusion_steps:
        raise ConfigError("eval_steps", f"must be in [1, {config.diffusion_steps}]")
    if config.eval_sampler not in ("ddpm", "ddim", "dpmpp2m"):
        raise ConfigError("eval_sampler", "must be one of ddpm, ddim, dpmpp2m")
    if config.eval_guidance not in ("all", "first3"):
        raise ConfigError("eval_guidance", "must be all or first3")
    for field in ("eval_reference", "eval_inception"):
        path = config[field]
        if not path:
            raise ConfigError(field, "must name a file when eval_every > 0")
        if not epath.Path(path).is_file():
            raise ConfigError(field, f"{path} is not a file")
