"""One synthetic talking-face case: who speaks what, in which style and emotion, and everything rendered from it.

A ``Case`` is a small JSON-able spec drawn from a seed. ``render_case`` turns it into the target video (the
reference identity saying the sentence with the style's head motion and manner and the emotion), the 16 kHz
audio, the ground-truth tracks, and the conditions as the model's real formats take them: the style clip's
(M, 64) expression coefficients and the DWPose frames, both from a *style performance* by another identity
(other speech, neutral emotion, same style), as in the paper. The reference is the identity's neutral,
frontal, closed-mouth portrait.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ditalker_core.extract.phonemes import PhonemeTable, frame_phonemes
from ditalker_core.extract.pose import render_keypoints
from ditalker_core.media import resample

from . import sentences
from .faces import Identity, render
from .speech import Speech, english_words, mandarin_syllables, synthesize
from .tracks import (EMOTIONS, EXPRESSION_NAMES, FPS, Style, blink_track, emotion_track, expression_coefficients,
                     expression_params, head_pose, mouth_track)

SAMPLE_RATE = 16000
LEAD_IN = 0.16  # seconds of silence before the speech: the first frames are the neutral, closed-mouth reference
VOICES = {"en": ("en-us", "en-us+f2", "en-us+f4", "en-us+m3", "en-us+m7"), "zh": ("cmn", "cmn+f2", "cmn+m3")}
STYLE_FRAMES = 64  # length of the style performance's 3DMM clip (the demo model's style_max_len)


@dataclass(frozen=True)
class Case:
    identity: int  # seed of the reference identity
    style_identity: int  # seed of the identity performing the style clip
    style: Style
    emotion: str
    language: str
    sentence: str
    voice: str
    rate: int  # words per minute
    style_sentence: str
    blink_seed: int
    num_frames: int | None = None  # None: the speech's length (plus the lead-in)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Case":
        return cls(**{**data, "style": Style(**data["style"])})


def sample_case(rng: np.random.Generator, split: str = "train", emotion: str | None = None,
                sentence_count: int = 1, language: str | None = None) -> Case:
    """A random case; ``split`` picks the sentence side (train / held_out), ``sentence_count`` joins sentences;
    the language is English 3 times in 4 unless given."""
    drawn = "zh" if rng.random() < 0.25 else "en"
    language = language or drawn
    text = " ".join(sentences.sentence(rng, language, split) for _ in range(sentence_count))
    identity, style_identity = (int(v) for v in rng.integers(0, 2**31, 2))
    return Case(identity=identity, style_identity=style_identity, style=Style.sample(rng),
                emotion=emotion or str(rng.choice(EMOTIONS)), language=language, sentence=text,
                voice=str(rng.choice(VOICES[language])), rate=int(rng.integers(140, 200)),
                style_sentence=sentences.sentence(rng, "en", split), blink_seed=int(rng.integers(2**31)))


@dataclass
class RenderedCase:
    case: Case
    frames: np.ndarray  # (F, S, S, 3) uint8 target video
    reference: np.ndarray  # (S, S, 3) uint8 neutral frontal portrait
    audio: np.ndarray  # (N,) float32 at 16 kHz, exactly F frames long
    mouth: np.ndarray  # (F,) ground-truth opening (manner applied)
    speech_mouth: np.ndarray  # (F,) opening of the speech alone (before the manner)
    pose: np.ndarray  # (F, 3) yaw, pitch, roll degrees
    style_coefficients: np.ndarray  # (STYLE_FRAMES, 64) from the style performance
    pose_frames: np.ndarray  # (F, P, P, 3) uint8 DWPose drawing of the style performance
    style_frames: np.ndarray  # (F, S, S, 3) uint8 the style performance itself (for people to look at)
    phoneme_ids: list[int]  # (F,) through the project's table
    eye_mask: np.ndarray  # (S, S) bool, union over the clip
    face_mask: np.ndarray
    lip_mask: np.ndarray


def _speak(text: str, voice: str, rate: int) -> Speech:
    speech = synthesize(text, voice, rate=rate)
    audio = resample(speech.audio[None], speech.rate, SAMPLE_RATE)[0].astype(np.float32)
    return Speech(audio, SAMPLE_RATE, speech.phonemes)


def _whisperx_result(speech: Speech, text: str, language: str, delay: float) -> dict:
    """espeak's own word timing as a WhisperX-format result (words with start/end), shifted by ``delay``."""
    if language == "en":
        words = [(word, phones[0][0], phones[-1][1]) for word, phones in english_words(speech, text)]
    else:
        chars = [c for c in text if "\u4e00" <= c <= "\u9fff"]
        words = [(c, s[0][0], s[-1][1]) for c, s in zip(chars, mandarin_syllables(speech)) if s]
    entries = [{"word": w, "start": a + delay, "end": b + delay} for w, a, b in words]
    return {"segments": [{"start": delay, "end": delay + speech.duration, "text": text, "words": entries}]}


def _performance(style: Style, mouth: np.ndarray, rounding: np.ndarray, emotion: str, blink_seed: int
                 ) -> np.ndarray:
    emo = emotion_track(emotion, len(mouth))
    blink = blink_track(style.blink_rate, len(mouth), np.random.default_rng(blink_seed))
    return expression_params(mouth, rounding, emo, blink, style)


def render_case(case: Case, size: int = 64, pose_size: int = 128, table: PhonemeTable | None = None
                ) -> RenderedCase:
    """Render ``case`` at ``size`` px (pose drawings at ``pose_size`` px, resized by the loaders)."""
    table = table or PhonemeTable.load()
    speech = _speak(case.sentence, case.voice, case.rate)
    frames_needed = int(np.ceil((LEAD_IN + speech.duration) * FPS))
    num_frames = case.num_frames or frames_needed
    audio = np.zeros(int(round(num_frames * SAMPLE_RATE / FPS)), np.float32)
    lead = int(LEAD_IN * SAMPLE_RATE)
    part = speech.audio[: max(0, len(audio) - lead)]
    audio[lead:lead + len(part)] = part
    speech_mouth, rounding = mouth_track(speech.phonemes, speech.audio, SAMPLE_RATE, num_frames, LEAD_IN)
    pose = head_pose(case.style, num_frames)
    person = Identity.sample(np.random.default_rng(case.identity))
    params = _performance(case.style, speech_mouth, rounding, case.emotion, case.blink_seed)
    target = [render(person, p, q, size) for p, q in zip(params, pose)]

    # The style performance: another identity, other speech, neutral, the same style (manner and head motion).
    performer = Identity.sample(np.random.default_rng(case.style_identity))
    style_speech = _speak(case.style_sentence, "en-us", 170)
    style_length = max(STYLE_FRAMES, num_frames)
    style_mouth, style_round = mouth_track(style_speech.phonemes, style_speech.audio, SAMPLE_RATE, style_length,
                                           LEAD_IN)
    style_pose = head_pose(case.style, style_length)
    style_params = _performance(case.style, style_mouth, style_round, "neutral", case.blink_seed + 1)
    # Keypoints are in pixels of the frame they come from; the DWPose drawing scales them to ``pose_size``.
    performance = [render(performer, p, q, size) for p, q in zip(style_params[:num_frames], style_pose[:num_frames])]
    neutral = expression_params(np.zeros(1), np.zeros(1), emotion_track("neutral", 1), np.zeros(1), case.style)
    reference = render(person, neutral[0], np.zeros(3), size).image
    return RenderedCase(
        case=case, frames=np.stack([f.image for f in target]), reference=reference, audio=audio,
        mouth=params[:, EXPRESSION_NAMES.index("mouth_open")], speech_mouth=speech_mouth, pose=pose,
        style_coefficients=expression_coefficients(style_params[:STYLE_FRAMES]),
        pose_frames=render_keypoints([f.pose for f in performance], (pose_size, pose_size)),
        style_frames=np.stack([f.image for f in performance]),
        phoneme_ids=frame_phonemes(_whisperx_result(speech, case.sentence, case.language, LEAD_IN), num_frames,
                                   FPS, case.language, table),
        eye_mask=np.any([f.eye_mask for f in target], axis=0), face_mask=np.any([f.face_mask for f in target], 0),
        lip_mask=np.any([f.lip_mask for f in target], axis=0))
