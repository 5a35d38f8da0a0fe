"""Wav2Lip's colour SyncNet (the lip-sync expert the official DiTalker trainer loads) and its input recipe.

The official code builds ``SyncNet_color`` and loads ``syncnet_color.pth``, which is Wav2Lip's
``lipsync_expert.pth``. It scores 5 consecutive frames against 0.2 s of audio:

* faces: the lower half of 96 x 96 face crops, 5 frames stacked on channels -> (B, 15, 48, 96), values in
  [0, 1] in **BGR** order (Wav2Lip read frames with OpenCV; feeding RGB silently weakens the expert);
* audio: 16 steps of Wav2Lip's 80-bin log-mel spectrogram (80 steps per second) -> (B, 1, 80, 16).

Both encoders end in ReLU, so the L2-normalised embeddings are non-negative and their cosine lies in [0, 1];
the sync loss is the binary cross-entropy of that cosine against "in sync" (Wav2Lip's ``cosine_loss``).
``base_channels`` scales every width (32 is the released model) so tests can build a tiny one.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, MissingModelError

SAMPLE_RATE = 16000
MEL_STEPS_PER_SECOND = 80  # hop 200 at 16 kHz
MEL_WINDOW = 16  # mel steps per SyncNet input (0.2 s, 5 frames at 25 fps)
FACE_SIZE = 96
SYNCNET_FOLDER = "models/ditalker/syncnet"
SYNCNET_SOURCE = ("Wav2Lip's expert discriminator lipsync_expert.pth (README 'Getting the weights': "
                  "https://github.com/Rudrabha/Wav2Lip), or train one with `python -m training.train_syncnet`")

# Wav2Lip hparams.py: n_fft 800, hop 200, win 800, 80 mels 55-7600 Hz, pre-emphasis 0.97,
# 20*log10 amplitude with floor -100 dB and ref 20 dB, normalised symmetrically to [-4, 4].
_N_FFT, _HOP, _N_MELS, _FMIN, _FMAX = 800, 200, 80, 55.0, 7600.0
_PREEMPHASIS, _MIN_DB, _REF_DB, _MAX_ABS = 0.97, -100.0, 20.0, 4.0


class ConvBlock(nn.Module):
    """Conv -> BatchNorm (-> + input) -> ReLU; the key layout (``conv_block.0/1``) is Wav2Lip's."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return self.act(out + x if self.residual else out)


def _stage(cin: int, cout: int, kernel, stride, padding, residuals: int) -> list[ConvBlock]:
    return [ConvBlock(cin, cout, kernel, stride, padding)] + [
        ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(residuals)]


class SyncNet(nn.Module):
    """Face encoder (B, 15, 48, 96) and audio encoder (B, 1, 80, 16) -> two normalised (B, 16c) embeddings."""

    def __init__(self, base_channels: int = 32):
        super().__init__()
        c = base_channels
        self.base_channels = c
        self.face_encoder = nn.Sequential(
            ConvBlock(15, c, 7, 1, 3),
            *_stage(c, 2 * c, 5, (1, 2), 1, 2),
            *_stage(2 * c, 4 * c, 3, 2, 1, 3),
            *_stage(4 * c, 8 * c, 3, 2, 1, 2),
            *_stage(8 * c, 16 * c, 3, 2, 1, 2),
            ConvBlock(16 * c, 16 * c, 3, 2, 1),
            ConvBlock(16 * c, 16 * c, 3, 1, 0),
            ConvBlock(16 * c, 16 * c, 1, 1, 0),
        )
        self.audio_encoder = nn.Sequential(
            *_stage(1, c, 3, 1, 1, 2),
            *_stage(c, 2 * c, 3, (3, 1), 1, 2),
            *_stage(2 * c, 4 * c, 3, 3, 1, 2),
            *_stage(4 * c, 8 * c, 3, (3, 2), 1, 2),
            ConvBlock(8 * c, 16 * c, 3, 1, 0),
            ConvBlock(16 * c, 16 * c, 1, 1, 0),
        )

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (audio embedding, face embedding), each L2-normalised; argument order as Wav2Lip."""
        if mel.shape[-2:] != (_N_MELS, MEL_WINDOW) or faces.shape[-3:] != (15, FACE_SIZE // 2, FACE_SIZE):
            raise InputError(f"SyncNet takes mel (B, 1, {_N_MELS}, {MEL_WINDOW}) and faces (B, 15, "
                             f"{FACE_SIZE // 2}, {FACE_SIZE}); got {tuple(mel.shape)} and {tuple(faces.shape)}")
        audio = self.audio_encoder(mel).flatten(1)
        face = self.face_encoder(faces).flatten(1)
        return F.normalize(audio, p=2, dim=1), F.normalize(face, p=2, dim=1)

    @staticmethod
    def sync_probability(audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """Cosine of the embeddings, the expert's "in sync" probability (B,)."""
        return (audio * face).sum(dim=1).clamp(1e-7, 1 - 1e-7)


def sync_loss(syncnet: SyncNet, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-sample BCE of the sync probability against 1 (Wav2Lip's ``cosine_loss`` with y = 1), (B,)."""
    return -torch.log(SyncNet.sync_probability(*syncnet(mel, faces)))


def load_syncnet(path: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> SyncNet:
    """Wav2Lip ``lipsync_expert.pth`` / the official ``syncnet_color.pth`` (``state_dict`` wrapper, optional
    ``module.`` prefix), or a ``.safetensors`` written by :func:`save_syncnet`; widths come from the weights."""
    path = Path(path)
    if not path.is_file():
        raise MissingModelError("SyncNet weights (lipsync_expert.pth)", path,
                                path.parent if str(path.parent) != "." else SYNCNET_FOLDER, SYNCNET_SOURCE)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    first = state.get("face_encoder.0.conv_block.0.weight")
    if first is None:
        raise InputError(f"{path} is not a Wav2Lip SyncNet checkpoint (no face_encoder.0.conv_block.0.weight); "
                         f"pass lipsync_expert.pth")
    net = SyncNet(base_channels=first.shape[0])
    net.load_state_dict(state, strict=True)
    return net.to(device=device, dtype=dtype).eval()


def save_syncnet(net: SyncNet, path: str | Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": "wav2lip_syncnet",
                                          "config": json.dumps({"base_channels": net.base_channels})})
    tmp.replace(path)


# ----------------------------------------------------------------------------- inputs
@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(80, 401) triangular filters with Slaney area normalisation (librosa.filters.mel, norm='slaney', which
    Wav2Lip used), from transformers' audio utilities."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=1 + _N_FFT // 2, num_mel_filters=_N_MELS, min_frequency=_FMIN,
                           max_frequency=_FMAX, sampling_rate=SAMPLE_RATE, norm="slaney",
                           mel_scale="slaney").T.astype(np.float32)


def melspectrogram(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono audio -> Wav2Lip's normalised log-mel spectrogram (80, 1 + len // 200), float32.

    The STFT is librosa's centred one with reflect padding (the librosa version Wav2Lip trained with).
    """
    from scipy.signal import get_window, lfilter

    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if audio.size < 2:
        raise InputError("audio for the mel spectrogram is empty; pass at least a few samples of 16 kHz audio")
    emphasised = lfilter([1.0, -_PREEMPHASIS], [1.0], audio)
    pad = _N_FFT // 2
    emphasised = np.pad(emphasised, pad, mode="reflect" if emphasised.size > pad else "constant")
    frames = 1 + (emphasised.size - _N_FFT) // _HOP
    index = np.arange(_N_FFT)[None, :] + _HOP * np.arange(frames)[:, None]
    window = get_window("hann", _N_FFT, fftbins=True)
    magnitude = np.abs(np.fft.rfft(emphasised[index] * window, axis=1)).T  # (401, frames)
    mel = mel_filterbank().astype(np.float64) @ magnitude
    db = 20.0 * np.log10(np.maximum(10 ** (_MIN_DB / 20), mel)) - _REF_DB
    return np.clip(2 * _MAX_ABS * (db - _MIN_DB) / -_MIN_DB - _MAX_ABS, -_MAX_ABS, _MAX_ABS).astype(np.float32)


def mel_start(frame: float, fps: float = 25.0) -> int:
    """First mel step of video frame ``frame`` (Wav2Lip's ``int(80 * frame / fps)``)."""
    return int(MEL_STEPS_PER_SECOND * (frame / fps))


def face_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) bounding box of a (H, W) mask's non-zero pixels; the whole frame if it is empty."""
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if ys.numel() == 0:
        return 0, mask.shape[0], 0, mask.shape[1]
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def mouth_crops(frames: torch.Tensor, boxes: list[tuple[int, int, int, int]],
                masks: torch.Tensor | None = None) -> torch.Tensor:
    """RGB frames (B, 3, T, H, W) in [0, 1] -> SyncNet faces (B, 3T, 48, 96) in BGR.

    Each sample's face box is cut (after multiplying by its face mask when given, as the official trainer
    does), resized to 96 x 96 and its lower half kept; frames are stacked on channels, first frame first.
    """
    out = []
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        clip = frames[i]
        if masks is not None:
            clip = clip * masks[i].to(clip.dtype)
        crop = clip[:, :, y0:y1, x0:x1].transpose(0, 1)  # (T, 3, h, w)
        crop = F.interpolate(crop, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=False)
        crop = crop[:, [2, 1, 0], FACE_SIZE // 2:]  # BGR, lower half
        out.append(crop.reshape(-1, FACE_SIZE // 2, FACE_SIZE))
    return torch.stack(out)
