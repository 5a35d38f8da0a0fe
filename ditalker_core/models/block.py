"""One DiTalker DiT block: the EasyAnimateV3 block plus ASFM and ECA.

Order inside the block (official eval forward): adaLN-modulated frame-wise self-attention, motion module,
cross-attention to caption + CLIP tokens, ASFM (audio and style cross-attention on the same hidden state,
scaled by the Scale Adapter's ``s_alpha`` / ``s_phi`` for this block, added together), ECA (cross-attention
to ``c_emo``), adaLN-modulated feed-forward. Without the DiTalker modules it is exactly the EasyAnimateV3 block.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.normalization import FP32LayerNorm
from einops import rearrange
from torch import nn

from .attention import DiTalkerAttnProcessor
from .motion_module import MotionModule


def _cross_attention(dim: int, heads: int, dim_head: int, cross_attention_dim: int, bias: bool) -> Attention:
    return Attention(query_dim=dim, cross_attention_dim=cross_attention_dim, heads=heads, dim_head=dim_head,
                     bias=bias, processor=DiTalkerAttnProcessor())


class DiTalkerBlock(nn.Module):
    """EasyAnimateV3 ``TemporalTransformerBlock`` (ada_norm_single) with optional ASFM and ECA."""

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        cross_attention_dim: int,
        motion_module_kwargs: dict[str, Any],
        attention_bias: bool = True,
        activation_fn: str = "gelu-approximate",
        norm_eps: float = 1e-6,
        audio_attention: bool = False,
        style_attention: bool = False,
        emotion_attention: bool = False,
    ):
        super().__init__()
        heads, head_dim = num_attention_heads, attention_head_dim
        self.norm1 = FP32LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=head_dim, bias=attention_bias,
                               processor=DiTalkerAttnProcessor())
        self.attn_temporal = MotionModule(dim, **motion_module_kwargs)
        self.attn2 = _cross_attention(dim, heads, head_dim, cross_attention_dim, attention_bias)
        # ASFM: audio (ACA) and style (SCA) cross-attention; ECA: emotion cross-attention.
        self.audio_attention = (
            _cross_attention(dim, heads, head_dim, cross_attention_dim, attention_bias) if audio_attention else None
        )
        self.style_attention = (
            _cross_attention(dim, heads, head_dim, cross_attention_dim, attention_bias) if style_attention else None
        )
        self.emotion_cross_attention = (
            _cross_attention(dim, heads, head_dim, cross_attention_dim, attention_bias) if emotion_attention else None
        )
        self.norm2 = FP32LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.ff = FeedForward(dim, activation_fn=activation_fn)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: Optional[torch.Tensor],
        height: int,
        width: int,
        audio_tokens: Optional[torch.Tensor] = None,
        style_tokens: Optional[torch.Tensor] = None,
        audio_scale: Optional[torch.Tensor] = None,
        style_scale: Optional[torch.Tensor] = None,
        emotion_tokens: Optional[torch.Tensor] = None,
        skip: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``hidden_states`` (B, F*H*W, C); ``timestep`` (B, 6C) from adaLN-single; scales (B, 1, 1).

        ``skip``: the U-ViT long skip, already projected by the model's ``long_connect_fc``. It is added here, not
        in the model's loop, so a step cache that skips this block (diffusers' hooks wrap blocks) skips it too.
        """
        if skip is not None:
            hidden_states = hidden_states + skip
        # Frames from the tokens: under context parallelism a process holds a run of whole frames (``_cp_plan``).
        num_frames = hidden_states.shape[1] // (height * width)
        batch = hidden_states.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + timestep.reshape(batch, 6, -1)
        ).chunk(6, dim=1)

        # Frame-wise self-attention.
        norm_hidden = self.norm1(hidden_states) * (1 + scale_msa) + shift_msa
        norm_hidden = rearrange(norm_hidden, "b (f d) c -> (b f) d c", f=num_frames)
        attn = rearrange(self.attn1(norm_hidden), "(b f) d c -> b (f d) c", f=num_frames)
        hidden_states = gate_msa * attn + hidden_states

        # Motion module across frames.
        video = rearrange(hidden_states, "b (f h w) c -> b c f h w", f=num_frames, h=height, w=width)
        hidden_states = rearrange(self.attn_temporal(video), "b c f h w -> b (f h w) c")

        # Caption + CLIP cross-attention (PixArt applies no norm here).
        hidden_states = self.attn2(hidden_states, encoder_hidden_states=encoder_hidden_states,
                                   attention_mask=encoder_attention_mask) + hidden_states

        # ASFM: both branches read the same hidden state.
        if self.audio_attention is not None or self.style_attention is not None:
            fused = hidden_states
            if self.audio_attention is not None:
                audio = self._hear(hidden_states, audio_tokens, num_frames)
                fused = fused + (audio * audio_scale if audio_scale is not None else audio)
            if self.style_attention is not None:
                style = self.style_attention(hidden_states, encoder_hidden_states=style_tokens)
                fused = fused + (style * style_scale if style_scale is not None else style)
            hidden_states = fused

        # ECA.
        if self.emotion_cross_attention is not None and emotion_tokens is not None:
            hidden_states = hidden_states + self.emotion_cross_attention(hidden_states,
                                                                         encoder_hidden_states=emotion_tokens)

        norm_hidden = self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp
        return gate_mlp * self.ff(norm_hidden) + hidden_states

    def _hear(self, hidden_states: torch.Tensor, audio_tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
        """ACA. Tokens (B, N, C): every video token reads all of them (official). Grouped tokens (B, F, N/F, C):
        latent frame f reads only group f, the audio heard during its video frames."""
        if audio_tokens.ndim == 3:
            return self.audio_attention(hidden_states, encoder_hidden_states=audio_tokens)
        frames = rearrange(hidden_states, "b (f d) c -> (b f) d c", f=num_frames)
        heard = self.audio_attention(frames, encoder_hidden_states=rearrange(audio_tokens, "b f n c -> (b f) n c"))
        return rearrange(heard, "(b f) d c -> b (f d) c", f=num_frames)


# diffusers' step caches (FirstBlockCache, MagCache, ...) find a block's hidden states through this entry.
TransformerBlockRegistry.register(DiTalkerBlock, TransformerBlockMetadata(return_hidden_states_index=None,
                                                                          return_encoder_hidden_states_index=None))
