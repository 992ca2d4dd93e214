"""`python -m ditjax.extract_latents --source=folder:PATH --autoencoder=sd-vae:PATH
--image_size=256 --out=DIR`: encode an image dataset once into a latent dataset."""

from __future__ import annotations

import sys

from absl import app, flags

from ditjax.autoencoder import create_autoencoder
from ditjax.data.extract import extract_latents
from ditjax.data.sources import open_source

_SOURCE = flags.DEFINE_string(
    "source", None, "tfds:NAME[:SPLIT] (e.g. tfds:imagenet2012, tfds:demo_shapes) or folder:PATH"
)
_AUTOENCODER = flags.DEFINE_string("autoencoder", "identity", "identity | sd-vae:PATH")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Side of the ADM center crop, in pixels.")
_OUT = flags.DEFINE_string("out", None, "Directory of the latent dataset to write.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (tfds: sources).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images encoded per device call.")
_SHARD_SIZE = flags.DEFINE_integer("examples_per_shard", 2048, "Examples per ArrayRecord shard.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name, value in (("--source", _SOURCE.value), ("--out", _OUT.value)):
        if not value:
            raise app.UsageError(f"{name} is required")
    for name, value in (
        ("--image_size", _IMAGE_SIZE.value),
        ("--batch_size", _BATCH_SIZE.value),
        ("--examples_per_shard", _SHARD_SIZE.value),
    ):
        if value < 1:
            raise app.UsageError(f"{name} must be positive, got {value}")
    try:
        autoencoder = create_autoencoder(_AUTOENCODER.value)
        source = open_source(_SOURCE.value, data_dir=_DATA_DIR.value)
        extract_latents(
            source,
            autoencoder,
            _IMAGE_SIZE.value,
            _OUT.value,
            batch_size=_BATCH_SIZE.value,
            examples_per_shard=_SHARD_SIZE.value,
            source_spec=_SOURCE.value,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
