"""Ground-truth tracks of a synthetic talking face, per video frame at 25 fps.

- Mouth: every espeak phoneme has a viseme target (opening, rounding); targets are placed on the phonemes'
  own time spans, blended across neighbours with a 40 ms Gaussian (coarticulation) and gated by the speech
  envelope, so the mouth moves continuously and closes in pauses. A speaking manner scales the opening.
- Head: yaw/pitch/roll (degrees) from a style trajectory (nod, shake, tilt, still, or a mix) that starts at
  the frontal pose, at the trajectory's own speed.
- Emotion: one of the 7 classes, ramped in from neutral over the first frames (the reference is neutral).
- Blinks: at the manner's blink rate, each a 5-frame lid closure.

The expression parameters of a frame (``EXPRESSION_NAMES``) map to the 64 "3DMM" coefficients through the
fixed matrix ``expression_basis()`` (seeded, documented): the real Deep3DFaceRecon regressor cannot be
downloaded here, and the mapping keeps every parameter linearly recoverable, as real 3DMM expression is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FPS = 25
EMOTIONS = ("neutral", "happy", "sad", "angry", "disgusted", "surprised", "fearful")
TRAJECTORIES = ("still", "nod", "shake", "tilt", "mix")
EXPRESSION_NAMES = ("mouth_open", "mouth_round", "corner_lift", "upper_lip", "brow_raise", "brow_inner",
                    "eye_open", "mouth_width")

# Per emotion: corner lift (+ up), upper-lip raise, brow raise, inner-brow raise (+ up, - frown), eye opening
# (1 = neutral), mouth width (1 = neutral).
EMOTION_FACES: dict[str, dict[str, float]] = {
    "neutral": dict(corner_lift=0.0, upper_lip=0.0, brow_raise=0.0, brow_inner=0.0, eye_open=1.0, mouth_width=1.0),
    "happy": dict(corner_lift=1.0, upper_lip=0.0, brow_raise=0.15, brow_inner=0.0, eye_open=0.75, mouth_width=1.2),
    "sad": dict(corner_lift=-0.9, upper_lip=0.0, brow_raise=0.0, brow_inner=0.9, eye_open=0.7, mouth_width=0.9),
    "angry": dict(corner_lift=-0.3, upper_lip=0.2, brow_raise=-0.5, brow_inner=-1.0, eye_open=0.65,
                  mouth_width=0.85),
    "disgusted": dict(corner_lift=-0.6, upper_lip=1.0, brow_raise=-0.3, brow_inner=-0.4, eye_open=0.6,
                      mouth_width=1.05),
    "surprised": dict(corner_lift=0.0, upper_lip=0.0, brow_raise=1.0, brow_inner=0.3, eye_open=1.45,
                      mouth_width=0.85),
    "fearful": dict(corner_lift=-0.4, upper_lip=0.3, brow_raise=0.6, brow_inner=1.0, eye_open=1.35,
                    mouth_width=1.15),
}
EMOTION_RAMP_FRAMES = 6

# Viseme targets (opening 0..1, rounding 0..1) by the first IPA letter espeak reports; vowels open, bilabials shut.
_OPEN = {"a": 1.0, "ɑ": 1.0, "æ": 0.9, "ɐ": 0.8, "ʌ": 0.75, "ɔ": 0.8, "o": 0.65, "ɒ": 0.85, "e": 0.6, "ɛ": 0.7,
         "ə": 0.5, "ɜ": 0.55, "ɚ": 0.45, "i": 0.35, "ɪ": 0.4, "ᵻ": 0.4, "y": 0.3, "u": 0.35, "ʊ": 0.4, "ɯ": 0.35,
         "ɤ": 0.5, "ɨ": 0.35, "p": 0.0, "b": 0.0, "m": 0.0, "f": 0.12, "v": 0.12, "w": 0.2, "θ": 0.2, "ð": 0.2,
         "s": 0.18, "z": 0.18, "ʃ": 0.25, "ʒ": 0.25, "t": 0.22, "d": 0.22, "n": 0.22, "l": 0.3, "ɹ": 0.28,
         "r": 0.28, "k": 0.3, "ɡ": 0.3, "g": 0.3, "ŋ": 0.3, "h": 0.45, "j": 0.3, "x": 0.3, "ʂ": 0.22, "ɕ": 0.22,
         "ʐ": 0.22, "ts": 0.18}
_ROUND = {"o": 0.8, "ɔ": 0.6, "u": 1.0, "ʊ": 0.8, "w": 1.0, "y": 0.9, "ɒ": 0.5, "ʃ": 0.5, "ʒ": 0.5, "ɹ": 0.4}
_COARTICULATION_S = 0.04


def viseme(ipa: str) -> tuple[float, float]:
    """(opening, rounding) target of one espeak IPA phoneme; stress and length marks are ignored."""
    letters = [c for c in ipa if c.isalpha() or c in "ɐəɜɚɪʊʌɔɑɒæɛɤɯɨᵻ"]
    if not letters:
        return 0.25, 0.0
    first = letters[0]
    if any(c in _OPEN and _OPEN[c] >= 0.5 for c in letters):  # diphthongs: the most open part
        first = max((c for c in letters if c in _OPEN), key=lambda c: _OPEN[c])
    return _OPEN.get(first, 0.25), max((_ROUND.get(c, 0.0) for c in letters), default=0.0)


def _smooth(values: np.ndarray, rate: float, sigma_s: float) -> np.ndarray:
    radius = max(1, int(3 * sigma_s * rate))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / (sigma_s * rate)) ** 2)
    kernel /= kernel.sum()
    return np.convolve(np.pad(values, radius, mode="edge"), kernel, mode="valid")


def speech_envelope(audio: np.ndarray, rate: int, step: float = 0.01) -> np.ndarray:
    """RMS loudness every ``step`` seconds, normalised to the clip's 95th percentile and clipped to [0, 1]."""
    hop = int(rate * step)
    count = max(1, len(audio) // hop)
    rms = np.sqrt(np.mean(audio[: count * hop].reshape(count, hop) ** 2, axis=1) + 1e-12)
    return np.clip(rms / (np.percentile(rms, 95) + 1e-6), 0.0, 1.0)


def mouth_track(phonemes: list[tuple[float, float, str, int]], audio: np.ndarray, rate: int,
                num_frames: int, delay: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (opening, rounding) in [0, 1] for speech starting ``delay`` seconds into the video."""
    step = 0.01
    length = int(np.ceil((num_frames / FPS) / step)) + 1
    opening, rounding = np.zeros(length), np.zeros(length)
    for start, end, ipa, _ in phonemes:
        if not ipa:
            continue
        a, b = int((start + delay) / step), max(int((end + delay) / step), int((start + delay) / step) + 1)
        opening[a:b], rounding[a:b] = viseme(ipa)
    envelope = np.zeros(length)
    env = speech_envelope(audio, rate, step)
    shift = int(delay / step)
    envelope[shift:shift + len(env)] = env[: max(0, length - shift)]
    gate = _smooth(np.sqrt(envelope), 1 / step, _COARTICULATION_S)
    opening = np.clip(_smooth(opening, 1 / step, _COARTICULATION_S) * np.clip(1.6 * gate, 0, 1), 0, 1)
    rounding = np.clip(_smooth(rounding, 1 / step, _COARTICULATION_S), 0, 1)
    frames = np.minimum((np.arange(num_frames) / FPS / step).round().astype(int), length - 1)
    return opening[frames], rounding[frames]


@dataclass(frozen=True)
class Style:
    """A speaking style: how the head moves (trajectory) and the speaking manner (mouth amplitude, blinks)."""

    trajectory: str
    speed: float  # cycles per second
    amplitude: float  # degrees
    mouth_amplitude: float  # scales the mouth opening (manner)
    blink_rate: float  # blinks per second (manner)
    phase: float = 0.0  # radians of the mixed trajectory's second component

    @classmethod
    def sample(cls, rng: np.random.Generator, trajectory: str | None = None) -> "Style":
        return cls(trajectory=trajectory or str(rng.choice(TRAJECTORIES)), speed=float(rng.uniform(0.4, 1.2)),
                   amplitude=float(rng.uniform(8.0, 18.0)), mouth_amplitude=float(rng.uniform(0.55, 1.45)),
                   blink_rate=float(rng.uniform(0.1, 0.5)), phase=float(rng.uniform(0, 2 * np.pi)))


def head_pose(style: Style, num_frames: int) -> np.ndarray:
    """(F, 3) yaw, pitch, roll in degrees; every trajectory starts frontal (0, 0, 0) at frame 0."""
    t = np.arange(num_frames) / FPS
    wave = np.sin(2 * np.pi * style.speed * t)
    pose = np.zeros((num_frames, 3))
    axis = {"shake": 0, "nod": 1, "tilt": 2}.get(style.trajectory)
    if axis is not None:
        pose[:, axis] = style.amplitude * wave
    elif style.trajectory == "mix":
        pose[:, 0] = 0.7 * style.amplitude * wave
        pose[:, 1] = 0.5 * style.amplitude * np.sin(2 * np.pi * 0.7 * style.speed * t + style.phase) \
            - 0.5 * style.amplitude * np.sin(style.phase)
    return pose


def blink_track(rate: float, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Per-frame lid closure in [0, 1]: blinks at ``rate`` per second (Poisson), each 5 frames long."""
    closure = np.zeros(num_frames)
    shape = np.array([0.4, 0.9, 1.0, 0.7, 0.3])
    frame = int(rng.exponential(FPS / max(rate, 1e-3)))
    while frame < num_frames:
        part = shape[: num_frames - frame]
        closure[frame:frame + len(part)] = np.maximum(closure[frame:frame + len(part)], part)
        frame += len(shape) + int(rng.exponential(FPS / max(rate, 1e-3)))
    return closure


def emotion_track(emotion: str, num_frames: int, ramp: int = EMOTION_RAMP_FRAMES) -> dict[str, np.ndarray]:
    """Per-frame emotion face parameters, neutral at frame 0 and at full strength after ``ramp`` frames."""
    if emotion not in EMOTION_FACES:
        raise ValueError(f"emotion {emotion!r} is not one of {', '.join(EMOTIONS)}")
    weight = np.clip(np.arange(num_frames) / max(ramp, 1), 0, 1)
    weight = weight * weight * (3 - 2 * weight)  # smoothstep
    neutral, target = EMOTION_FACES["neutral"], EMOTION_FACES[emotion]
    return {k: neutral[k] + weight * (target[k] - neutral[k]) for k in neutral}


def expression_params(opening: np.ndarray, rounding: np.ndarray, emotion: dict[str, np.ndarray],
                      blink: np.ndarray, style: Style) -> np.ndarray:
    """(F, len(EXPRESSION_NAMES)) expression parameters of every frame (the face renderer's inputs)."""
    columns = {
        "mouth_open": np.clip(opening * style.mouth_amplitude, 0, 1.5),
        "mouth_round": rounding,
        "corner_lift": emotion["corner_lift"],
        "upper_lip": emotion["upper_lip"],
        "brow_raise": emotion["brow_raise"],
        "brow_inner": emotion["brow_inner"],
        "eye_open": emotion["eye_open"] * (1 - blink),
        "mouth_width": emotion["mouth_width"] * (1 - 0.25 * rounding),
    }
    return np.stack([np.broadcast_to(columns[name], opening.shape) for name in EXPRESSION_NAMES], axis=1)


def expression_basis() -> np.ndarray:
    """The fixed (len(EXPRESSION_NAMES), 64) map from expression parameters to "3DMM" coefficients: orthonormal
    rows (seed 3DMM = 3) scaled by 2, so coefficient magnitudes resemble Deep3DFaceRecon's (|exp| ~ 0.1-1)."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((64, len(EXPRESSION_NAMES))))
    return 2.0 * q.T.astype(np.float32)


def expression_coefficients(params: np.ndarray) -> np.ndarray:
    """(F, P) expression parameters -> (F, 64) coefficients (the style clip's format)."""
    return (params.astype(np.float32) @ expression_basis()).astype(np.float32)
