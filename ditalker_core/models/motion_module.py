"""EasyAnimateV3 motion module: attention across frames inside every DiT block.

Even blocks attend along time at each spatial position ("Temporal"); odd blocks use one temporal and one
"Global" attention over every token of the clip. Both add a sinusoidal frame position first. Key names follow
the upstream ``VanillaTemporalModule`` so EasyAnimate checkpoints load unconverted.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.normalization import FP32LayerNorm
from einops import rearrange
from torch import nn

from .attention import DiTalkerAttnProcessor

_FRAME_TABLES: dict[tuple[int, int, str], torch.Tensor] = {}


def frame_position_table(dim: int, max_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The upstream sin/cos frame table (1, max_len, dim), float32, built the way upstream builds it.

    Every motion module of a model has an identical table; sharing one tensor keeps the 56 copies of the real
    model (1 GB in float32) down to one. A loaded checkpoint value replaces the shared one harmlessly.
    """
    key = (dim, max_len, str(device))
    table = _FRAME_TABLES.get(key)
    if table is None:
        position = torch.arange(max_len, device=device).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
        table = torch.zeros(1, max_len, dim, device=device)
        table[0, :, 0::2] = torch.sin(position * div_term)
        table[0, :, 1::2] = torch.cos(position * div_term)
        if table.device.type != "meta":
            _FRAME_TABLES[key] = table
    return table


class FramePositionalEncoding(nn.Module):
    """Adds the frame-index sinusoid to (batch, frames, channels) tokens."""

    def __init__(self, dim: int, max_len: int = 4096):
        super().__init__()
        self.register_buffer("pe", frame_position_table(dim, max_len))

    def forward(self, x: torch.Tensor, first: int = 0) -> torch.Tensor:
        """``first``: the index of x's first frame in the clip (a context-parallel process holds a later run)."""
        return x + self.pe[:, first: first + x.shape[1]].to(x.dtype)


class FrameAttention(Attention):
    """Self-attention across frames: per spatial position ("Temporal") or over the whole clip ("Global")."""

    across_frames = True  # under context parallelism, the attention that gathers the frames (attention.py)

    def __init__(self, mode: str, query_dim: int, heads: int, dim_head: int, max_frames: int = 4096,
                 position_encoding: bool = True):
        super().__init__(query_dim=query_dim, heads=heads, dim_head=dim_head, bias=False,
                         processor=DiTalkerAttnProcessor())
        if mode not in ("Temporal", "Global"):
            raise ValueError(f"motion attention mode must be 'Temporal' or 'Global', got {mode!r}")
        self.mode = mode
        self.pos_encoder = FramePositionalEncoding(query_dim, max_frames) if position_encoding else None

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        tokens = hidden_states.shape[1]
        x = rearrange(hidden_states, "(b f) d c -> (b d) f c", f=num_frames)
        if self.pos_encoder is not None:
            x = self.pos_encoder(x, self._first_frame(num_frames))
        if self.mode == "Global":
            x = rearrange(x, "(b d) f c -> b (f d) c", d=tokens)
        x = super().forward(x)
        if self.mode == "Global":
            return rearrange(x, "b (f d) c -> (b f) d c", f=num_frames)
        return rearrange(x, "(b d) f c -> (b f) d c", d=tokens)

    def _first_frame(self, num_frames: int) -> int:
        """0, or under context parallelism this process's first frame (diffusers' sharder gives process r the
        r-th of equal runs)."""
        config = self.processor._parallel_config
        if config is None or config.context_parallel_config is None:
            return 0
        return config.context_parallel_config._flattened_mesh.get_local_rank() * num_frames


class MotionTransformerBlock(nn.Module):
    """Pre-norm frame attentions followed by a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, attention_block_types: Sequence[str], max_frames: int,
                 position_encoding: bool):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            FrameAttention(name.split("_")[0], dim, heads, dim_head, max_frames, position_encoding)
            for name in attention_block_types
        )
        self.norms = nn.ModuleList(FP32LayerNorm(dim) for _ in attention_block_types)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = FP32LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention(norm(hidden_states), num_frames) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class FP32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the weights' and input's dtype (as diffusers' FP32LayerNorm)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.group_norm(inputs.float(), self.num_groups, self.weight.float(), self.bias.float(),
                                        self.eps).to(inputs.dtype)


class TemporalTransformer3D(nn.Module):
    """GroupNorm, project down, frame attention blocks, project up, residual."""

    def __init__(self, in_channels: int, heads: int, dim_head: int, num_layers: int,
                 attention_block_types: Sequence[str], max_frames: int, position_encoding: bool,
                 norm_num_groups: int = 32):
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = FP32GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            MotionTransformerBlock(inner_dim, heads, dim_head, attention_block_types, max_frames, position_encoding)
            for _ in range(num_layers)
        )
        self.proj_out = nn.Linear(inner_dim, in_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) -> same shape."""
        num_frames, height, width = hidden_states.shape[2:]
        residual = rearrange(hidden_states, "b c f h w -> (b f) c h w")
        x = self.norm(residual)
        x = rearrange(x, "bf c h w -> bf (h w) c")
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, num_frames)
        x = self.proj_out(x)
        x = rearrange(x, "bf (h w) c -> bf c h w", h=height, w=width) + residual
        return rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)


class MotionModule(nn.Module):
    """Upstream ``VanillaTemporalModule`` with the options EasyAnimateV3 uses (no grid, no global transformer).

    The temporal transformer's output projection starts at zero so a fresh module is an identity.
    """

    def __init__(self, in_channels: int, num_attention_heads: int = 8, num_transformer_block: int = 2,
                 attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
                 temporal_position_encoding: bool = False, temporal_position_encoding_max_len: int = 4096,
                 temporal_attention_dim_div: int = 1, norm_num_groups: int = 32, **unused_upstream_options):
        super().__init__()
        unsupported = {k: v for k, v in unused_upstream_options.items()
                       if k in ("block_size", "grid", "global_attention", "remove_time_embedding_in_photo",
                                "cross_frame_attention_mode", "qk_norm")
                       and v not in (None, False, 1)}
        if unsupported:
            raise ValueError(f"motion module options not used by EasyAnimateV3 are not supported: {unsupported}")
        self.temporal_transformer = TemporalTransformer3D(
            in_channels,
            heads=num_attention_heads,
            dim_head=in_channels // num_attention_heads // temporal_attention_dim_div,
            num_layers=num_transformer_block,
            attention_block_types=attention_block_types,
            max_frames=temporal_position_encoding_max_len,
            position_encoding=temporal_position_encoding,
            norm_num_groups=norm_num_groups,
        )
        nn.init.zeros_(self.temporal_transformer.proj_out.weight)
        nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(hidden_states)
