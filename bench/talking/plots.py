"""What people would rather look at than read: tracks over time, the emotion confusion matrix, side-by-sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.synthetic.tracks import EMOTIONS, FPS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tracks(path: Path, title: str, truth_mouth: np.ndarray, mouths: dict[str, np.ndarray], truth_pose: np.ndarray,
           poses: dict[str, np.ndarray]) -> Path:
    """Mouth opening and yaw/pitch/roll over time: the truth against what the probes read from each video."""
    plt = _pyplot()
    t = np.arange(len(truth_mouth)) / FPS
    fig, axes = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, truth_mouth, "k", lw=2, label="truth")
    for name, values in mouths.items():
        axes[0].plot(t[: len(values)], values, label=name)
    axes[0].set_ylabel("mouth opening")
    axes[0].legend(loc="upper right", fontsize=8)
    for i, axis in enumerate(("yaw", "pitch", "roll")):
        ax = axes[i + 1]
        ax.plot(t, truth_pose[:, i], "k", lw=2, label="driving style")
        for name, values in poses.items():
            ax.plot(t[: len(values)], values[:, i], label=name)
        ax.set_ylabel(f"{axis} (deg)")
    axes[1].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def confusion_matrix(path: Path, matrix: np.ndarray, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("read from the generated video")
    ax.set_ylabel("asked for")
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(j, i, str(value), ha="center", va="center")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def side_by_side(reference: np.ndarray, generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, S, 3S, 3): the reference portrait | the generated video | the ground truth."""
    n = min(len(generated), len(truth))
    portrait = np.broadcast_to(reference, (n, *reference.shape))
    return np.concatenate([portrait, generated[:n], truth[:n]], axis=2)
