"""Config fields left to the latent dataset: filled from its description, checked against it."""

import pytest

from ditjax.training.config import (
    DATASET_FIELDS,
    ConfigError,
    resolve_dataset_fields,
    validate_config,
)
from training_fixtures import load_config

DIGITS_INFO = {
    "latent_shape": [32, 32, 3],
    "image_size": 32,
    "downsample": 1,
    "num_classes": 5,
    "class_names": ["0", "1", "2", "3", "4"],
}


def open_config(**fields):
    config = load_config("demo")
    config.image_size = 0
    for name, value in fields.items():
        config[name] = value
    return config


def test_zero_fields_are_taken_from_the_dataset_and_the_config_is_not_changed():
    config = open_config()
    resolved = resolve_dataset_fields(config, DIGITS_INFO)
    assert (resolved.image_size, resolved.latent_size, resolved.latent_channels) == (32, 32, 3)
    assert resolved.num_classes == 5
    assert tuple(resolved.preview_labels) == (0, 1, 2, 3, 4)
    assert all(config[field] == 0 for field in DATASET_FIELDS)
    assert tuple(config.preview_labels) == ()
    assert validate_config(resolved, num_devices=1) == (1, 1)


def test_set_fields_that_agree_are_kept():
    config = open_config(image_size=32, latent_size=32, latent_channels=3, num_classes=5)
    config.preview_labels = (4, 0)
    resolved = resolve_dataset_fields(config, DIGITS_INFO)
    assert resolved.to_dict() == config.to_dict()


def test_more_classes_than_the_dataset_is_allowed():
    assert resolve_dataset_fields(open_config(num_classes=1000), DIGITS_INFO).num_classes == 1000


def test_preview_defaults_to_the_first_eight_classes():
    info = {**DIGITS_INFO, "num_classes": 20}
    assert tuple(resolve_dataset_fields(open_config(), info).preview_labels) == tuple(range(8))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_size", 16, "16, but dataset .* holds 32"),
        ("latent_size", 16, "16, but dataset .* holds 32"),
        ("latent_channels", 4, "4, but dataset .* holds 3"),
        ("num_classes", 4, "4, but dataset .* has 5 classes"),
        ("latent_size", -1, "-1, but dataset"),
    ],
)
def test_a_set_field_that_disagrees_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=f"config.{field}: {message}"):
        resolve_dataset_fields(open_config(**{field: value}), DIGITS_INFO)


def test_older_description_without_image_size_uses_the_downsampling():
    info = {k: v for k, v in DIGITS_INFO.items() if k != "image_size"}
    info.update(latent_shape=[4, 4, 4], downsample=8)
    assert resolve_dataset_fields(open_config(), info).image_size == 32


def test_image_size_the_dataset_does_not_record_must_be_set():
    info = {"latent_shape": [4, 4, 4], "num_classes": 3}
    with pytest.raises(ConfigError, match=r"config\.image_size: .* does not record it"):
        resolve_dataset_fields(open_config(), info)
    assert resolve_dataset_fields(open_config(image_size=32), info).image_size == 32


def test_non_square_latents_are_refused():
    info = {**DIGITS_INFO, "latent_shape": [32, 16, 3]}
    with pytest.raises(ConfigError, match=r"config\.latent_size: .* non-square"):
        resolve_dataset_fields(open_config(), info)
