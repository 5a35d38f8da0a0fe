"""AudioProjection: the clip's Whisper windows (B, frames, 50, d) -> audio tokens ``c_a`` (B, tokens, out_dim).

All frames' windows are mixed by one 1x1 convolution into a fixed number of tokens, so the model takes clips of
exactly ``frames`` video frames (64 in the official configuration).

With ``groups`` (not in the official model) the convolution is masked block-diagonally: the frames are cut into
``groups`` consecutive runs (one per latent frame) and each run's Whisper rows make only its own
``tokens / groups`` tokens, so a token says *when* it was heard. The official model has to learn that alignment
from data; a small model trained for hours does not (the demo model ignored its audio until given this).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class AudioProjection(nn.Module):
    def __init__(self, frames: int = 64, window: int = 50, feature_dim: int = 384, tokens: int = 128,
                 hidden_dim: int = 9216, out_dim: int = 1152, groups: Optional[int] = None):
        super().__init__()
        self.frames, self.window, self.feature_dim = frames, window, feature_dim
        self.conv1 = nn.Conv1d(frames * window, tokens, kernel_size=1)
        self.fc1 = nn.Linear(feature_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.groups = groups
        if groups is not None and (frames % groups or tokens % groups):
            raise ValueError(f"audio token groups ({groups}) must divide both the frames ({frames}) and the "
                             f"tokens ({tokens})")

    def mixing_weight(self) -> torch.Tensor:
        """conv1's weight, masked so token group g reads only frame run g's rows (no buffer: official keys)."""
        weight = self.conv1.weight
        if self.groups is None:
            return weight
        tokens, rows = weight.shape[:2]
        token_group = torch.arange(tokens, device=weight.device) // (tokens // self.groups)
        row_group = torch.arange(rows, device=weight.device) // (rows // self.groups)
        return weight * (token_group[:, None] == row_group[None, :]).to(weight.dtype)[..., None]

    def forward(self, audio_windows: torch.Tensor) -> torch.Tensor:
        """(B, frames, window, d) -> (B, tokens, out_dim); with groups, token run g is heard in frame run g."""
        x = audio_windows.reshape(audio_windows.shape[0], self.frames * self.window, self.feature_dim)
        x = F.gelu(F.conv1d(x, self.mixing_weight(), self.conv1.bias), approximate="tanh")
        x = F.gelu(self.fc1(x), approximate="tanh")
        return self.fc2(x)
