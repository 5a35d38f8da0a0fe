"""Pose Adapter: a DWPose video (B, 3, 4F, 4H, 4W) in [0, 1] -> a latent-shaped offset (B, 4, F, H, W).

A small 3D CNN (official ``PoseGuider``) whose output convolution starts at zero; the transformer adds half of
its output to the noisy latent before the inpaint channels are concatenated (paper Eq. 3, w_pose = 0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PoseAdapter(nn.Module):
    def __init__(self, in_channels: int = 3, latent_channels: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList([
            nn.Conv3d(in_channels, 16, kernel_size=(3, 3, 3), stride=1, padding=1),
            nn.Conv3d(16, 32, kernel_size=(2, 3, 3), stride=2, padding=(0, 1, 1)),
            nn.Conv3d(32, 8, kernel_size=(2, 3, 3), stride=1, padding=(0, 1, 1)),
        ])
        self.conv_out = nn.Conv3d(8, latent_channels, kernel_size=3, stride=2, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, pose_video: torch.Tensor) -> torch.Tensor:
        x = F.silu(pose_video)
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)

    @staticmethod
    def fit_to_latent(offset: torch.Tensor, latent_shape: torch.Size) -> torch.Tensor:
        """Crop, or zero-pad at the end, to the latent's frames/height/width (what the official code does)."""
        frames, height, width = latent_shape[-3:]
        offset = offset[:, :, :frames, :height, :width]
        pad = (0, width - offset.shape[4], 0, height - offset.shape[3], 0, frames - offset.shape[2])
        return F.pad(offset, pad) if any(pad) else offset
