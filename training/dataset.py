"""Training data: metadata records, clip windows with every aligned condition, and a resumable sampler.

Metadata is the official DiTalker/EasyAnimate format read as is: a JSON list (or JSONL/CSV) of records with
``file_path`` (a 25 fps ``videos_25/X.mp4``), ``text``, ``type``, ``audio_emb_path`` ((F, 50, 384) Whisper
windows, ``.pt``), ``phoneme_dir`` (JSON list of per-frame ids), ``3dmm_dir`` (``.mat`` coeff[:, 80:144] or
``.txt``/``.npy`` expression) and ``pose_video_path`` (DWPose video); masks follow the path convention
``videos_25/X.mp4`` -> ``lip_mask/X.png``, ``eye_masks/X.png``, ``face_mask/X.png``. Records written by
``training.preprocess`` add ``audio_path`` (16 kHz wav), ``num_frames``, ``emotion`` and ``transcript``.
Relative paths are tried against the metadata's folder, then ``data.root``, then the working directory.

One sample is a window of ``clip_frames`` consecutive frames (the model's ``audio_frames``) with the audio
features, phoneme windows and pose frames of exactly those frames, a style clip from the same video, the
clip's eye and face masks, and (for the sync loss) the window's mel spectrogram. The first frame of the window
is the reference. All randomness of a sample comes from its key (record index, draw number), so any worker
count, any restart and any process layout yields the same samples.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ditalker_core.errors import InputError
from ditalker_core.pipeline.conditioning import phoneme_windows
from ditalker_core.extract.style3dmm import load_expression, make_style_clip
from ditalker_core.media import has_audio, load_audio
from ditalker_core.models.syncnet import MEL_WINDOW, melspectrogram

logger = logging.getLogger(__name__)

FPS = 25
SAMPLE_RATE = 16000
MASK_DIRS = {"eye": "eye_masks", "lip": "lip_mask", "face": "face_mask"}
_MAX_RETRIES = 10


@dataclass
class Record:
    """One training video and the paths of its cached conditions."""

    video: Path
    text: str
    audio_features: Path
    phonemes: Path
    style: Path
    pose: Path
    masks: dict[str, Path] = field(default_factory=dict)
    audio: Optional[Path] = None  # 16 kHz wav; None -> the video's own sound track
    num_frames: Optional[int] = None


def _resolve(value: str, bases: list[Path]) -> Path:
    path = Path(value)
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return base / path
    return bases[0] / path


def mask_paths(video: Path) -> dict[str, Path]:
    """The official convention: the folder ``videos_25`` in the video path becomes the mask folder."""
    parts = video.parts
    if "videos_25" not in parts:
        root = video.parent.parent
        return {name: root / folder / f"{video.stem}.png" for name, folder in MASK_DIRS.items()}
    index = len(parts) - 1 - parts[::-1].index("videos_25")
    return {name: Path(*parts[:index], folder, *parts[index + 1:]).with_suffix(".png")
            for name, folder in MASK_DIRS.items()}


def read_metadata(path: str | Path, root: str | Path | None = None) -> list[Record]:
    """Video records of a ``.json`` / ``.jsonl`` / ``.csv`` metadata file (image records are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"metadata file {path} does not exist; run `python -m training.preprocess` or pass "
                         f"data.metadata=PATH")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        rows = json.loads(text)
    if not isinstance(rows, list):
        raise InputError(f"metadata {path} must be a list of records")
    bases = [path.parent] + ([Path(root)] if root else []) + [Path.cwd()]
    records = []
    needed = ("file_path", "audio_emb_path", "phoneme_dir", "3dmm_dir", "pose_video_path")
    for number, row in enumerate(rows):
        if row.get("type", "video") != "video":
            continue
        missing = [key for key in needed if not row.get(key)]
        if missing:
            raise InputError(f"metadata {path}, record {number}: missing {missing}; every training video needs "
                             f"{', '.join(needed)} (run `python -m training.preprocess`)")
        video = _resolve(row["file_path"], bases)
        records.append(Record(
            video=video, text=str(row.get("text", "")),
            audio_features=_resolve(row["audio_emb_path"], bases), phonemes=_resolve(row["phoneme_dir"], bases),
            style=_resolve(row["3dmm_dir"], bases), pose=_resolve(row["pose_video_path"], bases),
            masks=mask_paths(video), audio=_resolve(row["audio_path"], bases) if row.get("audio_path") else None,
            num_frames=int(row["num_frames"]) if row.get("num_frames") else None,
        ))
    if not records:
        raise InputError(f"metadata {path} has no video records")
    return records


# ----------------------------------------------------------------------------- media
def count_frames(path: Path) -> int:
    """Frame count of a video from its container header (decodes when the header does not say)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def read_frames(path: Path, start: int, count: int) -> np.ndarray:
    """Frames ``start .. start + count - 1`` of a constant-rate video -> uint8 (count, H, W, 3) RGB.

    Seeks to the keyframe before ``start`` and decodes forward, so a window costs at most one GOP of decoding
    rather than the whole file.
    """
    import av

    if not path.is_file():
        raise InputError(f"video {path} does not exist")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate or FPS)
        offset = stream.start_time or 0
        if start > 0:
            container.seek(offset + int(Fraction(start) / rate / stream.time_base), stream=stream, backward=True)
        frames = []
        for frame in container.decode(stream):
            index = round((frame.pts - offset) * stream.time_base * rate) if frame.pts is not None else start
            if index < start:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    if len(frames) < count:
        raise InputError(f"{path} has fewer than {start + count} frames")
    return np.stack(frames)


def fit_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): shorter side resized to ``size``, centre crop (official transform)."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    resized = F.interpolate(images.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[..., top:top + size, left:left + size]


def read_mask(path: Path, size: int) -> Optional[torch.Tensor]:
    from PIL import Image

    if not path.is_file():
        return None
    mask = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)
    return (fit_square(mask[None, None], size)[0, 0] > 0.5).float()


# ----------------------------------------------------------------------------- dataset
def clips_without_sound(records: list[Record]) -> list[Path]:
    """Clips whose audio the sync loss would read but that have none: no ``audio_path`` and no sound track."""
    return [r.video for r in records if r.audio is None and not has_audio(r.video)]


class ClipDataset(Dataset):
    """Windows of ``clip_frames`` frames with every condition aligned to them (see module docstring)."""

    def __init__(self, records: list[Record], clip_frames: int, resolution: int, seed: int,
                 style_max_len: int = 256, style_start: str | int = "random", with_mel: bool = False,
                 memory_cache: bool = False):
        self.records = records
        self.clip_frames = clip_frames
        self.resolution = resolution
        self.seed = seed
        self.style_max_len = style_max_len
        self.style_start = style_start
        self.with_mel = with_mel
        self._windows: Optional[dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]] = {} if memory_cache \
            else None  # decoded, resized (frames, pose) by (record, start): for small sets of fixed windows
        self._lengths: dict[int, int] = {}
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.records)

    def length(self, index: int) -> int:
        """Frames of record ``index`` present in every aligned stream (its ``num_frames``, else counted; cached)."""
        if index not in self._lengths:
            record = self.records[index]
            self._lengths[index] = record.num_frames or min(count_frames(record.video), count_frames(record.pose))
        return self._lengths[index]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, draw = key
        errors = []
        for attempt in range(_MAX_RETRIES):
            current = (index + attempt) % len(self.records)
            try:
                return self.sample(current, draw)
            except (InputError, OSError, ValueError, RuntimeError) as error:
                errors.append(f"{self.records[current].video}: {error}")
                self._warn_once(f"skipping unusable training sample {errors[-1]}")
        raise InputError("no usable sample after %d tries: %s" % (_MAX_RETRIES, " | ".join(errors)))

    def sample(self, index: int, draw: int) -> dict[str, Any]:
        record, size, count = self.records[index], self.resolution, self.clip_frames
        rng = np.random.default_rng([self.seed, index, draw])
        # Memory-mapped: only the window's rows are read from disk.
        features = torch.load(str(record.audio_features), map_location="cpu", weights_only=True, mmap=True)
        ids = json.loads(record.phonemes.read_text())
        available = min(self.length(index), len(features), len(ids))
        if available < count:
            raise InputError(f"clip has {available} aligned frames, fewer than the {count} a window needs")
        start = int(rng.integers(0, available - count + 1))

        cached = None if self._windows is None else self._windows.get((index, start))
        frames, pose = cached or self.window_frames(record, start)
        if self._windows is not None:
            self._windows[(index, start)] = (frames, pose)
        style_mode = self.style_start if self.style_start in ("random", "middle") else int(self.style_start)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        style_clip, pad_mask = make_style_clip(load_expression(record.style), self.style_max_len, style_mode,
                                               generator)
        masks = {}
        for name in ("eye", "face", "lip"):
            mask = read_mask(record.masks[name], size)
            if mask is None:
                self._warn_once(f"{record.masks[name]} is missing: the {name} mask is empty for {record.video.name}")
                mask = torch.zeros(size, size)
            masks[name] = mask
        sample = {
            "pixel_values": frames,  # (F, 3, H, W) uint8
            "audio": features[start:start + count].float(),  # (F, 50, d)
            "phoneme_win": phoneme_windows(ids)[start:start + count],  # (F, 11)
            "style_clip": style_clip, "pad_mask": pad_mask,
            "pose": pose,  # (F, 3, H/2, W/2) uint8
            "eye_mask": masks["eye"], "face_mask": masks["face"], "lip_mask": masks["lip"],
            "text": record.text, "index": index, "start": start,
        }
        if self.with_mel:
            sample["mel"] = torch.from_numpy(self.window_mel(record, start))
        return sample

    def window_frames(self, record: Record, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's frames (F, 3, size, size) and pose frames (F, 3, size/2, size/2), uint8."""
        size, count = self.resolution, self.clip_frames
        frames = torch.from_numpy(read_frames(record.video, start, count)).permute(0, 3, 1, 2)
        frames = fit_square(frames, size).round().clamp(0, 255).to(torch.uint8)
        pose = torch.from_numpy(read_frames(record.pose, start, count)).permute(0, 3, 1, 2).float()
        # The adapter's input is half the video size; training stretched DWPose frames to it (official 256 px).
        pose = F.interpolate(pose, size=(size // 2, size // 2), mode="bilinear", antialias=True,
                             align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return frames, pose

    def window_mel(self, record: Record, start: int) -> np.ndarray:
        """Mel spectrogram of the window's audio plus the 0.2 s after it, so every frame has 16 mel steps."""
        audio, _ = load_audio(record.audio or record.video, SAMPLE_RATE)
        first = start * SAMPLE_RATE // FPS
        length = (self.clip_frames * SAMPLE_RATE) // FPS + MEL_WINDOW * SAMPLE_RATE // 80
        window = audio[first:first + length]
        return melspectrogram(np.pad(window, (0, length - len(window))))

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)


class ResumableSampler(Sampler):
    """An endless stream of (record index, draw number) keys, sharded over processes and resumable exactly.

    Position ``p`` of the global stream is record ``perm_e[p % N]`` of epoch ``e = p // N``, where ``perm_e``
    is a permutation seeded by (seed, e). Each micro-step consumes ``batch_size * world`` positions; process
    ``rank`` takes its contiguous ``batch_size`` of them. Starting at micro-step ``start`` skips nothing
    physically, so resuming costs no data loading.
    """

    def __init__(self, num_records: int, seed: int, batch_size: int, rank: int = 0, world: int = 1,
                 start: int = 0):
        self.num_records, self.seed, self.batch_size = num_records, seed, batch_size
        self.rank, self.world, self.start = rank, world, start
        self._epoch, self._perm = -1, np.arange(0)

    def key(self, position: int) -> tuple[int, int]:
        epoch = position // self.num_records
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_records)
        return int(self._perm[position % self.num_records]), position

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start
        while True:
            first = (step * self.world + self.rank) * self.batch_size
            for position in range(first, first + self.batch_size):
                yield self.key(position)
            step += 1
