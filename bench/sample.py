"""Sampling benchmark: per-step and total time and peak memory of whole runs, the cost of batched 3-condition
guidance against one forward of the same batch, and 60 s vs 15 s of audio. Prints one JSON line.

    python bench/sample.py [--config tiny|xl] [--seconds 15 60] [--height 64] [--width 64] [--steps 2]
                           [--dtype float32] [--device cpu] [--vae-config tiny|full] [--threads N]

Random weights (timing and memory do not depend on them). All runs share one process after a one-window
warm-up; each run's peak is its own (CUDA ``max_memory_allocated``, or the CPU resident high-water mark, which
Linux lets a process reset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ditalker_core.models import DiTalkerTransformer3DModel, get_config, get_vae_config  # noqa: E402
from ditalker_core.models.vae import AutoencoderKLMagvit  # noqa: E402
from ditalker_core.pipeline import Conditions, DiTalkerPipeline, Guidance, SamplingOptions  # noqa: E402
from ditalker_core.pipeline.estimate import peak_memory  # noqa: E402


def build(args: argparse.Namespace) -> DiTalkerPipeline:
    torch.manual_seed(0)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    with device:
        transformer = DiTalkerTransformer3DModel(**get_config(args.config)).to(dtype).eval()
        vae = AutoencoderKLMagvit(**get_vae_config(args.vae_config)).to(dtype).eval()
    return DiTalkerPipeline(transformer.requires_grad_(False), vae.requires_grad_(False))


def conditions(pipe: DiTalkerPipeline, frames: int, height: int, width: int) -> Conditions:
    cfg = pipe.transformer.config
    g = torch.Generator().manual_seed(0)
    return Conditions(
        reference=torch.rand(3, height, width, generator=g) * 2 - 1, num_frames=frames,
        audio_features=torch.randn(frames, cfg.audio_window, cfg.audio_feature_dim, generator=g),
        phoneme_ids=torch.randint(0, 74, (frames,), generator=g),
        style_clip=torch.randn(cfg.style_max_len, cfg.exp_dim, generator=g),
        pose_video=torch.rand(3, frames, height // 2, width // 2, generator=g),
        emotion_tokens=torch.randn(8, cfg.caption_channels, generator=g),
        negative_tokens=torch.randn(2, cfg.caption_channels, generator=g),
        clip_embedding=torch.randn(cfg.clip_embed_dim, generator=g))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def guidance_overhead(pipe: DiTalkerPipeline, height: int, width: int, repeat: int = 3) -> dict:
    """One guided step with four batched branches vs one plain forward of a batch of four."""
    model, device = pipe.transformer, pipe.transformer.device
    frames = pipe.window_frames
    cond = conditions(pipe, frames, height, width)
    window = pipe.plan(frames, 8)[0]
    options = SamplingOptions(guidance=Guidance(5.0, 6.0, 7.0))
    inputs = pipe.branch_inputs(cond, window, options, clip_on=True)
    latents = torch.randn(1, 4, frames // 4, height // 8, width // 8, device=device, dtype=model.dtype)
    inpaint = torch.randn(1, 8, *latents.shape[2:], device=device, dtype=model.dtype)
    t = torch.tensor([500], device=device)
    batch = len(options.guidance.branches())

    def guided() -> None:
        pipe.predict(latents, t, inpaint, inputs, options)

    def plain() -> None:
        model(latents.expand(batch, -1, -1, -1, -1), t.expand(batch),
              inpaint_latents=inpaint.expand(batch, -1, -1, -1, -1), **inputs)

    times = {}
    for name, fn in (("guided_step_s", guided), ("plain_forward_s", plain)):
        fn()
        best = float("inf")
        for _ in range(repeat):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best = min(best, time.perf_counter() - start)
        times[name] = round(best, 4)
    times["branches"] = batch
    times["ratio_guided_over_plain"] = round(times["guided_step_s"] / times["plain_forward_s"], 3)
    return times


def one_run(pipe: DiTalkerPipeline, args: argparse.Namespace, seconds: float) -> dict:
    device = pipe.transformer.device
    frames = round(seconds * 25)
    cond = conditions(pipe, frames, args.height, args.width)
    options = SamplingOptions(steps=args.steps, guidance=Guidance(5.0, 6.0, 7.0))
    steps: list[float] = []
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        steps.append(now - last[0])
        last[0] = now

    with torch.no_grad(), peak_memory(device) as peak:
        start = time.perf_counter()
        produced = sum(chunk.shape[0] for chunk in pipe.stream(cond, options, progress))
        sync(device)
        total = time.perf_counter() - start
    return {"seconds_of_audio": seconds, "frames": produced, "windows": len(pipe.plan(frames, options.overlap)),
            "total_s": round(total, 3), "step_s_median": round(sorted(steps)[len(steps) // 2], 4),
            "peak_mib": round(peak.peak / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", choices=["tiny", "xl"])
    parser.add_argument("--vae-config", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--seconds", type=float, nargs="+", default=[15.0, 60.0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads (tiny models are op-overhead bound: 1 is often fastest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = build(args)
    one_run(pipe, args, pipe.window_frames / 25)  # warm-up: kernels, allocator, caches
    runs = [one_run(pipe, args, seconds) for seconds in args.seconds]
    result = {"bench": "sample", "config": args.config, "height": args.height, "width": args.width,
              "steps": args.steps, "dtype": args.dtype, "device": args.device, "threads": args.threads,
              "guidance": guidance_overhead(pipe, args.height, args.width), "runs": runs}
    if len(runs) >= 2:
        result["time_ratio_last_over_first"] = round(runs[-1]["total_s"] / runs[0]["total_s"], 3)
        result["peak_ratio_last_over_first"] = round(runs[-1]["peak_mib"] / runs[0]["peak_mib"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
