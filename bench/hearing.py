"""Does the model use its audio? The lip-region noise error on training windows, heard three ways.

Same windows, noise, timesteps and every other condition; only the audio changes: the window's own Whisper
features, another window's (the batch rolled by one), or none (the null audio). A model that hears has a clearly
lower error with its own audio than with the others; a model that ignores its audio gives three equal numbers
(the adherence benchmark's ``no_audio`` ablation then equals the full run). Much cheaper than sampling:

    python bench/hearing.py --checkpoint FILE [--metadata data/synthetic/metadata.json] [--windows 16]

Prints one JSON line: per timestep, the lip and whole-frame errors for ``own``, ``other`` and ``none``, and
``gain`` = other / own (1.0: deaf).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from ditalker_core.checkpoints import load_transformer
from training.conditioning import StepRandom, load_frozen, prepare_inputs
from training.config import load_config
from training.dataset import ClipDataset, read_metadata
from training.losses import GaussianDiffusion, region_loss

DEMO = "ditalker_core/demo/models"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=f"{DEMO}/ditalker/ditalker_demo.safetensors")
    parser.add_argument("--metadata", default="data/synthetic/metadata.json")
    parser.add_argument("--vae", default=f"{DEMO}/vae/ditalker_demo_vae")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[100, 300, 500, 700, 900])
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.time()
    config = load_config("training/configs/demo.yaml", [
        f"data.metadata={args.metadata}", f"models.vae={args.vae}", "losses.id.weight=0", "data.memory_cache=false",
        f"models.text_encoder={DEMO}/text_encoders/ditalker_demo_t5", "output_dir=output/hearing",
        f"models.image_encoder={DEMO}/clip_vision/ditalker_demo_clip", "data.inpaint_mask=first_frame"])
    config["conditions"]["drop"] = {}  # every condition kept
    model = load_transformer(args.checkpoint).requires_grad_(False)
    cfg = model.config
    records = read_metadata(args.metadata, config["data"]["root"])[:args.windows]
    dataset = ClipDataset(records, cfg.audio_frames, int(config["data"]["resolution"]), args.seed,
                          cfg.style_max_len, config["data"]["style_clip"])
    batch = torch.utils.data.default_collate([dataset[(i, 0)] for i in range(len(records))])
    frozen = load_frozen(config, [r.text for r in records], torch.device("cpu"), torch.float32)
    diffusion = GaussianDiffusion(**{k: config["diffusion"][k] for k in ("num_timesteps", "beta_start",
                                                                        "beta_end")})
    generator = torch.Generator().manual_seed(args.seed)
    random = StepRandom.of_step(args.seed, 0, 0, 0, len(records))
    latents, kwargs, _ = prepare_inputs(batch, frozen, config, cfg.clip_tokens, random, torch.device("cpu"))
    audio = kwargs.pop("audio_encoder_hidden_states")
    heard = {"own": audio, "other": audio.roll(1, dims=0), "none": torch.zeros_like(audio)}
    lip_mask = batch["lip_mask"]
    result: dict = {"checkpoint": str(args.checkpoint), "windows": len(records), "timesteps": {}}
    for step in args.timesteps:
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.full((len(records),), step)
        x_t = diffusion.q_sample(latents, t, noise)
        row = {}
        for name, features in heard.items():
            with torch.no_grad():
                eps = model(x_t, t, audio_encoder_hidden_states=features, **kwargs).sample.float().chunk(2, 1)[0]
            row[name] = {"lip": float(region_loss((eps - noise) ** 2, lip_mask)),
                         "all": float(((eps - noise) ** 2).mean())}
        row["gain"] = row["other"]["lip"] / row["own"]["lip"]
        result["timesteps"][str(step)] = row
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
