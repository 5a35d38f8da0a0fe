"""Do the Whisper features the model hears carry the mouth? A ridge regression from each frame's Whisper window to
the true mouth opening, fitted on some synthetic clips and scored on the others. Prints one JSON line.

    python bench/audio_mouth.py [--metadata data/synthetic/metadata.json] [--train 1200] [--ridge 10]

A high held-out r says the lip information is in the features in a simple form, so a model that does not follow
the audio has not learnt to read it (``bench/hearing.py`` measures that), rather than lacking it.
Features per frame: the last encoder layer's 10 tokens, their mean and the mean of the two centre tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.dataset import read_metadata  # noqa: E402


def frame_features(windows: torch.Tensor) -> np.ndarray:
    """(F, 50, d) Whisper windows (5 layer rows of 10 tokens) -> (F, 2d)."""
    last = windows.float().reshape(windows.shape[0], -1, 10, windows.shape[-1])[:, -1]
    return torch.cat([last.mean(1), last[:, 4:6].mean(1)], dim=1).numpy()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadata", default="data/synthetic/metadata.json")
    parser.add_argument("--train", type=int, default=1200, help="clips to fit on; the rest are scored")
    parser.add_argument("--ridge", type=float, default=10.0)
    args = parser.parse_args(argv)
    started = time.time()
    root = Path(args.metadata).parent
    features, mouth, clip = [], [], []
    for index, record in enumerate(read_metadata(args.metadata)):
        truth = json.loads((root / "truth" / f"{record.video.stem}.json").read_text())
        features.append(frame_features(torch.load(record.audio_features, weights_only=True)))
        mouth.append(np.asarray(truth["speech_mouth"], np.float64))
        clip.append(np.full(len(mouth[-1]), index))
    x, y, clip = np.concatenate(features), np.concatenate(mouth), np.concatenate(clip)
    fit, held = clip < args.train, clip >= args.train
    mean, std = x[fit].mean(0), x[fit].std(0) + 1e-6
    x = (x - mean) / std
    weights = np.linalg.solve(x[fit].T @ x[fit] + args.ridge * np.eye(x.shape[1]), x[fit].T @ (y[fit] - y[fit].mean()))
    predicted = x[held] @ weights + y[fit].mean()
    per_clip = [pearson(predicted[clip[held] == c], y[held][clip[held] == c]) for c in np.unique(clip[held])]
    result = {"held_out_r": round(pearson(predicted, y[held]), 4), "per_clip_r": round(float(np.nanmean(per_clip)), 4),
              "fit_clips": args.train, "held_out_clips": len(per_clip), "seconds": round(time.time() - started, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
