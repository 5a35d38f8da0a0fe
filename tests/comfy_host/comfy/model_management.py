"""Stand-in for ``comfy.model_management`` on a CPU-only host (``--cpu``): devices, dtypes, model loading and
the cancel flag.

It mirrors ComfyUI's API (v0.3.64) for offline tests; the real server is covered by
tests/test_comfyui_integration.py. ``interrupt_current_processing()`` is what ``POST /interrupt`` calls.
"""

from __future__ import annotations

import threading

import torch

from .model_patcher import ModelPatcher

CPU = torch.device("cpu")
current_loaded_models: list[ModelPatcher] = []
interrupt_processing = False
interrupt_processing_mutex = threading.RLock()


class InterruptProcessingException(Exception):
    pass


def get_torch_device() -> torch.device:
    return CPU


def intermediate_device() -> torch.device:
    return CPU


def unet_offload_device() -> torch.device:
    return CPU


def text_encoder_device() -> torch.device:
    return CPU


def text_encoder_offload_device() -> torch.device:
    return CPU


def vae_device() -> torch.device:
    return CPU


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return False  # ComfyUI answers False for the CPU


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return False


def load_models_gpu(models: list[ModelPatcher], memory_required=0, force_patch_weights=False,
                    minimum_memory_required=None, force_full_load=False) -> None:
    """Move each patcher's model to its load device and keep it in the loaded list (most recent first)."""
    for patcher in models:
        if not isinstance(patcher, ModelPatcher):
            raise TypeError(f"load_models_gpu takes ModelPatcher objects, got {type(patcher).__name__}")
        if patcher in current_loaded_models:
            current_loaded_models.remove(patcher)
        patcher.load(patcher.load_device)
        current_loaded_models.insert(0, patcher)


def load_model_gpu(model: ModelPatcher) -> None:
    load_models_gpu([model])


def unload_all_models() -> None:
    while current_loaded_models:
        current_loaded_models.pop().detach()


def soft_empty_cache(force: bool = False) -> None:
    """Nothing to free on a CPU."""


def interrupt_current_processing(value: bool = True) -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted() -> bool:
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted() -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()
