"""Forward time and peak memory of the DiTalker transformer, VAE decode peak memory at 33 and 257 frames, and
(optionally) the same forward in the official implementation at the same config. Prints one JSON line.

    python bench/model.py [--config tiny|xl|easyanimate_v3_xl|official_tiny] [--frames 16] [--height 512]
                          [--width 512] [--dtype float32] [--device cpu] [--repeat 3] [--vae-config small]
                          [--reference-path DiTalker-CVIU --reference-python ref-venv/bin/python]

Every condition is fed (audio, phonemes, style clip, pose video, text, CLIP), random weights. With
``--reference-path`` the official ``Transformer3DModel`` (a checkout of fenghe12/DiTalker-CVIU, run by
``--reference-python``, an environment with the diffusers it was written for) runs the identical call in a fresh
process, and ``ratio_ours_over_reference`` compares the median forward times (< 1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ditalker_core.pipeline.estimate import peak_memory  # noqa: E402

SHARED = ROOT.parent / "shared" / "fixtures" / "ditalker_official"


def official_config(name: str) -> dict:
    """The official ``Transformer3DModel`` kwargs of a named config (from the fixture manifests)."""
    manifest = {"official_tiny": "ditalker_official_tiny.json", "xl": "ditalker_official_xl.json"}[name]
    return json.loads((SHARED / manifest).read_text())["config"]


def inputs(cfg: dict, frames: int, height: int, width: int, dtype: torch.dtype, device: str) -> dict:
    """The official call's keyword arguments; latent size = pixels / 8. Same seed -> same tensors in both runs."""
    g = torch.Generator().manual_seed(0)
    h, w = height // 8, width // 8
    audio_frames = cfg.get("audio_frames", 64)
    x = dict(
        hidden_states=torch.randn(1, 4, frames, h, w, generator=g),
        inpaint_latents=torch.randn(1, 8, frames, h, w, generator=g),
        encoder_hidden_states=torch.randn(1, 8, cfg["caption_channels"], generator=g),
        encoder_attention_mask=torch.ones(1, 8, dtype=torch.long),
        clip_encoder_hidden_states=torch.randn(1, 768, generator=g),
        clip_attention_mask=torch.ones(1, 8),
        timestep=torch.tensor([500]),
        audio_encoder_hidden_states=torch.randn(1, audio_frames, 50, 384, generator=g),
        phoneme_win=torch.randint(0, 75, (1, audio_frames, 11), generator=g),
        style_clip=torch.randn(1, 256, 64, generator=g),
        pixel_values_pose=torch.rand(1, 3, 4 * frames, 4 * h, 4 * w, generator=g),
    )
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in x.items()}


def time_forward(model: torch.nn.Module, kwargs: dict, repeat: int, device: str) -> dict:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    with torch.no_grad():
        model(**kwargs)  # warm-up
        with peak_memory(torch.device(device)) as peak:
            for _ in range(repeat):
                sync()
                start = time.perf_counter()
                model(**kwargs)
                sync()
                times.append(time.perf_counter() - start)
    return {"forward_s_median": round(statistics.median(times), 4), "forward_s_all": [round(t, 4) for t in times],
            "peak_mib": round(peak.peak / 2**20, 1)}


def build_ours(config: str, dtype: torch.dtype, device: str) -> tuple[torch.nn.Module, dict]:
    from ditalker_core.checkpoints import config_from_official
    from ditalker_core.models import DiTalkerTransformer3DModel, get_config

    if config in ("official_tiny",):
        official = official_config(config)
        kwargs = config_from_official(official)
    else:
        kwargs = get_config(config)
        official = {"caption_channels": kwargs.get("caption_channels", 4096)}
    with torch.device(device):
        model = DiTalkerTransformer3DModel(**kwargs)
    return model.to(dtype).eval(), {**official, "audio_frames": model.config.audio_frames}


def run_reference(args: argparse.Namespace) -> dict:
    """The official forward, in this process (called in the reference environment)."""
    sys.path.insert(0, args.reference_path)
    from ditalker.models.base.transformer3d import Transformer3DModel  # the official code

    cfg = official_config(args.config)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Transformer3DModel(**cfg)
    model = model.to(getattr(torch, args.dtype)).eval()
    kwargs = inputs(cfg, args.frames, args.height, args.width, getattr(torch, args.dtype), args.device)
    kwargs.update(added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)
    return time_forward(model, kwargs, args.repeat, args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", choices=["tiny", "xl", "easyanimate_v3_xl", "official_tiny"])
    parser.add_argument("--frames", type=int, default=4, help="latent frames")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vae-config", default="small", choices=["small", "full", "none"])
    parser.add_argument("--reference-path", help="checkout of fenghe12/DiTalker-CVIU to compare against")
    parser.add_argument("--reference-python", default=sys.executable, help="interpreter for the reference")
    parser.add_argument("--as-reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_reference:
        print(json.dumps(run_reference(args)))
        return

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    model, cfg = build_ours(args.config, dtype, args.device)
    kwargs = inputs(cfg, args.frames, args.height, args.width, dtype, args.device)
    if model.config.enable_repa:
        kwargs["repa_index"] = 0
    result = {"bench": "model_forward", "config": args.config, "latent_frames": args.frames,
              "height": args.height, "width": args.width, "dtype": args.dtype, "device": args.device,
              "ours": time_forward(model, kwargs, args.repeat, args.device)}
    del model
    if args.reference_path:
        cmd = [args.reference_python, str(Path(__file__).resolve()), "--as-reference", "--config", args.config,
               "--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width),
               "--dtype", args.dtype, "--device", args.device, "--repeat", str(args.repeat),
               "--reference-path", args.reference_path]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        result["reference"] = json.loads(out.strip().splitlines()[-1])
        result["ratio_ours_over_reference"] = round(
            result["ours"]["forward_s_median"] / result["reference"]["forward_s_median"], 3)
    if args.vae_config != "none":
        from vae import measure_decode

        result["vae_decode"] = [measure_decode(args.vae_config, f, args.height, args.width, args.device,
                                               args.dtype) for f in (33, 257)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
