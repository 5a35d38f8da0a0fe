"""Render a talking video with the shipped demo model: ``python -m ditalker_core.demo [options]``.

Writes ``OUT/ditalker_demo.mp4`` (the generated video with the speech as its sound track, exactly
ceil(duration * 25) frames), ``OUT/side_by_side.mp4`` (portrait | generated | the style clip's DWPose drawing)
and ``OUT/strip.png`` (every 8th frame), and prints their paths. ``--nproc N`` splits each window's token sequence
over N processes (one GPU each; ``pipeline.parallel``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..extract.phonemes import extract_phonemes
from ..media import write_video
from ..pipeline import Guidance, SamplingOptions, parallel
from . import DEFAULT_OPTIONS, FPS, INPUTS, TRANSFORMER, DemoInputs, DemoModels, read_inputs


VAE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def side_by_side(reference: np.ndarray, frames: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(N, S, 3S, 3) uint8: the portrait, the generated frame and the pose drawing, each at the video size."""
    from PIL import Image

    size = frames.shape[1]

    def fit(image: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))

    portrait = fit(reference)
    poses = [fit(pose[i % len(pose)]) for i in range(len(frames))]
    return np.stack([np.concatenate([portrait, frame, p], axis=1) for frame, p in zip(frames, poses)])


def strip(frames: np.ndarray, every: int = 8, scale: int = 2) -> np.ndarray:
    from PIL import Image

    row = np.concatenate(list(frames[::every]), axis=1)
    return np.asarray(Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--portrait", default=str(INPUTS / "portrait.png"), help="reference photo (neutral, frontal)")
    parser.add_argument("--speech", default=None, help="driving audio (any format/rate); default: the bundled clip")
    parser.add_argument("--transcript", default=None, help="what --speech says (phoneme condition; optional)")
    parser.add_argument("--style", default=str(INPUTS / "style_coefficients.npy"),
                        help="style clip coefficients (.npy/.txt/.mat, (M, 64) expression)")
    parser.add_argument("--pose", default=str(INPUTS / "style_pose.mp4"), help="DWPose drawing of the style clip")
    parser.add_argument("--emotion", default="happy", help="neutral, happy, sad, angry, disgusted, surprised, fearful")
    parser.add_argument("--out", default="output/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--transformer", default=str(TRANSFORMER), help="DiTalker checkpoint (default: the demo)")
    parser.add_argument("--steps", type=int, default=DEFAULT_OPTIONS.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--denoise", type=float, default=DEFAULT_OPTIONS.denoise,
                        help="1 = start from pure noise; below 1, from the still portrait noised to that level")
    parser.add_argument("--guidance", type=float, nargs=3, metavar=("AUDIO", "STYLE", "EMOTION"),
                        default=[DEFAULT_OPTIONS.guidance.audio, DEFAULT_OPTIONS.guidance.style,
                                 DEFAULT_OPTIONS.guidance.emotion])
    parser.add_argument("--vae-dtype", choices=list(VAE_DTYPES), default="fp32",
                        help="bf16: the VAE about 10x faster on a CPU with bf16 matrix units (AMX) or a GPU, "
                             "adherence unchanged (README, Speed)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes (GPUs) that share each window's frames (diffusers' context parallelism)")
    args = parser.parse_args(argv)
    if args.nproc > 1 and not parallel.under_torchrun():
        parallel.relaunch(args.nproc, "ditalker_core.demo", sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    request = DemoInputs(portrait=Path(args.portrait), style=Path(args.style), pose=Path(args.pose),
                         emotion=args.emotion)
    if args.speech:  # the bundled phoneme ids belong to the bundled speech
        request.speech, request.phonemes = Path(args.speech), None
    inputs = read_inputs(request)
    if args.speech and args.transcript:
        inputs["phoneme_ids"] = extract_phonemes(inputs["audio"], args.transcript, sample_rate=16000).ids
    models = DemoModels(args.transformer, parallel.process_device(), VAE_DTYPES[args.vae_dtype])
    rank = parallel.join(models.pipeline.transformer) if parallel.under_torchrun() else 0
    conditions = models.conditions(**inputs)
    options = SamplingOptions(steps=args.steps, scheduler=DEFAULT_OPTIONS.scheduler, seed=args.seed,
                              denoise=args.denoise, guidance=Guidance(*args.guidance))
    total = models.pipeline.total_steps(conditions.num_frames, options)
    with tqdm(total=total, desc="denoising", unit="step", disable=rank != 0) as bar:
        video = models.pipeline.sample(conditions, options, lambda done, _: bar.update(done - bar.n))
    if rank != 0:  # every process sampled the same video; one writes it
        return
    frames = (torch.cat(list(models.pipeline.decode(video))).numpy() * 255).round().astype(np.uint8)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    movie = write_video(out / "ditalker_demo.mp4", frames, FPS, inputs["audio"], 16000)
    sbs = write_video(out / "side_by_side.mp4", side_by_side(inputs["portrait"], frames, inputs["pose_frames"]), FPS,
                      inputs["audio"], 16000)
    from PIL import Image

    Image.fromarray(strip(frames)).save(out / "strip.png")
    print(f"{len(frames)} frames ({len(frames) / FPS:.2f} s) at {frames.shape[2]}x{frames.shape[1]}")
    print(f"video:        {movie}\nside by side: {sbs}\nstill strip:  {out / 'strip.png'}")


if __name__ == "__main__":
    main()
