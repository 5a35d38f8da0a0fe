"""The synthetic talking-face generator: deterministic, truthful tracks, the project's formats, trainer-readable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ditalker_core.extract.phonemes import PhonemeTable
from training.dataset import ClipDataset, read_metadata
from training.synthetic import sentences
from training.synthetic.cases import LEAD_IN, render_case, sample_case
from training.synthetic.tracks import (EMOTION_FACES, EXPRESSION_NAMES, FPS, Style, emotion_track,
                                       expression_basis, expression_coefficients, head_pose, mouth_track, viseme)


def test_sentence_splits_are_disjoint_and_hash_defined():
    rng = np.random.default_rng(0)
    train = {sentences.sentence(rng, lang, "train") for lang in ("en", "zh") for _ in range(200)}
    held = {sentences.sentence(rng, lang, "held_out") for lang in ("en", "zh") for _ in range(60)}
    assert not train & held
    assert all(sentences.held_out(s) for s in held) and not any(sentences.held_out(s) for s in train)


def test_visemes_open_vowels_and_close_bilabials():
    assert viseme("ˈa")[0] == 1.0 and viseme("m")[0] == 0.0 and viseme("p")[0] == 0.0
    assert viseme("u") == (0.35, 1.0)  # rounded
    assert viseme("aɪ")[0] == 1.0  # a diphthong opens as its most open part


def test_mouth_track_follows_phonemes_with_coarticulation():
    # 0.2 s of "a" at full loudness, silence around it; speech starts 0.1 s into the video.
    rate = 16000
    audio = np.zeros(int(0.6 * rate), np.float32)
    audio[: int(0.2 * rate)] = 0.5 * np.sin(np.arange(int(0.2 * rate)) * 0.05)
    opening, rounding = mouth_track([(0.0, 0.2, "a", 1)], audio, rate, 20, delay=0.1)
    assert opening[0] == pytest.approx(0.0, abs=1e-3)  # before the speech
    assert opening[5] == pytest.approx(1.0, abs=0.05)  # 0.2 s: inside the vowel
    assert opening[15] == pytest.approx(0.0, abs=1e-3)  # after it
    assert 0.1 < opening[2] < 0.9 or 0.1 < opening[3] < 0.9  # a ramp, not a step
    assert np.all(rounding == 0)


def test_head_pose_starts_frontal_and_moves_the_trajectory_axis():
    for trajectory, axis in (("shake", 0), ("nod", 1), ("tilt", 2)):
        pose = head_pose(Style(trajectory, 1.0, 10.0, 1.0, 0.2), 50)
        assert np.allclose(pose[0], 0)
        assert pose[:, axis].max() == pytest.approx(10.0, abs=0.1)
        assert np.allclose(np.delete(pose, axis, axis=1), 0)
    assert np.allclose(head_pose(Style("still", 1.0, 10.0, 1.0, 0.2), 50), 0)


def test_emotion_ramps_from_neutral():
    track = emotion_track("happy", 20)
    assert track["corner_lift"][0] == 0.0 and track["corner_lift"][-1] == EMOTION_FACES["happy"]["corner_lift"]


def test_expression_coefficients_are_a_fixed_invertible_map():
    params = np.random.default_rng(1).uniform(-1, 1, (10, len(EXPRESSION_NAMES))).astype(np.float32)
    coefficients = expression_coefficients(params)
    assert coefficients.shape == (10, 64)
    recovered = coefficients @ np.linalg.pinv(expression_basis())
    np.testing.assert_allclose(recovered, params, atol=1e-5)


@pytest.fixture(scope="module")
def rendered():
    return render_case(sample_case(np.random.default_rng([5, 1]), "held_out", "sad"))


def test_render_case_is_deterministic_and_aligned(rendered):
    again = render_case(rendered.case)
    for name in ("frames", "reference", "audio", "mouth", "pose", "style_coefficients", "pose_frames"):
        np.testing.assert_array_equal(getattr(again, name), getattr(rendered, name), err_msg=name)
    frames = len(rendered.frames)
    assert len(rendered.audio) == round(frames * 16000 / FPS)
    assert len(rendered.phoneme_ids) == frames == len(rendered.mouth) == len(rendered.pose_frames)
    lead = int(LEAD_IN * FPS)
    table = PhonemeTable.load()
    assert set(rendered.phoneme_ids[:lead]) == {table.silence}  # the lead-in is silent and closed
    assert np.all(rendered.mouth[:lead] < 0.02)  # only the anticipation of the first phoneme
    assert rendered.style_coefficients.shape == (64, 64)
    # The reference is the neutral frontal portrait, not a frame of the (sad, moving) clip.
    assert not np.array_equal(rendered.reference, rendered.frames[-1])


def test_style_clip_comes_from_another_identity(rendered):
    assert rendered.case.style_identity != rendered.case.identity
    assert not np.array_equal(rendered.style_frames[0], rendered.frames[0])


def _digest(path) -> str:
    """Bytes of a file; for an H.264 video, of what it decodes to (frames and sound)."""
    from ditalker_core.media import load_audio, read_video

    if path.suffix != ".mp4":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    frames = read_video(path)[0].tobytes()
    if "dwpose" not in path.parent.name:
        frames += load_audio(path, 16000)[0].tobytes()
    return hashlib.sha256(frames).hexdigest()


def test_written_set_is_identical_per_seed_and_trainer_readable(tmp_path):
    root = Path(__file__).resolve().parents[1]
    digests = []
    for run in ("a", "b"):  # two fresh processes, as two users rebuilding the set would run it
        subprocess.run([sys.executable, "-m", "training.synthetic", str(tmp_path / run), "--clips", "2", "--seed", "3"],
                       cwd=root, check=True, capture_output=True)
        out = tmp_path / run
        digests.append({p.relative_to(out).as_posix(): _digest(p) for p in sorted(out.rglob("*")) if p.is_file()})
    assert digests[0] == digests[1] and len(digests[0]) == 2 * 10 + 1
    records = read_metadata(tmp_path / "a" / "metadata.json")
    sample = ClipDataset(records, 32, 64, seed=0, style_max_len=64, style_start=0)[(1, 0)]
    truth = json.loads((tmp_path / "a" / "truth" / "train_00001.json").read_text())
    ids = json.loads((tmp_path / "a" / "phoneme" / "train_00001.json").read_text())
    assert sample["pixel_values"].shape == (32, 3, 64, 64) and sample["pose"].shape == (32, 3, 32, 32)
    assert sample["audio"].shape == (32, 50, 384)
    assert sample["phoneme_win"][:, 5].tolist() == ids  # the window centre is the frame's own phoneme
    assert records[1].text == f"This person is {truth['case']['emotion']} and talks"
    assert torch.equal(sample["style_clip"], torch.from_numpy(np.load(tmp_path / "a" / "3dmm" / "train_00001.npy")))
