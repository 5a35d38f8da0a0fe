"""The pack's socket types and the small typed values that travel on them between nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from comfy_api.latest import io

from ..ditalker_core.pipeline import SampledVideo

MODEL = io.Custom("DITALKER_MODEL")
VAE = io.Custom("DITALKER_VAE")
AUDIO_FEATURES = io.Custom("DITALKER_AUDIO")
PHONEMES = io.Custom("DITALKER_PHONEMES")
STYLE = io.Custom("DITALKER_STYLE")
EMOTION = io.Custom("DITALKER_EMOTION")
REFERENCE = io.Custom("DITALKER_REFERENCE")
POSE = io.Custom("DITALKER_POSE")
LATENTS = io.Custom("DITALKER_LATENTS")
SPEED = io.Custom("DITALKER_SPEED")
POSE_KEYPOINT = io.Custom("POSE_KEYPOINT")  # what comfyui_controlnet_aux's DWPose node outputs


@dataclass
class AudioCondition:
    """Whisper windows per video frame, plus the user's audio untouched (the decode node passes it through)."""

    features: torch.Tensor  # (N, 50, d)
    num_frames: int
    fps: float
    audio: dict[str, Any]  # ComfyUI AUDIO


@dataclass
class StyleCondition:
    clip: torch.Tensor  # (L, 64) 3DMM expression coefficients
    pad_mask: torch.Tensor  # (L,) True = padding


@dataclass
class EmotionCondition:
    prompt: str
    tokens: torch.Tensor  # (L, C)
    mask: torch.Tensor  # (L,)
    negative_tokens: Optional[torch.Tensor]
    negative_mask: Optional[torch.Tensor]


@dataclass
class ReferenceCondition:
    image: torch.Tensor  # (3, H, W) in [-1, 1] at the output size
    clip_embedding: Optional[torch.Tensor]  # (768,)


@dataclass
class LatentVideo:
    """Sampled window latents plus the audio they were driven by (for the decode node's audio output)."""

    video: SampledVideo
    audio: AudioCondition
