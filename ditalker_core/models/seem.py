"""SEEM: the Style-Emotion Encoding Module.

Style branch (paper Sec. III-B, official ``style_model`` / ``style_content_model`` / ``style_content_decoder`` /
``style_projection``): a transformer encoder pools the 3DMM expression coefficients of the style clip into a
style code; a second encoder reads the per-frame phoneme windows; a transformer decoder queried by the style code
turns phoneme content into stylised expressions, one per frame; a projection turns those into the style tokens
``c_s`` that the SCA branch of ASFM attends to. The emotion branch (``c_emo``: projected T5 emotion-prompt
tokens followed by the projected CLIP reference tokens) reuses the backbone's caption and CLIP projections and
lives in the transformer.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim) transformer sinusoid table, computed in float64 like the official numpy code."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angles = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    angles[:, 0::2] = torch.sin(angles[:, 0::2])
    angles[:, 1::2] = torch.cos(angles[:, 1::2])
    return angles.float().unsqueeze(0)


class SinusoidPositions(nn.Module):
    """Holds the fixed ``pos_table`` buffer under the official key name."""

    def __init__(self, dim: int, length: int):
        super().__init__()
        self.register_buffer("pos_table", sinusoid_table(length, dim))

    def forward(self, length: int) -> torch.Tensor:
        return self.pos_table[:, :length]


def _encoder(dim: int, heads: int, layers: int, ff_dim: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, activation="relu", batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class StyleEncoder(nn.Module):
    """3DMM expression clip (B, L, 64) -> style code (B, dim), averaged over frames.

    The official forward averages over every frame, padding included (it never passes its pad mask), and the
    released weights were trained that way; ``use_pad_mask`` averages over the valid frames only.
    """

    def __init__(self, exp_dim: int = 64, dim: int = 256, heads: int = 8, layers: int = 3, ff_dim: int = 1024,
                 max_len: int = 256, dropout: float = 0.1, use_pad_mask: bool = False):
        super().__init__()
        self.increase_embed_dim = nn.Linear(exp_dim, dim)
        self.pos_embed = SinusoidPositions(dim, max_len)
        self.encoder = _encoder(dim, heads, layers, ff_dim, dropout)
        self.use_pad_mask = use_pad_mask

    def forward(self, style_clip: torch.Tensor, pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.increase_embed_dim(style_clip)
        x = x + self.pos_embed(x.shape[1]).to(x.dtype)
        if not self.use_pad_mask or pad_mask is None:
            return self.encoder(x).mean(dim=1)
        pad_mask = pad_mask.bool()
        style = self.encoder(x, src_key_padding_mask=pad_mask).masked_fill(pad_mask[..., None], 0.0)
        return style.sum(dim=1) / (~pad_mask).sum(dim=1, keepdim=True).clamp(min=1)


class ContentEncoder(nn.Module):
    """Phoneme windows (B, N, W) of ids -> content features (B, N, W, dim)."""

    def __init__(self, num_phonemes: int = 75, embed_dim: int = 128, dim: int = 256, heads: int = 8,
                 layers: int = 3, ff_dim: int = 1024, window: int = 11, dropout: float = 0.1):
        super().__init__()
        self.ph_embedding = nn.Embedding(num_phonemes, embed_dim)
        self.increase_embed_dim = nn.Linear(embed_dim, dim)
        self.pos_embed = SinusoidPositions(dim, window)
        self.encoder = _encoder(dim, heads, layers, ff_dim, dropout)

    def forward(self, phoneme_windows: torch.Tensor) -> torch.Tensor:
        batch, frames, window = phoneme_windows.shape
        x = self.increase_embed_dim(self.ph_embedding(phoneme_windows)).reshape(batch * frames, window, -1)
        x = self.encoder(x + self.pos_embed(window).to(x.dtype))
        return x.reshape(batch, frames, window, -1)


class ExpressionDecoder(nn.Module):
    """Content (B, N, W, dim) queried by the style code (B, dim) -> stylised expression per frame (B, N, exp_dim).

    Official ``Decoder``: the style code is the query position embedding, the window centre is read out.
    """

    def __init__(self, dim: int = 256, heads: int = 8, layers: int = 3, ff_dim: int = 1024, window: int = 11,
                 exp_dim: int = 64, dropout: float = 0.1):
        super().__init__()
        layer = nn.TransformerDecoderLayer(dim, heads, ff_dim, dropout, activation="relu", batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(dim))
        self.pos_embed = SinusoidPositions(dim, window)
        hidden = dim // 2
        self.tail_fc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, exp_dim))

    def forward(self, content: torch.Tensor, style_code: torch.Tensor) -> torch.Tensor:
        batch, frames, window, dim = content.shape
        memory = content.reshape(batch * frames, window, dim)
        query = style_code[:, None, None, :].expand(batch, frames, window, dim).reshape(batch * frames, window, dim)
        tgt = query + self.pos_embed(window).to(content.dtype)
        decoded = self.decoder(tgt, memory).reshape(batch, frames, window, dim)[:, :, window // 2]
        return self.tail_fc(decoded)


class StyleProjection(nn.Module):
    """Stylised expressions (B, frames, exp_dim) -> style tokens ``c_s`` (B, tokens, out_dim)."""

    def __init__(self, frames: int = 64, exp_dim: int = 64, tokens: int = 128, hidden_dim: int = 384,
                 out_dim: int = 1152):
        super().__init__()
        self.conv1 = nn.Conv1d(frames, tokens, kernel_size=1)
        self.fc1 = nn.Linear(exp_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, expressions: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(expressions), approximate="tanh")
        x = F.gelu(self.fc1(x), approximate="tanh")
        return self.fc2(x)
