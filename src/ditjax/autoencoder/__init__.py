"""Autoencoders behind one interface: `identity` (pixel space) and the SD VAE."""

from __future__ import annotations

from collections.abc import Callable

from ditjax.autoencoder.base import Autoencoder
from ditjax.autoencoder.identity import IdentityAutoencoder


def _identity(argument: str) -> Autoencoder:
    if argument:
        raise ValueError(f"the identity autoencoder takes no argument, got {argument!r}")
    return IdentityAutoencoder()


def _sd_vae(path: str) -> Autoencoder:
    if not path:
        raise ValueError("sd-vae needs a path: sd-vae:PATH (a diffusers VAE directory or file)")
    from ditjax.autoencoder.sd_vae import load_sd_vae

    return load_sd_vae(path)


# Spec prefix -> (spec form shown in errors, factory of the part after "prefix:").
_REGISTRY: dict[str, tuple[str, Callable[[str], Autoencoder]]] = {
    "identity": ("identity", _identity),
    "sd-vae": ("sd-vae:PATH", _sd_vae),
}
AUTOENCODER_SPECS = tuple(form for form, _ in _REGISTRY.values())


def parse_autoencoder_spec(spec: str) -> tuple[str, str]:
    """Splits `spec` into (kind, argument) and checks its form without loading anything."""
    kind, _, argument = spec.partition(":")
    if kind not in _REGISTRY:
        raise ValueError(
            f"unknown autoencoder {spec!r}; valid forms: {', '.join(AUTOENCODER_SPECS)}"
        )
    form = _REGISTRY[kind][0]
    if (":" in form) != bool(argument):
        raise ValueError(f"invalid autoencoder {spec!r}; expected the form {form}")
    return kind, argument


def create_autoencoder(spec: str) -> Autoencoder:
    """The autoencoder named by `spec`: "identity" or "sd-vae:PATH" (a diffusers VAE)."""
    kind, argument = parse_autoencoder_spec(spec)
    return _REGISTRY[kind][1](argument)


__all__ = [
    "AUTOENCODER_SPECS",
    "Autoencoder",
    "IdentityAutoencoder",
    "create_autoencoder",
    "parse_autoencoder_spec",
]
