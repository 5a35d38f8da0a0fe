"""Diffusers schedulers with the noise schedule the EasyAnimateV3 / PixArt weights were trained on."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

TRAIN_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                      prediction_type="epsilon")

SCHEDULERS = {
    "dpm++": lambda: DPMSolverMultistepScheduler(**TRAIN_SCHEDULE, algorithm_type="dpmsolver++"),
    "ddim": lambda: DDIMScheduler(**TRAIN_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
    "euler": lambda: EulerDiscreteScheduler(**TRAIN_SCHEDULE),
}


def make_scheduler(name: str) -> SchedulerMixin:
    """A fresh scheduler (they are stateful: one per window)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    return SCHEDULERS[name]()


def denoised_estimate(scheduler: SchedulerMixin, model_input: torch.Tensor, eps: torch.Tensor,
                      t: torch.Tensor) -> torch.Tensor:
    """The clean latent a noise prediction implies at step ``t`` (for previews).

    ``model_input`` is in the variance-preserving form every offered scheduler feeds the model (Euler's
    ``scale_model_input`` turns its sample into it), so x0 = (x - sqrt(1 - a) eps) / sqrt(a), with the cumulative
    alpha ``a`` read at ``t`` (interpolated: Euler's timesteps need not be integers)."""
    table = scheduler.alphas_cumprod.double().numpy()
    alpha = float(np.interp(float(t), np.arange(len(table)), table))
    return (model_input - (1 - alpha) ** 0.5 * eps) / alpha ** 0.5
