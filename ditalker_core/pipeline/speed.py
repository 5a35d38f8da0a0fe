"""Speed settings, all from diffusers' own machinery: the step caches, the attention backend and compiled blocks.

diffusers' FasterCache is not offered: it reuses the unconditional half of a two-branch classifier-free guidance
batch, and the multi-condition guidance runs four or more branches.

They are applied to the transformer for one run (``applied``; MagCache per window, ``mag_cache``) and taken off
after it, so one loaded model serves runs with different settings (ComfyUI caches node outputs and hands the same
model to every sampler).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass, replace
from typing import Iterator, Optional

import torch

from ..errors import InputError

logger = logging.getLogger(__name__)

CACHES = ("off", "first_block", "mag", "taylorseer")
PRECISIONS = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Speedups:
    # "first_block": diffusers' FirstBlockCache (skip the other blocks while block 0's residual barely moves);
    # "mag": diffusers' MagCache (skip every block while the residual's predicted magnitude change stays small);
    # "taylorseer": diffusers' TaylorSeer in its lite form (on all but every ``interval``-th step after the first
    # three, no block runs and the output projection's output is extrapolated from its last two computed steps)
    cache: str = "off"
    threshold: float = 0.05  # FirstBlockCache: relative change of block 0's residual; MagCache: accumulated error
    attention: str = "native"  # a diffusers attention backend ("native", "flash", "sage", ...)
    compile: bool = False  # diffusers' compile_repeated_blocks: one torch.compile'd block, reused by all
    # "bf16" / "fp16": the transformer's matmuls under torch.autocast (norms and softmax stay float32, the loaded
    # weights are untouched); "auto": the weights' own dtype
    precision: str = "auto"
    interval: int = 3  # TaylorSeer: a full step every ``interval`` steps (1 = every step)

    def __post_init__(self) -> None:
        if self.cache not in CACHES:
            raise InputError(f"cache {self.cache!r} is not one of {CACHES}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is not one of {tuple(PRECISIONS)}")
        if not self.threshold >= 0:
            raise InputError(f"cache threshold must be >= 0 (0 = never skip), got {self.threshold}")
        if self.interval < 1:
            raise InputError(f"cache interval must be >= 1 (1 = never skip), got {self.interval}")


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


def computed_in(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The transformer calls' compute precision: torch.autocast for bf16/fp16, nothing for "auto"."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


# MagCache's ratios belong to a model and a schedule (scheduler, steps, denoise): measured once, on the first window
# run with them.
_MAG_RATIOS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, list[float]]]" = weakref.WeakKeyDictionary()


class _ResidualRatios:
    """MagCache's calibration statistic on a window run without the cache: per step, the mean over tokens of
    |residual| / |previous step's residual|, residual = the block stack's output - its input (one forward per
    ``calls_per_step`` guidance-branch batch; each batch compared with its own previous step)."""

    def __init__(self, transformer, calls_per_step: int):
        self.calls_per_step, self.calls = calls_per_step, 0
        self.previous: dict[int, torch.Tensor] = {}
        self.ratios: dict[int, list[float]] = {}
        blocks = transformer.transformer_blocks
        self.handles = [blocks[0].register_forward_pre_hook(self._enter, with_kwargs=True),
                        blocks[-1].register_forward_hook(self._leave)]

    def _enter(self, module, args, kwargs) -> None:
        self.input = args[0] if args else kwargs["hidden_states"]

    def _leave(self, module, args, output: torch.Tensor) -> None:
        step, slot = divmod(self.calls, self.calls_per_step)
        residual = (output - self.input).float()
        ratio = 1.0 if slot not in self.previous else \
            (residual.norm(dim=-1) / (self.previous[slot].norm(dim=-1) + 1e-8)).mean().item()
        self.previous[slot] = residual
        self.ratios.setdefault(step, []).append(ratio)
        self.calls += 1

    def result(self) -> list[float]:
        for handle in self.handles:
            handle.remove()
        return [sum(r) / len(r) for _, r in sorted(self.ratios.items())]


@contextlib.contextmanager
def mag_cache(transformer, threshold: float, schedule: tuple, steps: int, calls_per_step: int) -> Iterator[bool]:
    """diffusers' MagCache for one window of ``steps`` steps (its state is per denoising run). Its magnitude ratios
    are the model's: the first window run with this model and ``schedule`` measures them without skipping (yields
    False), later windows and runs skip with them (yields True)."""
    from diffusers import MagCacheConfig

    known = _MAG_RATIOS.setdefault(transformer, {})
    ratios: Optional[list[float]] = known.get(schedule)
    if ratios is None:
        measure = _ResidualRatios(transformer, calls_per_step)
        try:
            yield False
        finally:
            measured = measure.result()
        if len(measured) == steps:  # a complete window
            known[schedule] = measured
        return
    transformer.enable_cache(MagCacheConfig(threshold=threshold, num_inference_steps=steps, mag_ratios=ratios))
    try:
        yield True
    finally:
        transformer.disable_cache()


@contextlib.contextmanager
def applied(transformer, speedups: Speedups) -> Iterator[Speedups]:
    """Apply ``speedups`` for the body; yields what is actually in use (after fallbacks).

    diffusers' ``set_attention_backend`` also makes its backend the process-wide default, which
    ``reset_attention_backend`` leaves in place: the previous default is put back after the body, so no other
    model or later run inherits this run's kernel. Compiled blocks stay compiled (``_compile_blocks``)."""
    from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default, _ = _AttentionBackendRegistry.get_active_backend()
    attention = "native"
    try:
        if speedups.cache == "first_block":
            transformer.enable_cache(FirstBlockCacheConfig(threshold=speedups.threshold))
        if speedups.cache == "taylorseer":  # its factors in float32 (diffusers' default: bf16) on every device
            transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=speedups.interval, use_lite_mode=True,
                                                           taylor_factors_dtype=torch.float32))
        if speedups.attention != "native":
            attention = _set_attention(transformer, speedups.attention)
        compiled = speedups.compile and _compile_blocks(transformer)
        yield replace(speedups, attention=attention, compile=compiled)
    finally:  # also after a refused setting: the model leaves as it came (compiled blocks stay compiled)
        if transformer.is_cache_enabled:
            transformer.disable_cache()
        if attention != "native":
            transformer.reset_attention_backend()
        _AttentionBackendRegistry.set_active_backend(default)
