"""AudioProjection: the clip's Whisper windows (B, frames, 50, d) -> audio tokens ``c_a`` (B, tokens, out_dim).

All frames' windows are mixed by one 1x1 convolution into a fixed number of tokens, so the model takes clips of
exactly ``frames`` video frames (64 in the official configuration).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AudioProjection(nn.Module):
    def __init__(self, frames: int = 64, window: int = 50, feature_dim: int = 384, tokens: int = 128,
                 hidden_dim: int = 9216, out_dim: int = 1152):
        super().__init__()
        self.frames, self.window, self.feature_dim = frames, window, feature_dim
        self.conv1 = nn.Conv1d(frames * window, tokens, kernel_size=1)
        self.fc1 = nn.Linear(feature_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, audio_windows: torch.Tensor) -> torch.Tensor:
        x = audio_windows.reshape(audio_windows.shape[0], self.frames * self.window, self.feature_dim)
        x = F.gelu(self.conv1(x), approximate="tanh")
        x = F.gelu(self.fc1(x), approximate="tanh")
        return self.fc2(x)
