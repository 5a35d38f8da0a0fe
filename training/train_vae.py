"""Train a MagViT slice VAE on a dataset's clips: ``python -m training.train_vae --metadata M --out DIR``.

For a new domain (the synthetic demo faces, a small resolution) where the released EasyAnimateV3 VAE does not
fit. The loss is an L1 + L2 reconstruction weighted up on the face and more on the eyes and lips, plus a small KL
term. Each step sees ``batch`` clips of ``mini_batch_encoder`` frames (exactly the slices the encoder and decoder
see at inference; the V3 slice layout is unchanged) and ``images`` single frames (an odd clip's lone first frame,
which shares every weight): neighbouring frames of a clip are nearly alike, so the single frames give many more
distinct faces per step for the same compute, as EasyAnimate trained its VAE on images and videos together. At the
end ``scaling_factor`` is set to 1 / std of the latents, as for the released VAE, and ``OUT/`` is written as a
``vae/`` folder (``config.json`` + safetensors) that every loader reads. ``OUT/state.pt`` is a resumable training
state (rerun the same command to continue); ``--init FOLDER`` starts from a finished VAE instead (fresh optimizer;
one with fewer latent channels is widened without changing what it computes, ``widen_latent``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ditalker_core.models import get_vae_config
from ditalker_core.models.vae import AutoencoderKLMagvit
from training.dataset import fit_square, read_frames, read_mask, read_metadata

logger = logging.getLogger("training.vae")


def clip_batch(records: list, rng: np.random.Generator, batch: int, frames: int, size: int,
               region_weight: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, frames, size, size) in [-1, 1] from random records and starts, and (B, 1, 1, size, size) weights:
    1, plus 3 on the face, plus ``region_weight`` on the eye and lip regions (the small parts that carry the
    expression and the lip sync)."""
    videos, weights = [], []
    for index in rng.integers(0, len(records), batch):
        record = records[int(index)]
        total = record.num_frames or frames
        start = int(rng.integers(0, max(1, total - frames + 1)))
        clip = torch.from_numpy(read_frames(record.video, start, frames)).permute(0, 3, 1, 2)
        videos.append(fit_square(clip, size).float().div(127.5).sub(1).transpose(0, 1))
        face, eye, lip = (read_mask(record.masks[name], size) for name in ("face", "eye", "lip"))
        zeros = torch.zeros(size, size)
        regions = torch.maximum(eye if eye is not None else zeros, lip if lip is not None else zeros)
        weights.append(1 + 3 * (face if face is not None else zeros) + region_weight * regions)
    return torch.stack(videos), torch.stack(weights)[:, None, None]


def vae_loss(vae: AutoencoderKLMagvit, video: torch.Tensor, weight: torch.Tensor, kl_weight: float,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    posterior = vae.encode(video)
    recon = vae.decode(posterior.sample(generator))
    error = recon - video
    l1 = (error.abs() * weight).mean() / weight.mean()
    l2 = (error.square() * weight).mean() / weight.mean()
    kl = 0.5 * (posterior.mean.square() + posterior.var - 1.0 - posterior.logvar).mean()
    total = l1 + l2 + kl_weight * kl
    return total, {"loss": total.item(), "l1": l1.item(), "l2": l2.item(), "kl": kl.item()}


@torch.no_grad()
def latent_std(vae: AutoencoderKLMagvit, records: list, frames: int, size: int, count: int = 32) -> float:
    rng = np.random.default_rng(1234)
    samples = [vae.encode(clip_batch(records, rng, 1, frames, size)[0]).mode() for _ in range(count)]
    return float(torch.cat([s.flatten() for s in samples]).std())


def warm_start(vae: AutoencoderKLMagvit, weights: dict[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of ``weights`` whose name and shape match; returns the names left at their fresh init.

    A trained VAE with fewer latent channels is widened first (``widen_latent``), so nothing is left fresh."""
    own = vae.state_dict()
    if weights["post_quant_conv.weight"].shape[0] < vae.config.latent_channels:
        weights = widen_latent(weights, own)
    kept = {name: value for name, value in weights.items() if name in own and own[name].shape == value.shape}
    vae.load_state_dict({**own, **kept})
    return sorted(set(own) - set(kept))


def widen_latent(weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                 new_logvar: float = -10.0) -> dict[str, torch.Tensor]:
    """Net2Net-style widening of a VAE's latent from C to C' channels that keeps its function: the encoder's new
    mean channels keep ``own``'s fresh weights (so gradients reach them), their log-variance is ``new_logvar``,
    ``quant_conv`` and ``post_quant_conv`` pass the new channels through, and the decoder reads them with zero
    weights. The widened VAE reconstructs exactly as the trained one and learns to use the new channels."""
    old, new = weights["post_quant_conv.weight"].shape[0], own["post_quant_conv.weight"].shape[0]
    moments = torch.cat([torch.arange(old), new + torch.arange(old)])  # old mean | old logvar -> new positions
    out = dict(weights)
    w, b = own["encoder.conv_out.weight"].clone(), own["encoder.conv_out.bias"].clone()
    w[new:], b[new:] = 0.0, new_logvar
    w[moments], b[moments] = weights["encoder.conv_out.weight"], weights["encoder.conv_out.bias"]
    out["encoder.conv_out.weight"], out["encoder.conv_out.bias"] = w, b
    for name, index, size in (("quant_conv", moments, 2 * new), ("post_quant_conv", torch.arange(old), new)):
        w = torch.eye(size).reshape(size, size, 1, 1, 1)
        w[index[:, None], index[None, :]] = weights[f"{name}.weight"]
        b = torch.zeros(size)
        b[index] = weights[f"{name}.bias"]
        out[f"{name}.weight"], out[f"{name}.bias"] = w, b
    w = torch.zeros_like(own["decoder.conv_in.weight"])
    w[:, :old] = weights["decoder.conv_in.weight"]
    out["decoder.conv_in.weight"] = w
    return out


def train(metadata: str, out: str, config: str = "demo", steps: int = 3000, batch: int = 2, images: int = 16,
          frames: int = 8, size: int = 64, lr: float = 5e-4, kl_weight: float = 1e-6, seed: int = 0,
          save_every: int = 250, init: str | None = None) -> Path:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = read_metadata(metadata)
    torch.manual_seed(seed)
    vae = AutoencoderKLMagvit(**get_vae_config(config))
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    state_path, step = out_dir / "state.pt", 0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        logger.info("resumed at step %d", step)
    elif init:  # start from a finished VAE (the optimizer starts afresh, steps count from 0)
        fresh = warm_start(vae, AutoencoderKLMagvit.from_local(init).state_dict())
        logger.info("initialised from %s; left at their fresh init: %s", init, fresh or "none")
    log = (out_dir / "metrics.jsonl").open("a")
    while step < steps:
        started = time.time()
        rng = np.random.default_rng([seed, step])
        generator = torch.Generator().manual_seed(seed * 100003 + step)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        optimizer.zero_grad(set_to_none=True)
        values: dict[str, float] = {}
        for count, length in ((batch, frames), (images, 1)):
            if count:
                video, weight = clip_batch(records, rng, count, length, size)
                total, parts = vae_loss(vae, video, weight, kl_weight, generator)
                (total / 2).backward()
                values.update({k if length > 1 else f"image_{k}": v for k, v in parts.items()})
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 25 == 0 or step == 1:
            log.write(json.dumps({"step": step, **values, "seconds": time.time() - started}) + "\n")
            log.flush()
            logger.info("step %d %s", step, {k: round(v, 4) for k, v in values.items()})
        if step % save_every == 0 or step == steps:
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, tmp)
            tmp.replace(state_path)
    vae.eval()
    vae.register_to_config(scaling_factor=round(1.0 / latent_std(vae, records, frames, size), 5))
    vae.save_pretrained(out_dir)
    logger.info("wrote %s (scaling_factor %s)", out_dir, vae.config.scaling_factor)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default="demo", help="a VAE config name (ditalker_core.models.VAE_CONFIGS)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=2, help="clips per step")
    parser.add_argument("--images", type=int, default=16, help="single frames per step")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None, help="a VAE folder to continue from (when OUT has no state.pt)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args.metadata, args.out, args.config, args.steps, args.batch, args.images, args.frames, args.size, args.lr,
          args.kl_weight, args.seed, init=args.init)


if __name__ == "__main__":
    main()
