"""The diffusion process the backbone was trained with, and DiTalker's training losses.

Diffusion (official ``SpacedDiffusion`` as the trainer builds it): 1000 steps of linear betas 1e-4 .. 2e-2, the
model predicts the noise and a learned-range variance (8 output channels = eps | v). Timesteps are drawn
log-normally (``t = sigmoid(u) * 1000``, u ~ N(0, 1)) as the official trainer does, or uniformly
(``diffusion.timestep_sampling``: a model trained from nothing needs the high-noise steps log-normal rarely draws).

Losses (each weight in the config; 0 switches a term off):

* ``rec``: MSE between true and predicted noise;
* ``eye``: the same squared error inside the union eye mask, downsampled to the latent grid (lambda_eye);
* ``vb``: the variational-bound term that trains the learned variance, with the mean detached (official);
* ``id``: REPA, the negative cosine between the REPA head's tokens of block d and DINOv2 patch features of
  the same frame on the same patch grid (lambda_id);
* ``sync``: lambda_sync * (MSE(z0_hat, z0) + lambda_s * SyncNet BCE), where z0_hat is estimated from z_t and the
  predicted noise, 2 of its latent frames are decoded (8 frames, with gradients through the VAE decoder) and
  5 consecutive frames' mouth regions are scored against their audio by a frozen SyncNet.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ditalker_core.models.syncnet import MEL_WINDOW, SyncNet, face_box, mel_start, mouth_crops, sync_loss


class GaussianDiffusion:
    """Linear-beta DDPM quantities as float64 tables, gathered per sample in float32."""

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2):
        scale = 1000 / num_timesteps  # guided-diffusion's get_named_beta_schedule("linear")
        betas = np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)
        alphas_cumprod = np.cumprod(1.0 - betas)
        previous = np.append(1.0, alphas_cumprod[:-1])
        posterior_var = betas * (1 - previous) / (1 - alphas_cumprod)
        self.num_timesteps = num_timesteps
        self.tables = {
            "sqrt_ac": np.sqrt(alphas_cumprod),
            "sqrt_1m_ac": np.sqrt(1.0 - alphas_cumprod),
            "sqrt_recip_ac": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_ac": np.sqrt(1.0 / alphas_cumprod - 1),
            "post_log_var": np.log(np.append(posterior_var[1], posterior_var[1:])),  # clipped at t = 0
            "post_c0": betas * np.sqrt(previous) / (1 - alphas_cumprod),
            "post_ct": (1 - previous) * np.sqrt(1 - betas) / (1 - alphas_cumprod),
            "log_betas": np.log(betas),
        }

    def gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = torch.from_numpy(self.tables[name]).to(t.device)[t].float()
        return values.view(-1, *([1] * (like.ndim - 1)))

    def sample_timesteps(self, batch: int, generator: torch.Generator, mode: str = "lognorm") -> torch.Tensor:
        if mode == "uniform":
            return torch.randint(0, self.num_timesteps, (batch,), generator=generator)
        u = torch.randn(batch, generator=generator)
        t = (torch.sigmoid(u) * self.num_timesteps).to(torch.int64)
        return t.clamp(0, self.num_timesteps - 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.gather("sqrt_ac", t, x0) * x0 + self.gather("sqrt_1m_ac", t, x0) * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.gather("sqrt_recip_ac", t, x_t) * x_t - self.gather("sqrt_recipm1_ac", t, x_t) * eps

    def vb_terms(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                 var_values: torch.Tensor) -> torch.Tensor:
        """KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) in bits per dim (the decoder NLL at t = 0), (B,).

        The mean comes from ``eps`` (pass it detached) and the variance interpolates, in log space, between the
        posterior variance and beta_t by ``(v + 1) / 2`` (learned range).
        """
        true_mean = self.gather("post_c0", t, x0) * x0 + self.gather("post_ct", t, x0) * x_t
        true_log_var = self.gather("post_log_var", t, x0)
        frac = (var_values + 1) / 2
        model_log_var = frac * self.gather("log_betas", t, x0) + (1 - frac) * true_log_var
        pred_x0 = self.predict_x0(x_t, t, eps)
        model_mean = self.gather("post_c0", t, x0) * pred_x0 + self.gather("post_ct", t, x0) * x_t
        kl = 0.5 * (-1.0 + model_log_var - true_log_var + torch.exp(true_log_var - model_log_var)
                    + (true_mean - model_mean) ** 2 * torch.exp(-model_log_var))
        kl = kl.flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var).flatten(1).mean(1)
        return torch.where(t == 0, nll / math.log(2.0), kl)


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
                                        ) -> torch.Tensor:
    """Log-likelihood of ``x`` under a Gaussian discretised to 256 bins on [-1, 1] (guided-diffusion)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))


def latent_mask(mask: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """Pixel masks (B, H, W) in [0, 1] -> area-averaged on the latent grid, broadcastable to (B, C, F, h, w)."""
    small = F.interpolate(mask[:, None].float(), size=latent.shape[-2:], mode="area")
    return small[:, :, None].to(latent.dtype)


def reconstruction_losses(eps_hat: torch.Tensor, noise: torch.Tensor, eye_mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise MSE, noise squared error inside the eye mask averaged over all elements, as official)."""
    error = (eps_hat.float() - noise.float()) ** 2
    return error.mean(), region_loss(error, eye_mask)


def region_loss(error: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error inside a pixel-space region mask (B, H, W), averaged over all elements."""
    return (error * latent_mask(mask, error)).mean()


def identity_loss(repa: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """REPA: mean negative cosine similarity between projected tokens and DINOv2 tokens, (B, N, D) each."""
    return -F.cosine_similarity(repa.float(), target.float(), dim=-1).mean()


@torch.no_grad()
def dino_tokens(dinov2: torch.nn.Module, frames: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """RGB frames (B, 3, H, W) in [-1, 1] -> DINOv2 patch features on a ``grid`` patch grid, (B, h*w, D).

    The frame is resized to ``grid * patch_size`` pixels so DINOv2's patches coincide with the DiT's.
    """
    config = dinov2.config
    size = (grid[0] * config.patch_size, grid[1] * config.patch_size)
    pixels = F.interpolate((frames.float() + 1) / 2, size=size, mode="bicubic", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406], device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=pixels.device).view(1, 3, 1, 1)
    pixels = ((pixels.clamp(0, 1) - mean) / std).to(dinov2.dtype)
    hidden = dinov2(pixel_values=pixels).last_hidden_state
    return hidden[:, 1 + getattr(config, "num_register_tokens", 0):]


def repa_chunk(frames: int, grid: tuple[int, int], chunk: int | None, generator: torch.Generator
               ) -> tuple[int, int, slice]:
    """Pick the REPA token chunk: -> (model ``repa_index``, latent frame, slice of that frame's tokens).

    The model projects tokens ``[i * chunk, (i + 1) * chunk)`` of block d; chunks must tile frames so that each
    one lies inside a single frame.
    """
    per_frame = grid[0] * grid[1]
    chunk = chunk or per_frame
    if per_frame % chunk:
        raise ValueError(f"repa_tokens={chunk} does not divide the {per_frame} tokens of a frame; set "
                         f"model.overrides.repa_tokens to a divisor (or null for one whole frame)")
    index = int(torch.randint(0, frames * per_frame // chunk, (1,), generator=generator))
    frame, within = divmod(index * chunk, per_frame)
    return index, frame, slice(within, within + chunk)


def decode_with_grad(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Unscaled latents -> frames in [-1, 1], differentiable (the VAE's chunked decoder without tiling)."""
    z = vae.post_quant_conv(latents.to(vae.dtype))
    chunks = [vae.decoder.decode_window(z[:, :, window], own, expand)
              for window, own, expand in vae.decoder.windows(z.shape[2])]
    return torch.cat(chunks, dim=2)


def sync_losses(vae: torch.nn.Module, syncnet: SyncNet, x0: torch.Tensor, x0_hat: torch.Tensor,
                face_masks: torch.Tensor, mel: torch.Tensor, keep: torch.Tensor, generator: torch.Generator,
                frames: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(latent L2, SyncNet BCE) of the lip-sync loss; samples whose audio was dropped (``keep`` False) give
    no SyncNet term, since without audio there is nothing to be in sync with.

    Latent frames (2k, 2k + 1) form one VAE decoder chunk and decode to video frames 8k .. 8k + 7 of the
    window, so the mel window of decoded frame j starts at video frame 8k + j.
    """
    l2 = F.mse_loss(x0_hat.float(), x0.float())
    pair = 2 * int(torch.randint(0, x0_hat.shape[2] // 2, (1,), generator=generator))
    decoded = decode_with_grad(vae, x0_hat[:, :, pair:pair + 2] / vae.config.scaling_factor)
    decoded = ((decoded.float() + 1) / 2).clamp(0, 1)
    first = int(torch.randint(0, decoded.shape[2] - frames + 1, (1,), generator=generator))
    boxes = [face_box(mask) for mask in face_masks]
    faces = mouth_crops(decoded[:, :, first:first + frames], boxes, face_masks[:, None, None])
    step = mel_start(4 * pair + first)
    dtype = next(syncnet.parameters()).dtype  # the expert's (bf16 under bf16 mixed precision), for both inputs
    per_sample = sync_loss(syncnet, mel[:, None, :, step:step + MEL_WINDOW].to(dtype), faces.to(dtype))
    kept = keep.to(per_sample.dtype)
    return l2, (per_sample * kept).sum() / kept.sum().clamp(min=1)
