"""A synthetic latent dataset for measuring the input pipeline, written by `extract_latents`.

Random images go through a stand-in autoencoder that keeps the spatial size and emits
`channels` latent channels, so the records have exactly the on-disk format (float16 moments
of the image and its flip, a label) and size of a real dataset, e.g. 32 x 32 x 4 for 256 px.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from ditjax.data.extract import ExtractionSummary
    from ditjax.data.sources import SourceExample

# The data stack (TFDS, array_record, grain) is imported where a dataset is written, so that
# the benchmark's model modes run without it.


class RandomImages:
    """`num_examples` random RGB images (size, size) with labels i mod num_classes."""

    def __init__(self, num_examples: int, size: int, num_classes: int, seed: int = 0):
        if num_examples < 1 or size < 1 or num_classes < 1:
            raise ValueError(
                "num_examples, size and num_classes must be positive, got "
                f"{num_examples}, {size}, {num_classes}"
            )
        self._num = num_examples
        self._size = size
        self._seed = seed
        self.class_names = [f"class_{k}" for k in range(num_classes)]

    @property
    def num_examples(self) -> int:
        return self._num

    def __len__(self) -> int:
        return self._num

    def __iter__(self) -> Iterator[SourceExample]:
        return self.iter_range(0, self._num)

    def iter_range(self, start: int, stop: int) -> Iterator[SourceExample]:
        from ditjax.data.sources import SourceExample

        for i in range(start, min(stop, self._num)):
            pixels = np.random.default_rng([self._seed, i]).integers(
                0, 256, (self._size, self._size, 3), np.uint8
            )
            label = i % len(self.class_names)
            yield SourceExample(f"random/{i}", Image.fromarray(pixels), label, None)


class ChannelAutoencoder:
    """A stand-in encoder: images (N, H, W, 3) -> moments (N, H, W, 2C), no downsampling.

    The mean holds the image channels cycled to C channels; the log-variance is a smooth
    function of them. Only for writing datasets of a given latent shape; it cannot decode.
    """

    name = "synthetic"
    downsample = 1
    scale = 0.18215

    def __init__(self, channels: int):
        self.latent_channels = channels

    def encode(self, images: jax.Array) -> jax.Array:
        c = self.latent_channels
        mean = jnp.take(images.astype(jnp.float32), jnp.arange(c) % 3, axis=-1)
        return jnp.concatenate([mean, -4.0 + jnp.tanh(mean)], axis=-1)

    def decode(self, latents: jax.Array) -> jax.Array:
        raise NotImplementedError("the synthetic autoencoder only writes datasets")


def write_synthetic_latents(
    out_dir: str | os.PathLike,
    *,
    num_examples: int,
    latent_size: int = 32,
    channels: int = 4,
    num_classes: int = 1000,
    seed: int = 0,
) -> ExtractionSummary:
    """Writes (or reuses, if complete) a latent dataset of `num_examples` records with
    (latent_size, latent_size, channels) float16 moments at `out_dir`."""
    from ditjax.data.extract import extract_latents

    return extract_latents(
        RandomImages(num_examples, latent_size, num_classes, seed),
        ChannelAutoencoder(channels),
        latent_size,
        out_dir,
        batch_size=256,
        examples_per_shard=1024,
        progress=False,
        source_spec=f"random:{num_examples}:{seed}",
        autoencoder_spec=f"synthetic:{channels}",
    )
