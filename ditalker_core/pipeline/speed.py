"""Speed settings, all from diffusers' own machinery: the step cache, the attention backend and compiled blocks.

They are applied to the transformer for one run (``applied``) and taken off after it, so one loaded model serves
runs with different settings (ComfyUI caches node outputs and hands the same model to every sampler).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import InputError

logger = logging.getLogger(__name__)

CACHES = ("off", "first_block")


@dataclass(frozen=True)
class Speedups:
    cache: str = "off"  # "first_block": diffusers' FirstBlockCache (skip the other blocks while block 0 barely moves)
    threshold: float = 0.05  # FirstBlockCache: relative change of block 0's residual that forces a full step
    attention: str = "native"  # a diffusers attention backend ("native", "flash", "sage", ...)
    compile: bool = False  # diffusers' compile_repeated_blocks: one torch.compile'd block, reused by all

    def __post_init__(self) -> None:
        if self.cache not in CACHES:
            raise InputError(f"cache {self.cache!r} is not one of {CACHES}")
        if not self.threshold >= 0:
            raise InputError(f"cache threshold must be >= 0 (0 = never skip), got {self.threshold}")


def _set_attention(transformer, backend: str) -> str:
    """Set ``backend``; a kernel whose package is missing warns and leaves native attention (never a hard
    dependency). Returns the backend in use."""
    try:
        transformer.set_attention_backend(backend)
        return backend
    except (ImportError, RuntimeError) as error:
        logger.warning("attention backend %r is unavailable (%s); using native attention", backend, error)
    except ValueError as error:
        raise InputError(f"unknown attention backend {backend!r}: {error}") from error
    transformer.reset_attention_backend()
    return "native"


def _compile_blocks(transformer) -> bool:
    """``compile_repeated_blocks``, once per model: the blocks stay compiled after the run (they compute what the
    eager ones do, and compiling again each run would cost the compile each time). Where torch.compile cannot run
    (no C++ compiler on a CPU, no triton on a GPU) a warning and eager blocks; compilation is lazy, so it is tried
    on a probe first."""
    if all(block._compiled_call_impl is not None for block in transformer.transformer_blocks):
        return True  # compiled by an earlier run (nn.Module.compile's attribute)
    try:
        torch.compile(lambda x: x * 2)(torch.ones(2, device=transformer.device))
    except Exception as error:  # backend errors vary by platform and torch version
        logger.warning("torch.compile cannot run here (%s); the blocks stay eager", error)
        return False
    transformer.compile_repeated_blocks()
    return True


@contextlib.contextmanager
def applied(transformer, speedups: Speedups) -> Iterator[Speedups]:
    """Apply ``speedups`` for the body; yields what is actually in use (after fallbacks).

    diffusers' ``set_attention_backend`` also makes its backend the process-wide default, which
    ``reset_attention_backend`` leaves in place: the previous default is put back after the body, so no other
    model or later run inherits this run's kernel. Compiled blocks stay compiled (``_compile_blocks``)."""
    from diffusers import FirstBlockCacheConfig
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default, _ = _AttentionBackendRegistry.get_active_backend()
    attention = "native"
    try:
        if speedups.cache == "first_block":
            transformer.enable_cache(FirstBlockCacheConfig(threshold=speedups.threshold))
        if speedups.attention != "native":
            attention = _set_attention(transformer, speedups.attention)
        compiled = speedups.compile and _compile_blocks(transformer)
        yield Speedups(speedups.cache, speedups.threshold, attention, compiled)
    finally:  # also after a refused setting: the model leaves as it came (compiled blocks stay compiled)
        if transformer.is_cache_enabled:
            transformer.disable_cache()
        if attention != "native":
            transformer.reset_attention_backend()
        _AttentionBackendRegistry.set_active_backend(default)
