"""Gaussian diffusion: schedule, closed forms, hybrid loss, samplers and guidance."""

from ditjax.diffusion.dpm_solver import dpm_solver_timesteps, dpmpp_2m_sample_loop
from ditjax.diffusion.gaussian import (
    p_mean_variance,
    predict_eps_from_xstart,
    predict_xstart_from_eps,
    q_posterior_mean_variance,
    q_sample,
)
from ditjax.diffusion.guidance import GUIDANCE_MODES, guided_model_fn
from ditjax.diffusion.losses import (
    discretized_gaussian_log_likelihood,
    normal_kl,
    training_losses,
    vb_terms_bpd,
)
from ditjax.diffusion.samplers import ddim_sample_loop, p_sample_loop, step_noise
from ditjax.diffusion.schedule import (
    Diffusion,
    create_diffusion,
    diffusion_from_betas,
    linear_betas,
    space_timesteps,
)

__all__ = [
    "GUIDANCE_MODES",
    "Diffusion",
    "create_diffusion",
    "ddim_sample_loop",
    "diffusion_from_betas",
    "discretized_gaussian_log_likelihood",
    "dpm_solver_timesteps",
    "dpmpp_2m_sample_loop",
    "guided_model_fn",
    "linear_betas",
    "normal_kl",
    "p_mean_variance",
    "p_sample_loop",
    "predict_eps_from_xstart",
    "predict_xstart_from_eps",
    "q_posterior_mean_variance",
    "q_sample",
    "space_timesteps",
    "step_noise",
    "training_losses",
    "vb_terms_bpd",
]
