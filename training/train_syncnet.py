"""Train (or fine-tune) the SyncNet expert on a preprocessed dataset: ``python -m training.train_syncnet``.

Wav2Lip's recipe: a sample is 5 consecutive frames' mouth regions (lower half of the face box, 96 px, BGR) and a
0.2 s mel window that is either the one of those frames (label 1) or one at least 5 frames away (label 0), with
equal probability; the loss is the BCE of the embeddings' cosine against the label. The face box comes from the
clip's face mask, exactly as the DiTalker sync loss crops decoded frames, so the expert sees what it will judge.

``--init lipsync_expert.pth`` fine-tunes Wav2Lip's expert; without it training starts from scratch
(``--base-channels`` sets the width, 32 = Wav2Lip's). Writes ``--out`` (a ``.safetensors`` that
``ditalker_core.models.syncnet.load_syncnet`` and ``models.syncnet`` in the trainer configs accept) and
``metrics.jsonl`` beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ditalker_core.media import load_audio
from ditalker_core.models.syncnet import (MEL_WINDOW, SyncNet, face_box, load_syncnet, mel_start, melspectrogram,
                                          mouth_crops, save_syncnet)
from training.dataset import Record, ResumableSampler, count_frames, read_frames, read_mask, read_metadata

logger = logging.getLogger("training.train_syncnet")

FRAMES = 5
FPS = 25


@lru_cache(maxsize=64)
def _clip_mel(source: Path) -> np.ndarray:
    return melspectrogram(load_audio(source, 16000)[0])


class SyncPairs(torch.utils.data.Dataset):
    """(faces (15, 48, 96), mel (1, 80, 16), label) samples; all randomness from the (record, draw) key."""

    def __init__(self, records: list[Record], seed: int):
        self.records = records
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, draw = key
        record = self.records[index]
        rng = np.random.default_rng([self.seed, index, draw])
        mel = _clip_mel(record.audio or record.video)
        video_frames = record.num_frames or count_frames(record.video)
        frames_total = min(video_frames, (mel.shape[1] - MEL_WINDOW) * FPS // 80)
        start = int(rng.integers(0, frames_total - FRAMES + 1))
        label = float(rng.random() < 0.5)
        audio_frame = start
        if not label:  # a window at least FRAMES frames away
            choices = [f for f in range(frames_total - FRAMES + 1) if abs(f - start) >= FRAMES]
            audio_frame = int(rng.choice(choices)) if choices else start
            label = float(audio_frame == start)
        frames = torch.from_numpy(read_frames(record.video, start, FRAMES)).permute(3, 0, 1, 2).float() / 255
        mask = read_mask(record.masks["face"], frames.shape[-1])
        mask = torch.ones(frames.shape[-2:]) if mask is None else mask
        faces = mouth_crops(frames[None], [face_box(mask)], mask[None, None, None])[0]
        step = mel_start(audio_frame)
        return faces, torch.from_numpy(mel[None, :, step:step + MEL_WINDOW]).float(), torch.tensor(label)


def run(args: argparse.Namespace) -> Path:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    net = load_syncnet(args.init, device) if args.init else SyncNet(args.base_channels).to(device)
    net.train()
    records = read_metadata(args.metadata, args.root)
    loader = torch.utils.data.DataLoader(SyncPairs(records, args.seed), batch_size=args.batch_size,
                                         sampler=ResumableSampler(len(records), args.seed, args.batch_size),
                                         num_workers=args.num_workers)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = out.with_name("metrics.jsonl")
    metrics.write_text("")
    batches = iter(loader)
    for step in range(1, args.steps + 1):
        faces, mel, label = (t.to(device) for t in next(batches))
        probability = SyncNet.sync_probability(*net(mel, faces))
        loss = F.binary_cross_entropy(probability, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        values = {"step": step, "loss": loss.item(),
                  "accuracy": ((probability > 0.5).float() == label).float().mean().item()}
        with metrics.open("a") as handle:
            handle.write(json.dumps(values) + "\n")
        if step % args.save_every == 0 or step == args.steps:
            save_syncnet(net.eval(), out)
            net.train()
            logger.info("step %d: loss %.4f, accuracy %.2f -> %s", step, values["loss"], values["accuracy"], out)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_syncnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadata", required=True, help="metadata.json of a preprocessed dataset")
    parser.add_argument("--root", default=None, help="dataset root for relative paths (default: metadata folder)")
    parser.add_argument("--out", required=True, help="output .safetensors")
    parser.add_argument("--init", default=None, help="lipsync_expert.pth (or a previous output) to fine-tune")
    parser.add_argument("--base-channels", type=int, default=32, help="width when training from scratch")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4, help="Wav2Lip's syncnet_lr")
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv: Optional[list[str]] = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
