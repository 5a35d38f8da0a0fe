"""``latent_preview`` as the server has it: ``get_previewer(device, latent_format)`` honours
``--preview-method``; without a TAESD decoder for the format, Auto, TAESD and Latent2RGB all paint the latent
with the format's ``latent_rgb_factors`` (+ bias), taking frame 0 of a 5-D latent, as JPEG."""

from __future__ import annotations

from typing import Any, Optional

import torch
from PIL import Image

from comfy.cli_args import LatentPreviewMethod, args


class Latent2RGBPreviewer:
    def __init__(self, factors: list[list[float]], bias: Optional[list[float]] = None):
        self.factors = torch.tensor(factors).T  # (3, C)
        self.bias = None if bias is None else torch.tensor(bias)

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        latent = x0[0, :, 0] if x0.ndim == 5 else x0[0]
        rgb = torch.nn.functional.linear(latent.movedim(0, -1).float(), self.factors, self.bias)
        return Image.fromarray(((rgb + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).numpy())

    def decode_latent_to_preview_image(self, preview_format: str, x0: torch.Tensor) -> tuple[str, Any, int]:
        return "JPEG", self.decode_latent_to_preview(x0), args.preview_size


def get_previewer(device: Any, latent_format: Any) -> Optional[Latent2RGBPreviewer]:
    if args.preview_method == LatentPreviewMethod.NoPreviews or latent_format.latent_rgb_factors is None:
        return None
    return Latent2RGBPreviewer(latent_format.latent_rgb_factors, latent_format.latent_rgb_factors_bias)
