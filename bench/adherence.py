"""Adherence benchmark: does a DiTalker follow its audio, style and emotion? Prints one JSON line.

    python bench/adherence.py [--checkpoint PATH] [--cases 8] [--seed 1] [--steps 20] [--out DIR]
                              [--long-sentences 14 (0 = no long case)] [--seams pinned|crossfade]

Held-out synthetic cases (``bench/talking/data.py``: sentences, identities and styles the training set never
saw) are generated with the real pipeline and multi-condition guidance, then read back by probes that see only
the video (``bench/talking/probes.py``). Scores (``bench/talking/metrics.py``):

- ``lip_sync``: mean Pearson r of the read mouth opening against the true opening for that speech (best lag
  within +-2 frames); ``style``: mean r of the read head pose against the driving trajectory (the axes it moves);
  ``speaking_manner``: r across cases between the style clip's mouth amplitude and the generated one;
  ``emotion_accuracy`` over 7 classes; ``identity``: cosine of the identity read from the frames and from the
  reference;
- ``ablations``: the same cases with audio, style (3DMM + phonemes + pose) or emotion (prompt + CLIP) dropped;
- ``long_audio``: one case of 30 s or more in several windows: frame count, lip sync and identity of the first
  and last window, and the largest change across the joins of windows over the change elsewhere (``seam_ratio``;
  ``--seams`` picks pinned or cross-faded joins);
- ``ground_truth``: the probes on the true videos (the ceiling of each score); ``reconstruction``: on the true
  videos through the VAE (encode, decode): the ceiling any DiTalker on that VAE can reach.

With ``--out DIR``: every generated mp4 (with its audio), side-by-sides (reference | generated | truth), PNG
plots of the tracks, the emotion confusion matrix and ``cases.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.talking import metrics, plots  # noqa: E402
from bench.talking.data import benchmark_cases, long_case  # noqa: E402
from bench.talking.probes import Readout, identity_similarity, load_probe, read_video  # noqa: E402
from ditalker_core.demo import DEFAULT_OPTIONS, TRANSFORMER, DemoModels  # noqa: E402
from ditalker_core.media import write_video  # noqa: E402
from ditalker_core.pipeline import Conditions, SamplingOptions  # noqa: E402
from ditalker_core.pipeline.generate import SEAMS, decode_latents  # noqa: E402
from training.synthetic.cases import SAMPLE_RATE, RenderedCase, render_case  # noqa: E402
from training.synthetic.tracks import EMOTIONS, FPS  # noqa: E402

ABLATIONS = {
    "no_audio": dict(audio_features=None),
    "no_style": dict(style_clip=None, style_pad_mask=None, phoneme_ids=None, pose_video=None),
    "no_emotion": dict(emotion_tokens=None, emotion_mask=None, clip_embedding=None),
}


def conditions_for(models: DemoModels, rendered: RenderedCase) -> Conditions:
    return models.conditions(portrait=rendered.reference, audio=rendered.audio,
                             style=torch.from_numpy(rendered.style_coefficients), pose_frames=rendered.pose_frames,
                             emotion=rendered.case.emotion, phoneme_ids=rendered.phoneme_ids, sample_rate=SAMPLE_RATE)


@torch.no_grad()
def reconstruct(vae: torch.nn.Module, frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 through the VAE: the posterior mean, decoded. The clip is padded with its last frame to
    whole encoder slices (``mini_batch_encoder`` frames), as the pipeline's windows are."""
    slices = vae.config.mini_batch_encoder
    padded = np.concatenate([frames, np.repeat(frames[-1:], -len(frames) % slices, axis=0)])
    video = torch.from_numpy(padded).permute(3, 0, 1, 2)[None].to(vae.device, vae.dtype) / 127.5 - 1
    scaled = vae.encode(video).mode() * vae.config.scaling_factor
    decoded = torch.cat(list(decode_latents(vae, scaled)), dim=1)  # (3, F, H, W) in [-1, 1]
    return ((decoded[:, : len(frames)].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()


def generate(models: DemoModels, conditions: Conditions, options: SamplingOptions) -> np.ndarray:
    frames = models.pipeline(conditions, options)
    return (frames.numpy() * 255).round().astype(np.uint8)


def score(reading: Readout, reference: Readout, rendered: RenderedCase) -> dict[str, float]:
    """Per-video scores against the case's truth."""
    return {"lip_sync": metrics.best_lag_r(reading.mouth, rendered.mouth),
            "style": metrics.pose_r(reading.pose, rendered.pose, rendered.case.style.trajectory),
            "manner": metrics.manner(reading.mouth, rendered.speech_mouth),
            "emotion": metrics.emotion_class(reading.emotion),
            "identity": identity_similarity(reading.identity.mean(0), reference.identity[0])}


def summarize(scores: list[dict[str, float]], cases: list[RenderedCase]) -> dict[str, float]:
    truth = [EMOTIONS.index(r.case.emotion) for r in cases]
    return {"lip_sync": float(np.mean([s["lip_sync"] for s in scores])),
            "style": float(np.mean([s["style"] for s in scores])),
            "speaking_manner": metrics.pearson([r.case.style.mouth_amplitude for r in cases],
                                               [s["manner"] for s in scores]),
            "emotion_accuracy": float(np.mean([s["emotion"] == t for s, t in zip(scores, truth)])),
            "identity": float(np.mean([s["identity"] for s in scores]))}


def long_audio(models: DemoModels, probe: Any, rendered: RenderedCase, options: SamplingOptions,
               out: Path | None) -> dict[str, Any]:
    conditions = conditions_for(models, rendered)
    windows = models.pipeline.plan(conditions.num_frames, options.overlap)
    frames = generate(models, conditions, options)
    reading = read_video(probe, frames)
    reference = read_video(probe, rendered.reference[None])
    size = models.pipeline.window_frames
    first, last = slice(0, size), slice(len(frames) - size, len(frames))
    expected = math.ceil(len(rendered.audio) / SAMPLE_RATE * FPS)
    if out is not None:
        write_video(out / "long_audio.mp4", frames, FPS, rendered.audio, SAMPLE_RATE)
    return {
        "seconds_of_audio": round(len(rendered.audio) / SAMPLE_RATE, 2), "windows": len(windows),
        "frames": len(frames), "expected_frames": expected,
        "lip_sync_first_window": metrics.best_lag_r(reading.mouth[first], rendered.mouth[first]),
        "lip_sync_last_window": metrics.best_lag_r(reading.mouth[last], rendered.mouth[last]),
        "identity_first_window": identity_similarity(reading.identity[first].mean(0), reference.identity[0]),
        "identity_last_window": identity_similarity(reading.identity[last].mean(0), reference.identity[0]),
        "seams": options.seams,
        "seam_ratio": metrics.seam_ratio(frames, [(w.start, w.start + w.known) for w in windows[1:]]),
    }


def write_case(out: Path, index: int, rendered: RenderedCase, videos: dict[str, np.ndarray],
               readings: dict[str, Readout]) -> None:
    name = f"case_{index:02d}_{rendered.case.emotion}_{rendered.case.style.trajectory}"
    write_video(out / f"{name}.mp4", videos["full"], FPS, rendered.audio, SAMPLE_RATE)
    write_video(out / f"{name}_side_by_side.mp4", plots.side_by_side(rendered.reference, videos["full"],
                                                                     rendered.frames), FPS, rendered.audio, SAMPLE_RATE)
    plots.tracks(out / f"{name}_tracks.png", f"case {index}: {rendered.case.emotion}, {rendered.case.style.trajectory}"
                 f", manner {rendered.case.style.mouth_amplitude:.2f}", rendered.mouth,
                 {"generated": readings["full"].mouth, "no audio": readings["no_audio"].mouth,
                  "truth, read back": readings["truth"].mouth}, rendered.pose,
                 {"generated": readings["full"].pose, "no style": readings["no_style"].pose})


def run(checkpoint: str | Path, cases: int, seed: int, steps: int, out: Path | None, long_sentences: int,
        seams: str = DEFAULT_OPTIONS.seams) -> dict[str, Any]:
    started = time.time()
    models, probe = DemoModels(checkpoint), load_probe()
    options = replace(DEFAULT_OPTIONS, steps=steps, seed=seed, seams=seams)
    variants = {"full": {}, **ABLATIONS}
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in [*variants, "truth", "reconstruction"]}
    rendered_cases = []
    for index, case in enumerate(benchmark_cases(cases, seed)):
        rendered = render_case(case)
        rendered_cases.append(rendered)
        conditions = conditions_for(models, rendered)
        reference = read_video(probe, rendered.reference[None])
        videos = {name: generate(models, replace(conditions, **drop), options) for name, drop in variants.items()}
        videos["truth"] = rendered.frames
        videos["reconstruction"] = reconstruct(models.pipeline.vae, rendered.frames)
        readings = {name: read_video(probe, frames) for name, frames in videos.items()}
        for name, reading in readings.items():
            scores[name].append(score(reading, reference, rendered))
        if out is not None:
            write_case(out, index, rendered, videos, readings)
    result = summarize(scores["full"], rendered_cases)
    result["ablations"] = {name: summarize(scores[name], rendered_cases) for name in ABLATIONS}
    result["ground_truth"] = summarize(scores["truth"], rendered_cases)
    result["reconstruction"] = summarize(scores["reconstruction"], rendered_cases)
    if long_sentences:
        result["long_audio"] = long_audio(models, probe, render_case(long_case(seed, long_sentences)), options, out)
    if out is not None:
        truth = [EMOTIONS.index(r.case.emotion) for r in rendered_cases]
        plots.confusion_matrix(out / "emotion_confusion.png", metrics.confusion(
            truth, [s["emotion"] for s in scores["full"]], len(EMOTIONS)), "emotion: asked vs generated")
        (out / "cases.json").write_text(json.dumps(
            [{"case": r.case.to_json(), "scores": {k: scores[k][i] for k in scores}} for i, r in
             enumerate(rendered_cases)], indent=1))
    result.update(cases=cases, seed=seed, steps=steps, checkpoint=str(checkpoint),
                  seconds=round(time.time() - started, 1))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(TRANSFORMER), help="DiTalker file (default: the shipped demo)")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=DEFAULT_OPTIONS.steps)
    parser.add_argument("--out", default=None, help="folder for videos, plots and cases.json")
    parser.add_argument("--long-sentences", type=int, default=14, help="sentences of the long case (0 = skip it)")
    parser.add_argument("--seams", choices=SEAMS, default=DEFAULT_OPTIONS.seams, help="how windows join")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(args.checkpoint, args.cases, args.seed, args.steps, out, args.long_sentences,
                         args.seams)))


if __name__ == "__main__":
    main()
