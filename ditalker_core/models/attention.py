"""The attention processor of every DiTalker attention: diffusers' dispatcher picks the kernel.

The blocks' frame-wise self-attention, the motion module's frame attentions and the caption/CLIP, audio, style and
emotion cross-attentions all run through ``dispatch_attention_fn`` (as Wan's processor does), so
``model.set_attention_backend("native" | "flash" | "sage" | ...)`` switches all of them at once, and context
parallelism finds its ``_parallel_config`` here: only attentions across frames (``attn.across_frames``) use it,
since a process holds whole frames (see the transformer's ``_cp_plan``) and every other attention is local. The
math is PyTorch's SDPA, exactly what diffusers' ``AttnProcessor2_0`` computed before (the parity fixtures still hold).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.attention_processor import Attention


class DiTalkerAttnProcessor:
    _attention_backend = None  # set by ModelMixin.set_attention_backend
    _parallel_config = None  # set by ModelMixin.enable_parallelism

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, **_: Any) -> torch.Tensor:
        """(B, N, C) queries over (B, L, C') context; ``attention_mask``: an additive bias (B, 1, L)."""
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = (projection(x).unflatten(-1, (attn.heads, -1))  # (B, N, heads, d): dispatch layout
                             for projection, x in ((attn.to_q, hidden_states), (attn.to_k, context),
                                                   (attn.to_v, context)))
        bias = None if attention_mask is None else attention_mask.to(query.dtype).unsqueeze(1)  # (B, 1, 1, L)
        parallel = self._parallel_config if getattr(attn, "across_frames", False) else None
        out = dispatch_attention_fn(query, key, value, attn_mask=bias, backend=self._attention_backend,
                                    parallel_config=parallel)
        out = out.flatten(2).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))
