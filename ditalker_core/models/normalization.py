"""Float32 LayerNorm: the EasyAnimate blocks normalise in float32 whatever the compute dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so bf16/fp16 inference keeps the reference statistics."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(inputs.float(), self.normalized_shape, weight, bias, self.eps).to(inputs.dtype)
