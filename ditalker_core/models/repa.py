"""REPA head: projects the hidden states of an early block to the width of a frozen vision encoder (DINOv2), so
the identity loss can align them (paper Sec. III-E, official ``repa_proj``)."""

from __future__ import annotations

from torch import nn


def repa_head(dim: int = 1152, hidden_dim: int = 4096, out_dim: int = 768) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                         nn.Linear(hidden_dim, out_dim))
