"""Scale Adapter: a Q-Former that predicts, for every DiT block, how much style (``s_phi``) and audio
(``s_alpha``) the ASFM adds (paper Sec. III-C).

One learned query per block reads the concatenated style and audio tokens; two tanh heads turn each query into
the block's two scales. The heads start at zero weight and unit bias, so every scale starts at tanh(1).
"""

from __future__ import annotations

import torch
from torch import nn


class QFormerLayer(nn.Module):
    """BLIP-2 style layer: joint self-attention over [queries | conditions], query-only cross-attention, FFN."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_cross_q = nn.LayerNorm(dim)
        self.norm_cross_kv = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, queries: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        num_queries = queries.shape[1]
        x = torch.cat([queries, conditions], dim=1)
        x_norm = self.norm_self(x)
        x = x + self.self_attn(x_norm, x_norm, x_norm, need_weights=False)[0]
        queries = x[:, :num_queries]
        kv = self.norm_cross_kv(conditions)
        queries = queries + self.cross_attn(self.norm_cross_q(queries), kv, kv, need_weights=False)[0]
        return queries + self.ffn(self.norm_ffn(queries))


def _scale_head(dim: int) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Linear(32, 1), nn.Tanh())
    nn.init.zeros_(head[2].weight)
    nn.init.ones_(head[2].bias)
    return head


class ScaleAdapter(nn.Module):
    def __init__(self, dim: int = 1152, heads: int = 16, num_blocks: int = 28, layers: int = 3):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.randn(1, num_blocks, dim) * dim**-0.5)
        self.qformer_layers = nn.ModuleList(QFormerLayer(dim, heads) for _ in range(layers))
        self.output_norm = nn.LayerNorm(dim)
        self.style_head = _scale_head(dim)
        self.audio_head = _scale_head(dim)

    def forward(self, style_tokens: torch.Tensor, audio_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(s_phi, s_alpha)``, each (B, num_blocks, 1)."""
        queries = self.query_tokens.expand(style_tokens.shape[0], -1, -1)
        conditions = torch.cat([style_tokens, audio_tokens], dim=1)
        for layer in self.qformer_layers:
            queries = layer(queries, conditions)
        queries = self.output_norm(queries)
        return self.style_head(queries), self.audio_head(queries)
