"""Whisper audio features: any audio -> (frames, 50, 384) windows for DiTalker's audio cross-attention.

Reproduces the official preprocessing (MuseTalk-style Whisper features, see DiTalker's
``preprocessing/extract_audio_embeddings.py``): the Whisper encoder runs at 50 tokens/s; for
every token the positional-embedded input and the raw output of every encoder block are kept
(whisper-tiny: 1 + 4 = 5 rows of 384); video frame ``i`` takes the 10 tokens
``c-4 .. c+5`` around ``c = floor(i * 50 / fps)``, clamped to the clip, i.e. 2 video frames
either side at 25 fps. 10 tokens x 5 rows = 50 rows.

Unlike the official script, audio longer than Whisper's 30 s window is encoded in overlapping
windows on the 20 ms token grid and only each window's centre is kept, so there is no seam
every 30 s and no drift: token ``t`` always covers ``[t * 20 ms, (t + 1) * 20 ms)``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, MissingModelError
from .faster_whisper import is_ctranslate2_folder, load_whisper_encoder
from ..media import exact_fps, frame_count, load_audio_channels, resample

SAMPLE_RATE = 16000
TOKENS_PER_SECOND = 50
SAMPLES_PER_TOKEN = SAMPLE_RATE // TOKENS_PER_SECOND
# Tokens of context left and right of each video frame's centre token (official: 2 frames * 2 tokens).
WINDOW_LEFT, WINDOW_RIGHT = 4, 5
# Long audio: each 30 s (1500-token) window keeps its middle 1000 tokens, so every kept token
# sees at least 5 s of real context on both sides (except at the ends of the clip).
_WINDOW_TOKENS, _HOP_TOKENS = 1500, 1000
_CONTEXT_TOKENS = (_WINDOW_TOKENS - _HOP_TOKENS) // 2

MODEL_FOLDER = "models/audio_encoders"
MODEL_SOURCE = "https://huggingface.co/openai/whisper-tiny"


@dataclass
class AudioFeatures:
    """Per-video-frame Whisper windows, (num_frames, 10 * (encoder_layers + 1), d_model)."""

    windows: torch.Tensor
    num_frames: int
    fps: float


def frame_windows(tokens: torch.Tensor, num_frames: int, fps: float) -> torch.Tensor:
    """(T, R, d) tokens at 50/s -> (num_frames, 10 * R, d): official MuseTalk slicing at any fps.

    Frame ``i`` is centred on the token that covers time ``i / fps``; indices past either end of
    the clip repeat the first/last token, as in the official code.
    """
    if tokens.ndim != 3 or len(tokens) == 0:
        raise InputError(f"Whisper tokens have shape {tuple(tokens.shape)}; expected non-empty (T, rows, d)")
    rate = exact_fps(fps)
    centres = torch.tensor([int(Fraction(i * TOKENS_PER_SECOND) / rate) for i in range(num_frames)])
    offsets = torch.arange(-WINDOW_LEFT, WINDOW_RIGHT + 1)
    index = (centres[:, None] + offsets[None]).clamp(0, len(tokens) - 1).to(tokens.device)
    windows = tokens[index]  # (F, 10, R, d)
    return windows.flatten(1, 2)


class AudioEncoder:
    """Whisper encoder + feature extractor, loaded once and reused for every clip."""

    def __init__(self, encoder: torch.nn.Module, feature_extractor: Any):
        self.encoder = encoder.eval()
        self.feature_extractor = feature_extractor

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> "AudioEncoder":
        """Load a transformers Whisper folder or a faster-whisper (CTranslate2) one (any size; whisper-tiny is
        what DiTalker was trained on)."""
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

        path = Path(path)
        if is_ctranslate2_folder(path):
            encoder = load_whisper_encoder(path)
            if (path / "preprocessor_config.json").is_file():
                extractor = WhisperFeatureExtractor.from_pretrained(path)
            else:
                extractor = WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)
            return cls(encoder.to(device, dtype), extractor)
        weights = [path / "model.safetensors", path / "pytorch_model.bin"]
        if not (path / "config.json").is_file() or not any(w.is_file() for w in weights):
            raise MissingModelError(
                "Whisper model folder (config.json + model.safetensors)",
                [path / "config.json", *weights],
                MODEL_FOLDER,
                MODEL_SOURCE,
            )
        config = WhisperConfig.from_pretrained(path)
        if config.architectures == ["WhisperEncoder"]:  # an encoder-only folder (e.g. the demo's)
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            encoder = WhisperEncoder.from_pretrained(path, torch_dtype=torch.float32)
        else:
            encoder = WhisperModel.from_pretrained(path).get_encoder()
        if (path / "preprocessor_config.json").is_file():
            extractor = WhisperFeatureExtractor.from_pretrained(path)
        else:  # a bare checkpoint: Whisper's extractor is fully defined by the mel-bin count
            extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        return cls(encoder.to(device, dtype), extractor)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    @torch.inference_mode()
    def _encode_window(self, audio: np.ndarray) -> torch.Tensor:
        """<= 30 s of 16 kHz audio -> (1500, layers + 1, d): embeddings plus every raw block output.

        Hooks capture the block outputs because transformers' ``hidden_states`` ends with the
        final layer-normed state, while the official features use the last block before it.
        """
        mel = self.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        states: list[torch.Tensor] = []

        def keep_input(_module, args, kwargs):
            states.append(args[0] if args else kwargs["hidden_states"])

        def keep_output(_module, _args, output):
            states.append(output[0] if isinstance(output, tuple) else output)

        layers = self.encoder.layers
        hooks = [layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
        hooks += [layer.register_forward_hook(keep_output) for layer in layers]
        try:
            self.encoder(mel.to(self.device, self.dtype))
        finally:
            for hook in hooks:
                hook.remove()
        return torch.stack(states, dim=2)[0]

    def tokens(self, audio: np.ndarray) -> torch.Tensor:
        """16 kHz mono audio -> (T, layers + 1, d) at 50 tokens/s, T = floor(samples / 320) as official."""
        total = max(1, len(audio) // SAMPLES_PER_TOKEN)
        if total <= _WINDOW_TOKENS:
            return self._encode_window(audio)[:total]
        parts = []
        for keep_start in range(0, total, _HOP_TOKENS):
            start = max(0, keep_start - _CONTEXT_TOKENS)
            chunk = audio[start * SAMPLES_PER_TOKEN:(start + _WINDOW_TOKENS) * SAMPLES_PER_TOKEN]
            keep_end = min(total, keep_start + _HOP_TOKENS)
            parts.append(self._encode_window(chunk)[keep_start - start:keep_end - start])
        return torch.cat(parts)

    def encode(
        self, audio: Any, fps: float = 25.0, num_frames: int | None = None, sample_rate: int | None = None
    ) -> AudioFeatures:
        """Any audio (path, array + ``sample_rate``, ComfyUI AUDIO) -> windows for ``num_frames`` frames.

        ``num_frames`` defaults to ceil(duration * fps); pass the video length to pad/trim to it.
        """
        channels, rate = load_audio_channels(audio, sample_rate)
        if channels.shape[1] == 0:
            raise InputError("the audio is empty; pass audio with at least one sample")
        frames = frame_count(channels.shape[1], rate, fps) if num_frames is None else int(num_frames)
        if frames < 1:
            raise InputError(f"num_frames is {num_frames}; pass at least 1 frame")
        mono = resample(channels.mean(axis=0), rate, SAMPLE_RATE)
        return AudioFeatures(frame_windows(self.tokens(mono), frames, fps), frames, float(fps))


def add_arguments(parser: argparse.ArgumentParser) -> None:  # pragma: no mutate block (CLI wiring)
    parser.add_argument("--whisper", default=f"{MODEL_FOLDER}/whisper-tiny",
                        help="transformers Whisper folder (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=25.0, help="video frame rate (default: %(default)s)")
    parser.add_argument("--num-frames", type=int, default=None, help="force this many frames (default: from duration)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def run(args: argparse.Namespace) -> None:  # pragma: no mutate block (CLI wiring)
    """Save the (frames, 50, 384) float32 tensor in the official ``.pt`` layout."""
    dtype = torch.float16 if str(args.device).startswith("cuda") else torch.float32
    encoder = AudioEncoder.from_pretrained(args.whisper, args.device, dtype)
    features = encoder.encode(args.input, fps=args.fps, num_frames=args.num_frames)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(features.windows.float().cpu(), out)
