"""Peak memory and time of the MagViT VAE's streaming decode at 33 and 257 frames, with random weights.

Prints one JSON line. Memory is read by ``ditalker_core.pipeline.estimate.peak_memory`` (resident memory on
the CPU, each measurement in a fresh subprocess; ``max_memory_allocated`` on CUDA). ``decode_mib`` is the peak
minus what the model and the latents already held, i.e. what decoding itself costs.

    python bench/vae.py [--config small|full] [--height 64] [--width 64] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ditalker_core.models.vae import AutoencoderKLMagvit  # noqa: E402
from ditalker_core.pipeline.estimate import peak_memory  # noqa: E402

CONFIGS = {"full": {}, "small": {"ch": 32, "norm_num_groups": 8, "use_tiling": False}}
FRAMES = (33, 257)
MIB = 2**20


def _measure_here(config: str, frames: int, height: int, width: int, device: str, dtype: str) -> dict:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = AutoencoderKLMagvit(**CONFIGS[config]).to(dev, getattr(torch, dtype)).eval()
    latents = 1 + (frames - 1) // 4 if frames % 2 else frames // 4
    z = torch.randn(1, 4, latents, height // 8, width // 8, device=dev, dtype=model.dtype)
    start = time.perf_counter()
    decoded = 0
    with torch.no_grad(), peak_memory(dev) as memory:
        for chunk in model.decode_stream(z):  # consumed and dropped, as a video writer would
            decoded += chunk.shape[2]
    seconds = time.perf_counter() - start
    peak, baseline = memory.peak, memory.start
    return {"frames": decoded, "latent_frames": latents, "seconds": round(seconds, 3),
            "peak_mib": round(peak / MIB, 1), "baseline_mib": round(baseline / MIB, 1),
            "decode_mib": round((peak - baseline) / MIB, 1)}


def measure_decode(config: str, frames: int, height: int, width: int, device: str = "cpu",
                   dtype: str | torch.dtype = "float32") -> dict:
    """Time and peak memory of ``decode_stream`` over a ``frames``-frame clip; CPU runs in a fresh process."""
    dtype = str(dtype).removeprefix("torch.")
    if torch.device(device).type == "cuda":
        return _measure_here(config, frames, height, width, device, dtype)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(frames), "--config", config,
           "--height", str(height), "--width", str(width), "--device", device, "--dtype", dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--one", type=int, metavar="FRAMES", help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(_measure_here(args.config, args.one, args.height, args.width, args.device, args.dtype)))
        return
    runs = [measure_decode(args.config, f, args.height, args.width, args.device, args.dtype) for f in FRAMES]
    print(json.dumps({"bench": "vae_decode_stream", "config": args.config, "height": args.height,
                      "width": args.width, "device": args.device, "dtype": args.dtype, "runs": runs}))


if __name__ == "__main__":
    main()
