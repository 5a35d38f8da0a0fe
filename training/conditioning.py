"""Frozen helper models and the turning of a data batch into the transformer's inputs.

Everything here is frozen: the EasyAnimateV3 MagViT VAE (video, inpaint mask and masked video latents), the
CLIP image encoder (reference embedding), T5 (caption tokens, encoded once per distinct caption through the
on-disk cache of ``ditalker_core.extract.emotion`` and then unloaded), DINOv2 (identity loss targets) and the
SyncNet expert (sync loss). All randomness (VAE posterior samples, inpaint masks, condition dropout) is drawn
from the step's ``StepRandom``: one generator per sample, seeded by the step and the sample's place in the global
batch, so a resumed run repeats the uninterrupted one and N processes draw what one process with N times the
batch draws.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from ditalker_core.checkpoints import load_vae
from ditalker_core.errors import MissingModelError
from ditalker_core.extract.emotion import T5PromptEncoder
from ditalker_core.extract.reference import encode_reference, load_clip_vision
from ditalker_core.models.syncnet import SyncNet, load_syncnet
from ditalker_core.models.vae import AutoencoderKLMagvit

logger = logging.getLogger(__name__)

DINOV2_SOURCE = "https://huggingface.co/facebook/dinov2-base (config.json + model.safetensors)"


class MemoryCache:
    """Results of the frozen encoders (VAE moments, CLIP embeddings) by the content of their input, in memory.

    The frozen encoders are deterministic, so an input seen before (the same frames, mask, masked video or
    reference) gets its stored result, and only the VAE posterior sample is drawn anew: exactly the uncached
    computation without the encoders' cost after the first epoch. Worth it for small sets of fixed windows
    (the synthetic demo set: one window per clip); random windows of long videos rarely repeat.
    """

    def __init__(self) -> None:
        self.results: dict[tuple[str, bytes], torch.Tensor] = {}

    def per_item(self, kind: str, items: torch.Tensor | np.ndarray,
                 compute: Callable[[Any], torch.Tensor]) -> torch.Tensor:
        """``compute(item)`` (a batch of one) for every item along the first axis, stacked on the CPU."""
        out = []
        for item in items:
            array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
            key = (kind, hashlib.blake2b(array.tobytes(), digest_size=16).digest() + str(array.shape).encode())
            if key not in self.results:
                self.results[key] = compute(item).detach().cpu()
            out.append(self.results[key])
        return torch.cat(out)


@dataclass
class FrozenModels:
    vae: AutoencoderKLMagvit
    clip: Any
    clip_processor: Any
    prompts: dict[str, tuple[torch.Tensor, torch.Tensor]]  # caption -> (tokens (L, D), mask (L,))
    dinov2: Optional[torch.nn.Module] = None
    syncnet: Optional[SyncNet] = None
    cache: Optional[MemoryCache] = None


def _path(config: dict[str, Any], key: str, default_sub: str = "") -> Path:
    models = config["models"]
    value = models.get(key)
    return Path(value) if value else Path(models["easyanimate"]) / default_sub


def load_dinov2(path: str | Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A transformers DINOv2 folder (``Dinov2Model``; register variants work too)."""
    from transformers import AutoModel

    path = Path(path)
    weights = [path / "model.safetensors", path / "pytorch_model.bin"]
    if not (path / "config.json").is_file() or not any(w.is_file() for w in weights):
        raise MissingModelError("DINOv2 folder for the identity loss", [path / "config.json", *weights], path,
                                DINOV2_SOURCE)
    return AutoModel.from_pretrained(path).to(device=device, dtype=dtype).eval().requires_grad_(False)


def encode_prompts(encoder: T5PromptEncoder, texts: Iterable[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every distinct non-empty caption -> (tokens, mask); T5 is unloaded afterwards (the cache keeps them)."""
    prompts = {}
    for text in sorted(set(texts)):
        if text:
            tokens = encoder(text)
            prompts[text] = (tokens.embeds[0], tokens.mask[0])
    encoder.unload()
    return prompts


def load_frozen(config: dict[str, Any], texts: Iterable[str], device: torch.device, dtype: torch.dtype
                ) -> FrozenModels:
    """Load the helpers the enabled losses need, from local paths only."""
    losses = config["losses"]
    vae = load_vae(_path(config, "vae", "vae"), dtype, device)
    clip, processor = load_clip_vision(_path(config, "image_encoder"), device, dtype)
    clip.requires_grad_(False)
    cache = config["models"]["text_cache"] or Path(config["output_dir"]) / "t5_cache"
    encoder = T5PromptEncoder(_path(config, "text_encoder"), cache_dir=cache, device=device, dtype=dtype)
    frozen = FrozenModels(vae, clip, processor, encode_prompts(encoder, texts),
                          cache=MemoryCache() if config["data"]["memory_cache"] else None)
    if losses["id"]["weight"]:
        frozen.dinov2 = load_dinov2(config["models"]["dinov2"], device, dtype)
    if losses["sync"]["weight"]:
        frozen.syncnet = load_syncnet(config["models"]["syncnet"], device, dtype).requires_grad_(False)
    return frozen


# ----------------------------------------------------------------------------- randomness
@dataclass
class StepRandom:
    """The draws of one micro-step. ``samples``: one generator per sample of this process, seeded by (seed, step,
    micro-step, index in the global batch), so what a sample draws does not depend on how the global batch is
    split over processes; ``shared``: the choices made once for the whole global batch (the REPA chunk, the
    sync loss's frames), the same in every process."""

    shared: torch.Generator
    samples: list[torch.Generator]

    @classmethod
    def of_step(cls, seed: int, step: int, micro: int, first: int, count: int) -> "StepRandom":
        """Samples ``first .. first + count - 1`` of the global batch of (``step``, ``micro``)."""
        def generator(*key: int) -> torch.Generator:
            words = np.random.SeedSequence([seed, step, micro, *key]).generate_state(2)
            return torch.Generator().manual_seed(int(words[0]) << 31 | int(words[1]) >> 1)

        return cls(generator(), [generator(1, first + i) for i in range(count)])

    def randn(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """(B, *rest) standard normal, sample i from its own generator."""
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in self.samples])

    def rand(self) -> torch.Tensor:
        """(B,) uniform, one per sample."""
        return torch.cat([torch.rand(1, generator=g) for g in self.samples])


# ----------------------------------------------------------------------------- inpaint masks
def _randint(low: int, high: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high, (1,), generator=generator))


def inpaint_mask(frames: int, height: int, width: int, mode: str, generator: torch.Generator,
                 known_frames: int = 8) -> torch.Tensor:
    """(1, F, H, W) mask, 1 = to generate. ``first_frame``: only frame 0 is known (a first window at inference).
    ``continuation``: half the time frame 0, half the time the first ``known_frames`` (what the pipeline's
    later windows know: the overlap). ``official``: EasyAnimate's ``get_random_mask`` mixture (5% box, 30% all,
    30% after the first k frames, 30% between the first and last k frames, 5% box over a frame range; k in 1..4)."""
    mask = torch.zeros(1, frames, height, width)
    if mode == "first_frame":
        mask[:, 1:] = 1
        return mask
    if mode == "continuation":
        mask[:, known_frames if torch.rand(1, generator=generator) < 0.5 else 1:] = 1
        return mask
    kind = int(torch.multinomial(torch.tensor([0.05, 0.3, 0.3, 0.3, 0.05]), 1, generator=generator))
    if kind in (0, 4):
        cx, cy = _randint(0, width, generator), _randint(0, height, generator)
        bw = _randint(width // 4, max(width // 4 * 3, width // 4 + 1), generator)
        bh = _randint(height // 4, max(height // 4 * 3, height // 4 + 1), generator)
        rows = slice(max(cy - bh // 2, 0), min(cy + bh // 2, height))
        cols = slice(max(cx - bw // 2, 0), min(cx + bw // 2, width))
        span = slice(None) if kind == 0 else slice(_randint(0, max(frames // 2, 1), generator),
                                                   _randint(frames // 2, frames, generator))
        mask[:, span, rows, cols] = 1
    elif kind == 1:
        mask[:] = 1
    elif kind == 2:
        mask[:, _randint(1, 5, generator):] = 1
    else:
        k = _randint(1, 5, generator)
        mask[:, k:frames - k] = 1
    return mask


# ----------------------------------------------------------------------------- batch -> inputs
def _encode(vae: AutoencoderKLMagvit, video: torch.Tensor, draws: StepRandom,
            cache: Optional[MemoryCache] = None) -> torch.Tensor:
    if cache is None:
        posterior = vae.encode(video.to(vae.dtype))
    else:
        moments = cache.per_item("vae", video, lambda clip: vae.encode(clip[None].to(vae.dtype)).parameters)
        posterior = DiagonalGaussianDistribution(moments.to(video.device))
    noise = draws.randn(posterior.mean.shape).to(posterior.mean)
    return (posterior.mean + posterior.std * noise) * vae.config.scaling_factor


CONDITIONS = ("audio", "phoneme", "pose", "reference", "style", "text")


def keep_masks(drop: dict[str, float], draws: StepRandom) -> dict[str, torch.Tensor]:
    """Per condition, a (B,) bool tensor: True = keep, False = replace by the null condition (probability
    ``drop[name]``, 0 when not listed); one independent draw per sample and condition."""
    return {name: draws.rand() >= float(drop.get(name, 0.0)) for name in CONDITIONS}


@torch.no_grad()
def prepare_inputs(batch: dict[str, Any], frozen: FrozenModels, config: dict[str, Any], clip_tokens: int,
                   draws: StepRandom, device: torch.device
                   ) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
    """-> (clean latents (B, C, f, h, w), model kwargs except the noisy latent and timestep, keep masks).

    A dropped condition is zeroed for that sample (text and reference: their attention masks are zeroed),
    which is exactly the model's null for it.
    """
    pixels = batch["pixel_values"].to(device).permute(0, 2, 1, 3, 4).float() / 127.5 - 1  # (B, 3, F, H, W)
    b, _, frames, height, width = pixels.shape
    cache = frozen.cache
    latents = _encode(frozen.vae, pixels, draws, cache)

    data = config["data"]
    mask = torch.stack([inpaint_mask(frames, height, width, data["inpaint_mask"], g, data["known_frames"])
                        for g in draws.samples]).to(device)  # (B, 1, F, H, W)
    masked = pixels * (1 - mask) - mask
    inpaint = torch.cat([_encode(frozen.vae, mask.expand(-1, 3, -1, -1, -1), draws, cache),
                         _encode(frozen.vae, masked, draws, cache)], dim=1)
    no_reference = mask.flatten(1).amin(1).cpu() > 0.5
    p_zero = config["conditions"]["zero_inpaint_without_reference"]
    zero = no_reference & (draws.rand() < p_zero)
    inpaint = inpaint * (~zero).to(device, inpaint.dtype).view(-1, 1, 1, 1, 1)

    keep = keep_masks(config["conditions"]["drop"], draws)
    first = batch["pixel_values"][:, 0].permute(0, 2, 3, 1).cpu().numpy()  # reference frame, (B, H, W, 3)
    def reference(image: np.ndarray) -> torch.Tensor:
        return encode_reference(image, frozen.clip, frozen.clip_processor, (height, width))

    clip = (torch.cat([reference(image) for image in first]) if cache is None
            else cache.per_item("clip", first, reference)).to(device)
    keep_ref = keep["reference"].to(device)
    clip = clip * keep_ref.view(-1, 1).to(clip.dtype)
    clip_mask = keep_ref.view(-1, 1).expand(b, clip_tokens).float()

    text_tokens = text_mask = None  # no caption anywhere in the data: the model's null text
    if frozen.prompts:
        some_tokens, some_mask = next(iter(frozen.prompts.values()))
        null = (torch.zeros_like(some_tokens), torch.zeros_like(some_mask))  # an empty caption is no text
        pairs = [frozen.prompts.get(text, null) for text in batch["text"]]
        keep_text = keep["text"].to(device).view(-1, 1)
        text_tokens = torch.stack([tokens for tokens, _ in pairs]).to(device)
        text_tokens = text_tokens * keep_text[..., None].to(text_tokens.dtype)
        text_mask = torch.stack([mask for _, mask in pairs]).to(device).float() * keep_text.float()

    def kept(name: str, value: torch.Tensor) -> torch.Tensor:
        flag = keep[name].to(device).view(-1, *([1] * (value.ndim - 1)))
        return value.to(device) * flag.to(value.dtype)

    kwargs = {
        "inpaint_latents": inpaint,
        "encoder_hidden_states": text_tokens,
        "encoder_attention_mask": text_mask,
        "clip_encoder_hidden_states": clip,
        "clip_attention_mask": clip_mask,
        "audio_encoder_hidden_states": kept("audio", batch["audio"]),
        "phoneme_win": kept("phoneme", batch["phoneme_win"]),
        "style_clip": kept("style", batch["style_clip"]),
        "pad_mask": batch["pad_mask"].to(device),
        "pixel_values_pose": kept("pose", batch["pose"].permute(0, 2, 1, 3, 4).float() / 255.0),
    }
    return latents, kwargs, keep
