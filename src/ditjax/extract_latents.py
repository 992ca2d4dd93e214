"""Encode an image dataset once into a latent dataset for training.

  python -m ditjax.extract_latents --source=folder:PATH --autoencoder=sd-vae:PATH \
      --image_size=256 --out=DIR
  python -m ditjax.extract_latents --source=demo --autoencoder=identity --image_size=32 \
      --out=DIR

`--source=demo` builds the embedded demo set with TFDS (in --data_dir, by default
`<out>/../tfds`) and extracts its train split.

Started on every host of a pod or cluster (as `ditjax.train` is), the processes share the
shards; --out must then be storage they all see (gs://bucket/path, or a shared file system).
An interrupted run resumes on any number of processes.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from ditjax.autoencoder import AUTOENCODER_SPECS, parse_autoencoder_spec
from ditjax.data.sources import SOURCE_FORMS, parse_source_spec
from ditjax.data.storage import as_path
from ditjax.host_memory import retain_freed_host_memory
from ditjax.parallel.process_flags import initialize_from_flags

_SOURCE = flags.DEFINE_string(
    "source", None, f"One of {', '.join(SOURCE_FORMS)} (e.g. tfds:imagenet2012, demo)."
)
_AUTOENCODER = flags.DEFINE_string(
    "autoencoder", "identity", f"One of {', '.join(AUTOENCODER_SPECS)}."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Side of the ADM center crop, in pixels.")
_OUT = flags.DEFINE_string("out", None, "Directory of the latent dataset to write.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory of tfds: sources (demo: default <out>/../tfds)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images encoded per device call.")
_SHARD_SIZE = flags.DEFINE_integer("examples_per_shard", 2048, "Examples per ArrayRecord shard.")


def _validated_flags() -> tuple[str, str, str | None]:
    """Checks every flag before any expensive work; -> (source spec, out dir, TFDS data dir)."""
    for flag, value in (("--source", _SOURCE.value), ("--out", _OUT.value)):
        if not value:
            raise app.UsageError(f"{flag} is required")
    for flag, value in (
        ("--image_size", _IMAGE_SIZE.value),
        ("--batch_size", _BATCH_SIZE.value),
        ("--examples_per_shard", _SHARD_SIZE.value),
    ):
        if value < 1:
            raise app.UsageError(f"{flag} must be positive, got {value}")
    try:
        kind, location, _ = parse_source_spec(_SOURCE.value)
    except ValueError as error:
        raise app.UsageError(f"--source: {error}") from None
    try:
        parse_autoencoder_spec(_AUTOENCODER.value)
    except ValueError as error:
        raise app.UsageError(f"--autoencoder: {error}") from None
    if kind == "folder" and not os.path.isdir(location):
        raise app.UsageError(f"--source: image folder {location} does not exist")
    out = os.fspath(as_path(_OUT.value))
    data_dir = _DATA_DIR.value
    if _SOURCE.value == "demo" and data_dir is None:
        data_dir = os.path.join(os.path.dirname(out), "tfds")
    return _SOURCE.value, out, data_dir


def _already_extracted(out: str, source_spec: str) -> bool:
    """Whether `out` holds a complete dataset made with these flags (checked without loading
    the autoencoder)."""
    from ditjax.data.latent_format import INFO_FILE, read_latent_info

    if not (as_path(out) / INFO_FILE).exists():
        return False
    info = read_latent_info(out)
    return (
        info.get("autoencoder_spec") == _AUTOENCODER.value
        and info.get("image_size") == _IMAGE_SIZE.value
        and info.get("source") == source_spec
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    source_spec, out, data_dir = _validated_flags()
    initialize_from_flags()
    if _already_extracted(out, source_spec):
        print(f"{out} already holds this complete latent dataset; nothing to do")
        return

    from ditjax.autoencoder import create_autoencoder
    from ditjax.data.extract import extract_latents
    from ditjax.data.sources import open_source

    try:
        autoencoder = create_autoencoder(_AUTOENCODER.value)
        source = open_source(source_spec, data_dir=data_dir)
        extract_latents(
            source,
            autoencoder,
            _IMAGE_SIZE.value,
            out,
            batch_size=_BATCH_SIZE.value,
            examples_per_shard=_SHARD_SIZE.value,
            source_spec=source_spec,
            autoencoder_spec=_AUTOENCODER.value,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    retain_freed_host_memory()
    app.run(main)
