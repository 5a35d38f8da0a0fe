"""``python -m training.preprocess`` on a generated talking video: every cached condition, aligned frame
counts, the official layout, resuming, and broken inputs reported and skipped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skimage_data  # scikit-image: requirements-test.txt

from ditalker_core.media import load_audio, read_video, write_video
from training.synthetic.speech import synthesize

TEXT = "Hello, how are you today?"
# Mouth centre of skimage's astronaut photo scaled to 256 px (mouth corners at (203, 140), (244, 141) at 512).
MOUTH = (112, 70)


def talking_frames(audio: np.ndarray, rate: int, fps: int = 25, size: int = 256, canvas: tuple[int, int] = (240, 320)
                   ) -> np.ndarray:
    """A procedural talking face: the astronaut photo whose mouth opens with the speech loudness and whose
    head sways sideways, on a wider canvas (so a face-centred crop has something to do)."""
    from PIL import Image, ImageDraw

    face = Image.fromarray(skimage_data.astronaut()).resize((size, size), Image.Resampling.BILINEAR)
    count = int(np.ceil(len(audio) / rate * fps))
    hop = rate // fps
    loudness = np.array([np.sqrt(np.mean(audio[i * hop:(i + 1) * hop] ** 2) + 1e-12) for i in range(count)])
    loudness = loudness / max(loudness.max(), 1e-6)
    frames = []
    for i in range(count):
        picture = face.copy()
        draw = ImageDraw.Draw(picture)
        opening = 1 + 7 * loudness[i]
        draw.ellipse((MOUTH[0] - 9, MOUTH[1] - opening / 2 + 2, MOUTH[0] + 9, MOUTH[1] + opening / 2 + 2),
                     fill=(60, 10, 20))
        frame = np.zeros((*canvas, 3), dtype=np.uint8)
        dx = 40 + int(round(6 * np.sin(i / 6)))
        frame[:, dx:dx + size] = np.asarray(picture)[:canvas[0]]
        frames.append(frame)
    return np.stack(frames)


def write_talking_video(path: Path, text: str = TEXT) -> tuple[Path, int]:
    """Generated video with real synthesised speech; returns (path, frames at 25 fps)."""
    speech = synthesize(text)
    frames = talking_frames(speech.audio, speech.rate)
    write_video(path, frames, 25, audio=speech.audio, sample_rate=speech.rate)
    return path, len(frames)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    video, _ = write_talking_video(folder / "speaker.mp4")
    video.with_suffix(".txt").write_text(TEXT)
    video.with_suffix(".json").write_text(json.dumps({"emotion": "happy"}))
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    silent = talking_frames(np.zeros(16000 * 2, np.float32), 16000)
    write_video(folder / "silent.mp4", silent, 25)
    return folder


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict[str, str]:
    """Tiny Whisper (training.tiny), a random-weight Deep3DFaceRecon net, tiny DWPose ONNX graphs."""
    from tiny_models import save_random_recon, save_tiny_dwpose

    from ditalker_core.extract import pose as pose_mod
    from training.tiny import make_tiny_helpers

    folder = tmp_path_factory.mktemp("tools")
    whisper = make_tiny_helpers(folder / "helpers")["whisper"]
    save_random_recon(folder / "epoch_20.pth")
    save_tiny_dwpose(folder / "dwpose")
    return {"whisper": whisper, "recon": str(folder / "epoch_20.pth"),
            "det": str(folder / "dwpose" / pose_mod.DET_FILE), "pose": str(folder / "dwpose" / pose_mod.POSE_FILE)}


def preprocess_argv(inputs: list[Path], out: Path, tools: dict[str, str]) -> list[str]:
    return [*map(str, inputs), "--out", str(out), "--resolution", "128", "--min-frames", "16",
            "--whisper", tools["whisper"], "--recon", tools["recon"], "--dwpose-det", tools["det"],
            "--dwpose-pose", tools["pose"], "--device", "cpu"]


@pytest.fixture(scope="module")
def dataset(raw, tools, tmp_path_factory) -> tuple[Path, dict]:
    from training import preprocess

    out = tmp_path_factory.mktemp("dataset")
    report = preprocess.run(preprocess.build_parser().parse_args(preprocess_argv([raw], out, tools)))
    return out, report


def test_every_condition_is_cached_with_aligned_frame_counts(dataset, raw):
    from scipy.io import loadmat

    out, report = dataset
    assert report["done"] == ["speaker"]
    (record,) = json.loads((out / "metadata.json").read_text())
    frames = record["num_frames"]
    assert frames >= 35  # ~1.5 s of speech at 25 fps
    assert record["file_path"] == "videos_25/speaker.mp4" and record["type"] == "video"
    assert record["emotion"] == "happy" and record["text"] == "This person is happy and talks"

    video, fps = read_video(out / record["file_path"])
    assert fps == 25 and video.shape == (frames, 128, 128, 3)
    features = torch.load(out / record["audio_emb_path"], weights_only=True)
    assert features.shape == (frames, 50, 32) and torch.isfinite(features).all()
    ids = json.loads((out / record["phoneme_dir"]).read_text())
    assert len(ids) == frames and len(set(ids)) > 5  # real phonemes, not one silence id
    coeff = loadmat(out / record["3dmm_dir"])["coeff"]
    assert coeff.shape == (frames, 257)
    pose, pose_fps = read_video(out / record["pose_video_path"])
    assert pose.shape == (frames, 64, 64, 3) and pose_fps == 25 and pose.max() > 0
    audio, rate = load_audio(out / record["audio_path"])
    assert rate == 16000 and abs(len(audio) - frames * 640) < 640

    from PIL import Image

    masks = {name: np.asarray(Image.open(out / folder / "speaker.png"))
             for name, folder in (("eye", "eye_masks"), ("lip", "lip_mask"), ("face", "face_mask"))}
    for mask in masks.values():
        assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 255} and mask.any()
    assert (masks["face"] >= masks["lip"]).mean() > 0.95  # the lips lie inside the face
    # The face-centred crop puts the face (mask centre) near the middle of the frame.
    ys, xs = np.nonzero(masks["face"])
    assert abs(xs.mean() - 64) < 20 and abs(ys.mean() - 64) < 30


def test_broken_inputs_are_reported_and_skipped(dataset):
    out, report = dataset
    errors = json.loads((out / "errors.json").read_text())
    assert set(Path(k).name for k in errors) == {"broken.mp4", "silent.mp4"}
    assert any("audio" in message for key, message in errors.items() if key.endswith("silent.mp4"))
    assert not (out / "videos_25" / "broken.mp4").exists()


def test_a_second_run_resumes_and_the_dataset_loads(dataset, raw, tools):
    from training import preprocess
    from training.dataset import ClipDataset, read_metadata

    out, _ = dataset
    report = preprocess.run(preprocess.build_parser().parse_args(preprocess_argv([raw / "speaker.mp4"], out, tools)))
    assert report["skipped"] == ["speaker.mp4"] and report["done"] == []

    records = read_metadata(out / "metadata.json")
    sample = ClipDataset(records, clip_frames=16, resolution=64, seed=0, style_max_len=32, with_mel=True)[(0, 3)]
    assert sample["pixel_values"].shape == (16, 3, 64, 64) and sample["pose"].shape == (16, 3, 32, 32)
    assert sample["audio"].shape == (16, 50, 32) and sample["phoneme_win"].shape == (16, 11)
    assert sample["style_clip"].shape == (32, 64) and sample["mel"].shape[0] == 80
    features = torch.load(out / "whisper_audio_emb" / "speaker.pt", weights_only=True)
    torch.testing.assert_close(sample["audio"], features[sample["start"]:sample["start"] + 16])


def test_cli_entry_point_runs(tmp_path, raw, tools, monkeypatch):
    from training import preprocess

    monkeypatch.setattr(sys, "argv", ["preprocess"])
    code = preprocess.main(preprocess_argv([raw / "broken.mp4"], tmp_path / "only_broken", tools))
    assert code == 1  # nothing usable: a failing exit status
