"""Time and peak memory of a run, measured before the run (one guided step and one window decode at the real
size), so a long video does not fail at the end with an out-of-memory error."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .generate import Conditions, DiTalkerPipeline, SamplingOptions, decode_latents
from .speed import Speedups, applied


@dataclass(frozen=True)
class RunEstimate:
    windows: int
    steps_per_window: int
    seconds_per_step: float
    seconds_per_decode: float
    peak_bytes: int  # peak memory of one step or one window decode (the run's peak does not grow with length)
    step_cache: bool = False  # steps measured uncached: with a step cache the time is an upper bound

    @property
    def total_seconds(self) -> float:
        return self.windows * (self.steps_per_window * self.seconds_per_step + self.seconds_per_decode)

    def summary(self) -> str:
        about = "at most" if self.step_cache else "about"
        return (f"{self.windows} window(s) x {self.steps_per_window} steps: {about} {self.total_seconds:.0f} s "
                f"({self.seconds_per_step:.2f} s/step, {self.seconds_per_decode:.2f} s/decode), peak memory about "
                f"{self.peak_bytes / 2**30:.2f} GiB")


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class PeakMemory:
    start: int = 0  # bytes in use when the block began (model, inputs)
    peak: int = 0  # the most bytes in use during the block


@contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Memory in use at the start and at the peak of the block: device memory on CUDA; resident memory on the
    CPU, whose high-water mark Linux lets a process reset. The run estimate and the benchmarks all use it."""
    result = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result.peak = torch.cuda.max_memory_allocated(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    result.start = _proc_status_bytes("VmRSS")
    yield result
    result.peak = _proc_status_bytes("VmHWM")


@torch.no_grad()
def estimate_run(pipeline: DiTalkerPipeline, num_frames: int, height: int, width: int,
                 options: SamplingOptions = SamplingOptions()) -> RunEstimate:
    """Measure one guided denoising step and one window decode at (height, width), then scale by the plan."""
    model, cfg = pipeline.transformer, pipeline.transformer.config
    device = model.device
    frames = pipeline.window_frames
    conditions = Conditions(
        reference=torch.zeros(3, height, width), num_frames=frames,
        audio_features=torch.zeros(frames, cfg.audio_window, cfg.audio_feature_dim),
        phoneme_ids=torch.zeros(frames, dtype=torch.long), style_clip=torch.zeros(cfg.style_max_len, cfg.exp_dim),
        pose_video=torch.zeros(3, frames, height // 2, width // 2),
        emotion_tokens=torch.zeros(1, cfg.caption_channels), clip_embedding=torch.zeros(cfg.clip_embed_dim))
    windows = pipeline.plan(num_frames, options.overlap)
    inputs = pipeline.branch_inputs(conditions, windows[0], options, clip_on=True)
    channels = pipeline.vae.config.latent_channels
    latents = torch.zeros(1, channels, frames // 4, height // 8, width // 8, device=device, dtype=model.dtype)
    inpaint = torch.zeros(1, 2 * channels, *latents.shape[2:], device=device, dtype=model.dtype)
    t = torch.tensor([500], device=device)
    # The run's attention kernel and compiled blocks (compiled by the warm-up step); a step cache is left off,
    # since how many steps it skips shows only in the run.
    with applied(model, Speedups(attention=options.speed.attention, compile=options.speed.compile)):
        pipeline.predict(latents, t, inpaint, inputs, options)  # warm-up (kernels, allocator)
        with peak_memory(device) as step_peak:
            start = time.perf_counter()
            pipeline.predict(latents, t, inpaint, inputs, options)
            step_seconds = time.perf_counter() - start
    with peak_memory(pipeline.vae.device) as decode_peak:
        start = time.perf_counter()
        for _ in decode_latents(pipeline.vae, latents):
            pass
        decode_seconds = time.perf_counter() - start
    return RunEstimate(len(windows), pipeline.steps_run(options), step_seconds, decode_seconds,
                       max(step_peak.peak, decode_peak.peak), options.speed.cache != "off")
