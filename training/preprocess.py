"""Raw talking-face videos with sound -> a DiTalker training set (official layout + ``metadata.json``).

``python -m training.preprocess VIDEOS... --out DATASET [--resolution 512] --whisper DIR --recon DIR ...``

Each input (a video, a folder searched recursively, or a ``.txt`` list of paths) becomes one clip ``X``:

    videos_25/X.mp4            25 fps, face-centred square crop at --resolution, 16 kHz mono AAC sound
    audio/X.wav                the clip's 16 kHz mono audio (exact samples for the sync loss)
    whisper_audio_emb/X.pt     (F, 50, 384) Whisper windows, one per frame      (extract.audio)
    phoneme/X.json             F phoneme ids                                     (extract.phonemes)
    3dmm/X.mat                 coeff (F, 257); frames without a face repeat the nearest one (extract.style3dmm)
    videos_25_dwpose/X.mp4     DWPose video at half the resolution, F frames     (extract.pose)
    eye_masks/X.png, lip_mask/X.png, face_mask/X.png   union region masks         (extract.masks)

and a record in ``metadata.json`` (official fields plus ``audio_path``, ``num_frames``, ``emotion``,
``transcript``). Every per-frame file has exactly F rows. The caption is the emotion prompt "This person is
<emotion> and talks"; the emotion comes from ``--labels`` (CSV ``video,emotion[,transcript]`` or JSON
``{video: emotion | {"emotion", "transcript"}}``) or a sidecar ``X.json``, else neutral. Phonemes need the
spoken text: a sidecar ``X.txt``, the labels file, or WhisperX ASR (``--asr-model``).

The metadata is rewritten after every clip, so an interrupted run resumes where it stopped; finished clips are
skipped. A broken input (unreadable, no sound, no face, too short) is reported in ``errors.json`` and skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ditalker_core.errors import InputError
from ditalker_core.extract.audio import AudioEncoder
from ditalker_core.extract.emotion import build_prompt
from ditalker_core.extract.masks import FaceMasker, clip_mask_paths, union_masks
from ditalker_core.extract.phonemes import LANGUAGES, Aligner, PhonemeTable, extract_phonemes
from ditalker_core.extract.pose import DWPOSE_FOLDERS, DWPose, detect_to_frames, find_dwpose, retime_indices
from ditalker_core.extract.style3dmm import StyleExtractor, save_coefficients
from ditalker_core.media import frame_count, load_audio, read_video, write_video

logger = logging.getLogger("training.preprocess")

FPS = 25
SAMPLE_RATE = 16000
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
FOLDERS = {"video": "videos_25", "audio": "audio", "features": "whisper_audio_emb", "phonemes": "phoneme",
           "style": "3dmm", "pose": "videos_25_dwpose"}


@dataclass
class Extractors:
    """Every extractor, loaded once for the whole run."""

    audio: AudioEncoder
    style: StyleExtractor
    pose: DWPose
    masker: FaceMasker
    table: PhonemeTable
    aligner: Optional[Aligner] = None


def load_extractors(args: argparse.Namespace) -> Extractors:
    return Extractors(
        audio=AudioEncoder.from_pretrained(args.whisper, args.device),
        style=StyleExtractor.from_pretrained(args.recon, args.device),
        pose=DWPose(*find_dwpose(DWPOSE_FOLDERS, args.dwpose_det, args.dwpose_pose), device=args.dwpose_device),
        masker=FaceMasker(),
        table=PhonemeTable.load(args.phoneme_table),
        aligner=Aligner.from_pretrained(args.align_model, args.language, args.device) if args.align_model else None,
    )


# ----------------------------------------------------------------------------- inputs and labels
def find_videos(inputs: list[str]) -> list[Path]:
    """Videos named directly, found recursively in folders, or listed one per line in ``.txt`` files."""
    videos: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            videos += sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.suffix.lower() == ".txt" and path.is_file():
            videos += [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
        else:
            videos.append(path)
    return list(dict.fromkeys(videos))


def clip_ids(videos: list[Path]) -> dict[Path, str]:
    """A unique file-name-safe id per video: its stem, with the parent folder prepended on collisions."""
    stems: dict[str, int] = {}
    for video in videos:
        stems[video.stem] = stems.get(video.stem, 0) + 1
    return {v: v.stem if stems[v.stem] == 1 else f"{v.parent.name}_{v.stem}" for v in videos}


def read_labels(path: Optional[str]) -> dict[str, dict[str, str]]:
    """``--labels`` as {video name or stem: {"emotion": ..., "transcript": ...}}."""
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise InputError(f"labels file {file} does not exist")
    if file.suffix.lower() == ".csv":
        rows = list(csv.DictReader(file.read_text(encoding="utf-8").splitlines()))
        if rows and "video" not in rows[0]:
            raise InputError(f"labels CSV {file} needs a 'video' column (and 'emotion' / 'transcript')")
        return {Path(r["video"]).stem: {k: v for k, v in r.items() if k != "video" and v} for r in rows}
    data = json.loads(file.read_text(encoding="utf-8"))
    return {Path(k).stem: (v if isinstance(v, dict) else {"emotion": str(v)}) for k, v in data.items()}


def labels_for(video: Path, labels: dict[str, dict[str, str]]) -> dict[str, str]:
    """Labels file entry, completed by sidecars ``X.json`` ({"emotion", "transcript"}) and ``X.txt``."""
    found = dict(labels.get(video.stem, {}))
    sidecar = video.with_suffix(".json")
    if sidecar.is_file():
        found = {**json.loads(sidecar.read_text(encoding="utf-8")), **found}
    text = video.with_suffix(".txt")
    if "transcript" not in found and text.is_file():
        found["transcript"] = text.read_text(encoding="utf-8").strip()
    return found


# ----------------------------------------------------------------------------- one clip
def face_crop_box(extractors: Extractors, frames: np.ndarray, scale: float) -> tuple[int, int, int]:
    """(top, left, side) of one square box for the whole clip: the median face centre and size over up to 8
    sampled frames, ``scale`` times the face box, kept inside the frame. A fixed box does not jitter."""
    height, width = frames.shape[1:3]
    picks = np.unique(np.linspace(0, len(frames) - 1, min(8, len(frames))).astype(int))
    found = [d for d in extractors.style.detector.detect(frames[picks]) if d is not None]
    if not found:
        raise InputError("no face found in the sampled frames")
    boxes = np.array([d.box for d in found])
    cx, cy = np.median((boxes[:, 0] + boxes[:, 2]) / 2), np.median((boxes[:, 1] + boxes[:, 3]) / 2)
    side = int(min(height, width, round(scale * np.median(np.maximum(boxes[:, 2] - boxes[:, 0],
                                                                     boxes[:, 3] - boxes[:, 1])))))
    top = int(np.clip(round(cy - side / 2), 0, height - side))
    left = int(np.clip(round(cx - side / 2), 0, width - side))
    return top, left, side


def crop_resize(frames: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    import cv2

    top, left, side = box
    return np.stack([cv2.resize(np.ascontiguousarray(f[top:top + side, left:left + side]), (size, size),
                                interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC) for f in frames])


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())


def fill_missing(coeff: torch.Tensor, kept: list[int], total: int) -> torch.Tensor:
    """Coefficients of the frames with a face -> one row per frame (a frame without one takes its nearest)."""
    kept_arr = np.asarray(kept)
    nearest = np.abs(np.arange(total)[:, None] - kept_arr[None, :]).argmin(axis=1)
    return coeff[torch.from_numpy(nearest)]


def process_clip(video: Path, clip_id: str, out: Path, extractors: Extractors, args: argparse.Namespace,
                 labels: dict[str, str]) -> dict[str, Any]:
    """Write every file of one clip; returns its metadata record (paths relative to ``out``)."""
    frames, fps = read_video(video)
    audio, _ = load_audio(video, SAMPLE_RATE)
    frames = frames[retime_indices(len(frames), fps, FPS)]
    count = min(len(frames), frame_count(len(audio), SAMPLE_RATE, FPS))
    if count < args.min_frames:
        raise InputError(f"{count} frames at 25 fps with sound, fewer than --min-frames {args.min_frames}")
    frames = frames[:count]
    samples = count * SAMPLE_RATE // FPS
    audio = np.pad(audio[:samples], (0, max(0, samples - len(audio))))
    if args.crop == "face":
        box = face_crop_box(extractors, frames, args.face_scale)
    else:
        side = min(frames.shape[1:3])
        box = ((frames.shape[1] - side) // 2, (frames.shape[2] - side) // 2, side)
    frames = crop_resize(frames, box, args.resolution)

    paths = {key: out / folder / f"{clip_id}{suffix}" for (key, folder), suffix in zip(
        FOLDERS.items(), (".mp4", ".wav", ".pt", ".json", ".mat", ".mp4"))}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    write_video(paths["video"], frames, FPS, audio=audio, sample_rate=SAMPLE_RATE)
    write_wav(paths["audio"], audio)

    features = extractors.audio.encode(audio, fps=FPS, num_frames=count, sample_rate=SAMPLE_RATE).windows
    torch.save(features.float().cpu().contiguous(), paths["features"])

    transcript = labels.get("transcript")
    if transcript is None and not args.asr_model:
        raise InputError("no transcript for the phonemes: put the spoken text in a sidecar .txt, add it to "
                         "--labels, or pass --asr-model for WhisperX transcription")
    phonemes = extract_phonemes(audio, transcript, labels.get("language", args.language), extractors.aligner,
                                FPS, count, extractors.table, sample_rate=SAMPLE_RATE, asr_model=args.asr_model)
    paths["phonemes"].write_text(json.dumps(phonemes.ids))

    style = extractors.style.extract(frames)
    coeff = fill_missing(style.coeff, style.kept, count)
    save_coefficients(paths["style"], coeff[:, 80:144], coeff)

    pose = detect_to_frames(frames, extractors.pose, (args.resolution, args.resolution), count)
    write_video(paths["pose"], (pose.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy(), FPS)

    masks = union_masks(extractors.masker(frames))
    from PIL import Image

    for name, path in clip_mask_paths(paths["video"]).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(masks[name]).save(path)

    emotion = labels.get("emotion", "neutral")
    rel = {key: str(path.relative_to(out)) for key, path in paths.items()}
    return {"file_path": rel["video"], "text": build_prompt(emotion), "type": "video",
            "audio_emb_path": rel["features"], "phoneme_dir": rel["phonemes"], "3dmm_dir": rel["style"],
            "pose_video_path": rel["pose"], "audio_path": rel["audio"], "num_frames": count, "emotion": emotion,
            "transcript": transcript, "source": str(video)}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def _complete(record: dict[str, Any], out: Path) -> bool:
    keys = ("file_path", "audio_emb_path", "phoneme_dir", "3dmm_dir", "pose_video_path", "audio_path")
    masks = clip_mask_paths(out / record["file_path"]).values()
    return all((out / record[k]).is_file() for k in keys) and all(p.is_file() for p in masks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Process every input; returns {"done": [...ids], "skipped": [...], "errors": {id: message}}."""
    from tqdm.auto import tqdm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    videos = find_videos(args.inputs)
    if not videos:
        raise InputError(f"no videos found in {args.inputs}; pass video files, folders or .txt lists")
    ids = clip_ids(videos)
    labels = read_labels(args.labels)
    metadata_path, errors_path = out / "metadata.json", out / "errors.json"
    records = json.loads(metadata_path.read_text()) if metadata_path.is_file() else []
    by_id = {Path(r["file_path"]).stem: r for r in records if _complete(r, out)}
    todo = [v for v in videos if ids[v] not in by_id]
    report: dict[str, Any] = {"done": [], "skipped": [v.name for v in videos if ids[v] in by_id], "errors": {}}
    extractors = load_extractors(args) if todo else None
    progress = tqdm(todo, desc="preprocess", unit="clip")
    for video in progress:
        try:
            by_id[ids[video]] = process_clip(video, ids[video], out, extractors, args, labels_for(video, labels))
            report["done"].append(ids[video])
            _write_json(metadata_path, list(by_id.values()))
        except Exception as error:  # one broken input must not stop a long run: report it and go on
            report["errors"][str(video)] = f"{type(error).__name__}: {error}"
            logger.warning("skipping %s: %s", video, error)
        progress.set_postfix(ok=len(report["done"]), broken=len(report["errors"]))
    if not metadata_path.is_file():
        _write_json(metadata_path, list(by_id.values()))
    _write_json(errors_path, report["errors"])
    logger.info("%d clips written, %d already done, %d broken (see %s)", len(report["done"]),
                len(report["skipped"]), len(report["errors"]), errors_path)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.preprocess", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="videos, folders of videos, or .txt lists of video paths")
    parser.add_argument("--out", required=True, help="dataset folder (metadata.json and the condition folders)")
    parser.add_argument("--resolution", type=int, default=512, help="square clip size in pixels")
    parser.add_argument("--crop", choices=("face", "center"), default="face", help="face-centred or centre crop")
    parser.add_argument("--face-scale", type=float, default=1.8, help="crop side / detected face box side")
    parser.add_argument("--min-frames", type=int, default=64, help="shorter clips are reported and skipped")
    parser.add_argument("--labels", default=None, help="CSV/JSON with emotion (and transcript) per video")
    parser.add_argument("--language", choices=LANGUAGES, default="en", help="spoken language (phonemes)")
    parser.add_argument("--whisper", default="models/audio_encoders/whisper-tiny", help="Whisper folder")
    parser.add_argument("--recon", default=None, help="Deep3DFaceRecon epoch_20.pth or its folder")
    parser.add_argument("--dwpose-det", default=None, help="DWPose yolox_l.onnx (default: models/ditalker/dwpose)")
    parser.add_argument("--dwpose-pose", default=None, help="DWPose dw-ll_ucoco_384.onnx")
    parser.add_argument("--dwpose-device", default="cpu", help="onnxruntime device: cpu or cuda")
    parser.add_argument("--align-model", default=None, help="Wav2Vec2 CTC folder for WhisperX word alignment")
    parser.add_argument("--asr-model", default=None, help="faster-whisper folder, for clips without transcript")
    parser.add_argument("--phoneme-table", default=None, help="phoneme table JSON (default: the bundled one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(build_parser().parse_args(argv))
    return 1 if report["errors"] and not (report["done"] or report["skipped"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
