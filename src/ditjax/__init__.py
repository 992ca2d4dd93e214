"""Diffusion Transformers (DiT) in JAX/Flax."""
