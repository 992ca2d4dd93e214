"""The diffusion schedule: betas, respacing and every derived constant, as one pytree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

NOISE_SCHEDULES = ("linear",)


def linear_betas(num_timesteps: int) -> np.ndarray:
    """The DDPM linear schedule in float64, scaled so any T matches the 1000-step one."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> list[int]:
    """The original timesteps kept by a respacing, sorted.

    `section_counts` is "ddimN" (the DDIM stride that gives exactly N steps), a comma
    separated string such as "10,10,5" (the schedule is cut into equal sections and each
    keeps that many evenly strided steps), or a list of ints with the same meaning.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                steps = range(0, num_timesteps, stride)
                if len(steps) == desired:
                    return list(steps)
            raise ValueError(f"cannot make exactly {desired} DDIM steps out of {num_timesteps}")
        section_counts = [int(part) for part in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start = 0
    kept: set[int] = set()
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.add(start + round(position))
            position += stride
        start += size
    return sorted(kept)


@struct.dataclass
class Diffusion:
    """Per-step constants of a (possibly respaced) Gaussian diffusion, float32, shape (T,).

    `timestep_map[i]` is the original timestep of step i, which is what the model sees.
    """

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array
    log_betas: jax.Array
    fixed_large_log_variance: jax.Array
    timestep_map: jax.Array
    num_timesteps: int = struct.field(pytree_node=False)
    learn_sigma: bool = struct.field(pytree_node=False, default=True)


def diffusion_from_betas(
    betas: np.ndarray, timestep_map: np.ndarray, learn_sigma: bool
) -> Diffusion:
    """All constants derived in float64 from `betas`, then stored as float32."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
        raise ValueError("betas must be a 1-D array in (0, 1]")
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
    if len(betas) > 1:
        clipped = np.append(posterior_variance[1], posterior_variance[1:])
        fixed_large = np.append(posterior_variance[1], betas[1:])
    else:
        clipped = np.array([betas[0]])
        fixed_large = betas.copy()
    constants = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(clipped),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        "log_betas": np.log(betas),
        "fixed_large_log_variance": np.log(fixed_large),
    }
    arrays = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in constants.items()}
    return Diffusion(
        **arrays,
        timestep_map=jnp.asarray(timestep_map, dtype=jnp.int32),
        num_timesteps=len(betas),
        learn_sigma=learn_sigma,
    )


def create_diffusion(
    timestep_respacing: str | list[int] = "",
    *,
    noise_schedule: str = "linear",
    learn_sigma: bool = True,
    diffusion_steps: int = 1000,
) -> Diffusion:
    """A Gaussian diffusion with `diffusion_steps` steps, optionally respaced.

    `timestep_respacing`: "" keeps all steps; "250", "ddim50", "10,10,5" mean what the
    reference's strings mean. The model is eps-predicting; with `learn_sigma` its second
    half of channels interpolates the log variance between the posterior's and beta's.
    """
    if noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {noise_schedule!r}")
    if diffusion_steps < 1:
        raise ValueError(f"diffusion_steps must be positive, got {diffusion_steps}")
    base_betas = linear_betas(diffusion_steps)
    if timestep_respacing in ("", None):
        timestep_respacing = [diffusion_steps]
    try:
        kept = space_timesteps(diffusion_steps, timestep_respacing)
    except ValueError as error:
        raise ValueError(f"invalid timestep_respacing {timestep_respacing!r}: {error}") from None
    base_ac = np.cumprod(1.0 - base_betas)
    kept_ac = base_ac[kept]
    prev_ac = np.append(1.0, kept_ac[:-1])
    new_betas = 1.0 - kept_ac / prev_ac
    return diffusion_from_betas(new_betas, np.asarray(kept), learn_sigma)
