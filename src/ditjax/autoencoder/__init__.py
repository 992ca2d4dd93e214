"""Autoencoders behind one interface: `identity` (pixel space) and the SD VAE."""

from __future__ import annotations

from ditjax.autoencoder.base import Autoencoder
from ditjax.autoencoder.identity import IdentityAutoencoder

AUTOENCODER_SPECS = ("identity", "sd-vae:PATH")


def create_autoencoder(spec: str) -> Autoencoder:
    """The autoencoder named by `spec`: "identity" or "sd-vae:PATH" (a diffusers VAE dir/file)."""
    if spec == "identity":
        return IdentityAutoencoder()
    if spec.startswith("sd-vae:") and len(spec) > len("sd-vae:"):
        from ditjax.autoencoder.sd_vae import load_sd_vae

        return load_sd_vae(spec[len("sd-vae:") :])
    raise ValueError(f"unknown autoencoder {spec!r}; expected one of {AUTOENCODER_SPECS}")


__all__ = ["AUTOENCODER_SPECS", "Autoencoder", "IdentityAutoencoder", "create_autoencoder"]
