"""The shipped demo: a small DiTalker trained on synthetic talking faces, the helpers it was trained with, and
demo inputs. ``python -m ditalker_core.demo`` renders a talking video from them on a CPU.

``models/`` is laid out like ComfyUI's ``models/`` folder (the pack registers each sub-folder, so the loaders
list the demo files without copying): ``ditalker/ditalker_demo.safetensors`` (the ``demo`` config),
``vae/ditalker_demo_vae/`` (MagViT at the ``demo`` width, trained on the synthetic frames),
``audio_encoders/whisper-tiny.en/`` (the encoder of OpenAI's Whisper tiny.en, MIT, converted from faster-whisper's
CTranslate2 files), and seeded random-weight stand-ins of T5 (``text_encoders/ditalker_demo_t5/``) and the CLIP
image encoder (``clip_vision/ditalker_demo_clip/``): the real encoders cannot be downloaded where it was built;
the real ones load the same way. ``inputs/``: a portrait, a speech clip (with its phoneme ids), and a
style clip (its 3DMM-format coefficients, its DWPose drawing, and the video). How each file was made: README.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..checkpoints import load_transformer, load_vae
from ..errors import InputError
from ..extract.audio import AudioEncoder
from ..extract.emotion import T5PromptEncoder, build_prompt
from ..extract.pose import adapter_frames
from ..extract.reference import encode_reference, load_clip_vision
from ..extract.style3dmm import load_expression, make_style_clip
from ..media import load_audio, read_video
from ..pipeline import Conditions, DiTalkerPipeline, Guidance, SamplingOptions, prepare_reference

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
INPUTS = ROOT / "inputs"
TRANSFORMER = MODELS / "ditalker" / "ditalker_demo.safetensors"
VAE = MODELS / "vae" / "ditalker_demo_vae"
WHISPER = MODELS / "audio_encoders" / "whisper-tiny.en"
T5 = MODELS / "text_encoders" / "ditalker_demo_t5"
CLIP = MODELS / "clip_vision" / "ditalker_demo_clip"
RESOLUTION = 64
FPS = 25

# What the demo model was tuned with (bench/adherence.py measures these settings). denoise 0.7: sampling starts
# from the still portrait noised to t = 700, not from pure noise: this small model's clean-latent estimate is worse
# than predicting zero above t = 800 (x0 MSE 1.27 at t = 800 and 15.8 at t = 950 against 1.31 for zero, on training
# windows), so samples started from pure noise lose the face.
DEFAULT_OPTIONS = SamplingOptions(steps=20, scheduler="dpm++", denoise=0.7,
                                  guidance=Guidance(audio=3.0, style=2.0, emotion=3.0))


@dataclass
class DemoInputs:
    """One request: a portrait, speech, a style clip (coefficients + DWPose drawing) and an emotion."""

    portrait: Path = INPUTS / "portrait.png"
    speech: Path = INPUTS / "speech.wav"
    phonemes: Optional[Path] = INPUTS / "speech_phonemes.json"  # per-frame ids; None = no phoneme condition
    style: Path = INPUTS / "style_coefficients.npy"
    pose: Path = INPUTS / "style_pose.mp4"
    emotion: str = "happy"


class DemoModels:
    """Every model of the demo, loaded once."""

    def __init__(self, transformer: str | Path = TRANSFORMER, device: str = "cpu",
                 vae_dtype: torch.dtype = torch.float32):
        if not Path(transformer).is_file():
            raise InputError(f"demo model {transformer} is missing; restore it with `git checkout -- {transformer}` "
                             f"or train it (README: the demo model)")
        self.pipeline = DiTalkerPipeline(load_transformer(transformer, device=device),
                                         load_vae(VAE, dtype=vae_dtype, device=device))
        self.audio = AudioEncoder.from_pretrained(WHISPER, device=device)
        self.t5 = T5PromptEncoder(T5, device=device)
        self.clip, self.clip_processor = load_clip_vision(CLIP, device)

    def conditions(self, portrait: Any, audio: np.ndarray, style: torch.Tensor, pose_frames: Any, emotion: str | None,
                   phoneme_ids: Optional[list[int]] = None, sample_rate: int = 16000) -> Conditions:
        """Model inputs for one video; ``style``/``pose_frames``/``emotion``/``phoneme_ids`` may be None (dropped)."""
        features = self.audio.encode(audio, fps=FPS, sample_rate=sample_rate)
        frames = features.num_frames
        size = (RESOLUTION, RESOLUTION)
        reference = prepare_reference(portrait, *size)
        clip = pad = None
        if style is not None:
            clip, pad = make_style_clip(style, self.pipeline.transformer.config.style_max_len, "middle")
        tokens = mask = embedding = None
        if emotion is not None:
            prompt = self.t5(build_prompt(emotion))
            tokens, mask = prompt.embeds[0], prompt.mask[0]
            image = ((reference.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            embedding = encode_reference(image, self.clip, self.clip_processor, size)[0]
        return Conditions(
            reference=reference, num_frames=frames, audio_features=features.windows,
            phoneme_ids=None if phoneme_ids is None else torch.as_tensor(phoneme_ids[:frames]),
            style_clip=clip, style_pad_mask=pad,
            pose_video=None if pose_frames is None else adapter_frames(pose_frames, size, frames),
            emotion_tokens=tokens, emotion_mask=mask, clip_embedding=embedding)


def read_inputs(inputs: DemoInputs) -> dict[str, Any]:
    """Files of a request -> the arguments of ``DemoModels.conditions``."""
    from PIL import Image

    for name in ("portrait", "speech", "style", "pose"):
        path = Path(getattr(inputs, name))
        if not path.is_file():
            raise InputError(f"{name} file {path} does not exist; pass an existing file (--{name})")
    audio, rate = load_audio(inputs.speech, 16000)
    phonemes = json.loads(Path(inputs.phonemes).read_text()) if inputs.phonemes else None
    return dict(portrait=np.asarray(Image.open(inputs.portrait).convert("RGB")), audio=audio, sample_rate=rate,
                style=load_expression(inputs.style), pose_frames=read_video(inputs.pose)[0], emotion=inputs.emotion,
                phoneme_ids=phonemes)
