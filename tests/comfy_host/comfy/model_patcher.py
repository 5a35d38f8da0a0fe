"""Stand-in for ``comfy.model_patcher.ModelPatcher``: the handle ComfyUI's memory manager moves models with.

It mirrors ComfyUI's API (v0.3.64) for offline tests; the real server is covered by
tests/test_comfyui_integration.py. Like the real one it writes ``model.device`` (on construction when the
model has none, and on every load), which a diffusers or transformers model refuses: its ``device`` is a
read-only property.
"""

from __future__ import annotations

import torch


class ModelPatcher:
    def __init__(self, model: torch.nn.Module, load_device: torch.device, offload_device: torch.device,
                 size: int = 0, weight_inplace_update: bool = False):
        self.size = size
        self.model = model
        if getattr(self.model, "device", None) is None:
            self.model.device = offload_device
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        if not hasattr(self.model, "model_loaded_weight_memory"):
            self.model.model_loaded_weight_memory = 0

    def model_size(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.state_dict().values())

    def load(self, device_to: torch.device) -> None:
        self.model.to(device_to)
        self.model.device = device_to
        self.model.model_loaded_weight_memory = self.model_size()

    def detach(self) -> None:
        self.model.to(self.offload_device)
        self.model.device = self.offload_device
        self.model.model_loaded_weight_memory = 0
