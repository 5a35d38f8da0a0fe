"""Audio and video I/O shared by the extractors, the pipeline and the nodes.

Everything goes through PyAV (FFmpeg) and soxr so that no torchaudio/torchvision is needed:
their PyPI builds are pinned to specific torch versions and break other installs.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import math

import numpy as np
import soxr
import torch

from .errors import InputError

# Rates the AAC encoder accepts; other rates are resampled to 48 kHz before muxing.
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def _decode_file(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any FFmpeg-readable file (audio or video) to (C, N) float32."""
    import av

    if not path.is_file():
        raise InputError(f"audio file {path} does not exist; pass the path of an existing audio or video file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise InputError(f"audio file {path} could not be opened ({exc}); pass a wav/mp3/flac/m4a/mp4 file") from exc
    with container:
        if not container.streams.audio:
            raise InputError(f"{path} has no audio stream; pass a file that contains audio")
        stream = container.streams.audio[0]
        # Planar float keeps the native rate and layout: resampling and downmixing happen here, not in FFmpeg.
        resampler = av.AudioResampler(format="fltp")
        chunks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
        rate = stream.codec_context.sample_rate
    if not chunks:
        raise InputError(f"{path} contains an empty audio stream; pass a file with audible content")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), int(rate)


def _channels_first(array: np.ndarray, name: str) -> np.ndarray:
    """Return (C, N): 1-D is mono; for 2-D the shorter axis is taken as channels."""
    if array.ndim == 1:
        return array[None]
    if array.ndim == 2:
        return array if array.shape[0] <= array.shape[1] else array.T
    raise InputError(f"{name} has shape {tuple(array.shape)}; pass (samples,), (channels, samples) or (samples, channels)")


def has_audio(path: str | Path) -> bool:
    """Whether a media file holds a sound track (a header read, no decoding)."""
    import av

    with av.open(str(path)) as container:
        return len(container.streams.audio) > 0


def load_audio_channels(source: Any, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Any supported audio source -> ((C, N) float32 at its native rate, rate).

    Accepts a file path, a numpy array or torch tensor (with ``sample_rate``), or ComfyUI's AUDIO
    dict ``{"waveform": (B, C, N), "sample_rate": int}`` (first batch item).
    """
    if isinstance(source, (str, Path)):
        return _decode_file(Path(source))
    if isinstance(source, dict):
        if "waveform" not in source or "sample_rate" not in source:
            raise InputError("audio dict needs 'waveform' (B, C, N) and 'sample_rate'; pass ComfyUI's AUDIO output")
        waveform = source["waveform"]
        if isinstance(waveform, torch.Tensor):
            waveform = waveform.detach().float().cpu().numpy()
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim == 3:
            waveform = waveform[0]
        if waveform.ndim == 2:  # ComfyUI's layout is known to be (C, N): no guessing (an empty clip is (C, 0))
            return np.ascontiguousarray(waveform), int(source["sample_rate"])
        return _channels_first(waveform, "AUDIO waveform"), int(source["sample_rate"])
    if isinstance(source, torch.Tensor):
        source = source.detach().float().cpu().numpy()
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise InputError("an audio array needs its sample_rate; pass sample_rate=<Hz>")
        data = source.astype(np.float32, copy=False)
        if source.dtype.kind in "iu":  # PCM integers -> [-1, 1]
            data = data / float(np.iinfo(source.dtype).max)
        return _channels_first(data, "audio array"), int(sample_rate)
    raise InputError(f"audio of type {type(source).__name__} is not supported; pass a path, an array or an AUDIO dict")


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of (N,) or (C, N) audio with soxr (high quality, no torch ops)."""
    if rate == target_rate:
        return audio
    if audio.ndim == 1:
        return soxr.resample(audio, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(soxr.resample(audio.T, rate, target_rate, quality="HQ").T, dtype=np.float32)


def load_audio(source: Any, target_rate: int | None = 16000, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Any supported audio source -> (mono float32 (N,), rate); resampled to ``target_rate`` unless it is None."""
    channels, rate = load_audio_channels(source, sample_rate)
    mono = channels.mean(axis=0).astype(np.float32, copy=False)
    if target_rate is not None:
        mono, rate = resample(mono, rate, target_rate), target_rate
    if mono.size == 0:
        raise InputError("the audio is empty; pass audio with at least one sample")
    return mono, rate


def exact_fps(fps: float) -> Fraction:
    """Exact rate for NTSC-style values like 29.97 so per-frame timestamps do not drift."""
    if fps <= 0:
        raise InputError(f"fps is {fps}; pass a positive frame rate")
    return Fraction(fps).limit_denominator(1001)


def frame_count(num_samples: int, sample_rate: int, fps: float) -> int:
    """Video frames an audio clip spans: ceil(duration * fps), so the last partial frame still gets audio."""
    return max(1, math.ceil(Fraction(num_samples, sample_rate) * exact_fps(fps)))


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode all frames of a video -> (uint8 (N, H, W, 3) RGB, fps)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file {path} does not exist; pass the path of an existing video")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise InputError(f"{path} has no video stream; pass a video file")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise InputError(f"{path} contains no decodable frames; pass a non-empty video")
    return np.stack(frames), float(rate) if rate else 25.0


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: Any = None,
    sample_rate: int | None = None,
    crf: int = 18,
) -> Path:
    """Encode uint8 (N, H, W, 3) RGB frames as H.264 (yuv420p) with optional AAC audio.

    yuv420p needs even sizes, so an odd height/width is padded by repeating the last row/column:
    players reject odd-sized yuv420p streams. ``audio`` is anything :func:`load_audio_channels` takes.
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise InputError(
            f"video frames have shape {frames.shape} and dtype {frames.dtype}; pass uint8 (N, H, W, 3) RGB frames"
        )
    rate = exact_fps(fps)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf)}
        audio_stream = None
        if audio is not None:
            channels, rate = load_audio_channels(audio, sample_rate)
            if channels.shape[0] > 2:
                channels = channels.mean(axis=0, keepdims=True)
            if rate not in _AAC_RATES:
                channels, rate = resample(channels, rate, 48000), 48000
            layout = "mono" if channels.shape[0] == 1 else "stereo"
            audio_stream = container.add_stream("aac", rate=rate, layout=layout)
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        if audio_stream is not None:
            block = 1024 * 16
            for start in range(0, channels.shape[1], block):
                chunk = np.ascontiguousarray(np.clip(channels[:, start:start + block], -1.0, 1.0), dtype=np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate = rate
                frame.pts = start
                frame.time_base = Fraction(1, rate)
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))
    return path
