"""The autoencoder interface: images <-> latent posterior moments."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax


@runtime_checkable
class Autoencoder(Protocol):
    """What training, extraction and sampling need from an autoencoder.

    `encode`: images (N, H, W, 3) in [-1, 1] -> moments (N, H/f, W/f, 2C), the posterior mean
    in the first C channels and its log-variance in the last C.
    `decode`: latents (N, h, w, C) in the autoencoder's own units -> images (N, H, W, 3) in
    about [-1, 1]. Training multiplies posterior samples by `scale`; sampling divides by it
    before decoding. Both are pure and jittable; an implementation that holds parameters jits
    them itself with the parameters as arguments, so that callers can call `encode` and
    `decode` directly instead of closing over the parameters in a jit of their own (which
    would embed them in the compiled program as constants).
    """

    name: str

    @property
    def latent_channels(self) -> int: ...

    @property
    def downsample(self) -> int: ...

    @property
    def scale(self) -> float: ...

    def encode(self, images: jax.Array) -> jax.Array: ...

    def decode(self, latents: jax.Array) -> jax.Array: ...
