"""What a probe reading is scored by. Every function takes arrays read from a video and the case's truth."""

from __future__ import annotations

import numpy as np

from training.synthetic.tracks import EMOTION_RAMP_FRAMES

POSE_AXES = {"shake": (0,), "nod": (1,), "tilt": (2,), "mix": (0, 1)}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; 0 when either side is constant (nothing to follow, or nothing followed)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a - a.mean(), b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / scale) if scale > 1e-12 else 0.0


def best_lag_r(pred: np.ndarray, truth: np.ndarray, max_lag: int = 2) -> float:
    """The highest Pearson r over shifts of ``pred`` by -max_lag..max_lag frames."""
    n = min(len(pred), len(truth))
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        a = pred[max(0, lag):n + min(0, lag)]
        b = truth[max(0, -lag):n - max(0, lag)]
        best = max(best, pearson(a, b))
    return best


def pose_r(pred: np.ndarray, truth: np.ndarray, trajectory: str) -> float:
    """Mean r over the axes the trajectory moves (yaw for shake, pitch for nod, roll for tilt, yaw+pitch mix)."""
    return float(np.mean([pearson(pred[:, axis], truth[:, axis]) for axis in POSE_AXES[trajectory]]))


def manner(pred_mouth: np.ndarray, speech_mouth: np.ndarray) -> float:
    """How wide the mouth opens for this speech: least-squares gain of the read opening over the speech's own
    opening (before any manner), through the origin, on frames where the speech opens the mouth."""
    speaking = speech_mouth > 0.05
    if speaking.sum() < 3:
        return 0.0
    x, y = speech_mouth[speaking], pred_mouth[speaking]
    return float((x * y).sum() / (x * x).sum())


def emotion_class(probabilities: np.ndarray) -> int:
    """The video's emotion: the class of the highest mean probability after the emotion's onset."""
    return int(np.argmax(probabilities[EMOTION_RAMP_FRAMES + 2:].mean(axis=0)))


def seam_ratio(frames: np.ndarray, joins: list[tuple[int, int]]) -> float:
    """How visible the joins of windows are: per join (first shared frame, first new frame), the largest change
    between consecutive frames from the frame before the shared ones to the first new one, averaged over joins,
    over the mean change elsewhere (1 = a join is as smooth as any other frame step). Pinned seams put their jump
    at the first new frame, cross-faded ones spread it over the shared frames: both are counted."""
    steps = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # step k: frame k -> k + 1
    zones = [np.arange(max(first - 1, 0), min(new, len(steps))) for first, new in joins if 0 < new < len(frames)]
    if not zones:
        return 1.0
    elsewhere = np.setdiff1d(np.arange(len(steps)), np.concatenate(zones))
    return float(np.mean([steps[zone].max() for zone in zones]) / max(steps[elsewhere].mean(), 1e-6))


def confusion(truth: list[int], predicted: list[int], classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), int)
    for t, p in zip(truth, predicted):
        matrix[t, p] += 1
    return matrix
