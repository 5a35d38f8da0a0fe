"""Probes that read a talking-face video back: mouth opening, head pose, emotion and identity per frame.

One small CNN with four heads, trained on frames the synthetic generator draws (random identities,
expressions, emotions at any strength, blinks and poses, blurred and noised like generated frames). It sees
only pixels: never a case's inputs. The identity head regresses the identity's appearance parameters (colours,
face geometry, hair style), so two frames of one person give nearly the same vector and two people rarely do;
``identity_similarity`` is the cosine of those vectors.

    python bench/talking/probes.py --out bench/talking/probes.safetensors   # train (about 5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.synthetic.faces import HAIR_STYLES, Identity, render  # noqa: E402
from training.synthetic.tracks import EMOTION_FACES, EMOTIONS, EXPRESSION_NAMES  # noqa: E402

WEIGHTS = Path(__file__).with_name("probes.safetensors")
IDENTITY_DIM = 22
POSE_SCALE = 20.0  # degrees per unit of the pose head


def identity_vector(identity: Identity) -> np.ndarray:
    """The appearance parameters the identity head regresses, each scaled to about [-1, 1]."""
    colors = [identity.skin, identity.hair, identity.background, identity.background_bottom, identity.shirt]
    values = [c / 127.5 - 1 for color in colors for c in color]
    values += [(identity.face_width - 0.3) / 0.03, (identity.face_height - 0.385) / 0.025,
               (identity.eye_spacing - 0.4) / 0.04]
    values += [float(identity.hair_style == style) * 2 - 1 for style in HAIR_STYLES]
    return np.asarray(values, np.float32)


class FaceProbe(ModelMixin, ConfigMixin):
    """64 px frame -> (mouth opening, yaw/pitch/roll / POSE_SCALE, 7 emotion logits, identity vector)."""

    @register_to_config
    def __init__(self, width: int = 32, size: int = 64):
        super().__init__()
        layers, channels = [], 3
        for out in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU(),
                       nn.Conv2d(out, out, 3, stride=2, padding=1), nn.SiLU()]
            channels = out
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * (size // 16) ** 2, 256), nn.SiLU())
        self.mouth = nn.Linear(256, 1)
        self.pose = nn.Linear(256, 3)
        self.emotion = nn.Linear(256, len(EMOTIONS))
        self.identity = nn.Linear(256, IDENTITY_DIM)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """``frames`` (N, 3, 64, 64) in [0, 1]."""
        h = self.features(frames * 2 - 1)
        return {"mouth": self.mouth(h)[:, 0], "pose": self.pose(h), "emotion": self.emotion(h),
                "identity": self.identity(h)}


@dataclass
class Readout:
    """Per-frame probe outputs of one video."""

    mouth: np.ndarray  # (F,)
    pose: np.ndarray  # (F, 3) degrees
    emotion: np.ndarray  # (F, 7) probabilities
    identity: np.ndarray  # (F, IDENTITY_DIM)


def load_probe(path: str | Path = WEIGHTS) -> FaceProbe:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"probe weights {path} are missing; train them: python bench/talking/probes.py "
                                f"--out {path}")
    probe = FaceProbe()
    probe.load_state_dict(load_file(str(path)))
    return probe.eval()


@torch.no_grad()
def read_video(probe: FaceProbe, frames: np.ndarray, batch: int = 256) -> Readout:
    """uint8 (F, H, W, 3) frames (any size; resized to the probe's) -> per-frame readout."""
    outs = []
    for start in range(0, len(frames), batch):
        x = torch.from_numpy(np.array(frames[start:start + batch])).permute(0, 3, 1, 2).float() / 255
        if x.shape[-1] != probe.config.size:
            x = F.interpolate(x, size=(probe.config.size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        outs.append(probe(x))
    cat = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return Readout(mouth=cat["mouth"].numpy(), pose=cat["pose"].numpy() * POSE_SCALE,
                   emotion=cat["emotion"].softmax(-1).numpy(), identity=cat["identity"].numpy())


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two identity vectors (e.g. a video's mean and the reference's)."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8))


# ----------------------------------------------------------------------------- training
def random_frame(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One random frame and its labels; emotion label -1 (ignored) while an emotion is only half shown."""
    identity = Identity.sample(np.random.default_rng(int(rng.integers(2**62))))
    emotion = int(rng.integers(len(EMOTIONS)))
    strength = 1.0 if rng.random() < 0.7 else float(rng.uniform(0, 1))
    face = {k: EMOTION_FACES["neutral"][k] + strength * (v - EMOTION_FACES["neutral"][k])
            for k, v in EMOTION_FACES[EMOTIONS[emotion]].items()}
    rounding = float(rng.uniform(0, 1)) * (rng.random() < 0.6)
    opening = float(rng.uniform(0, 1.5)) * (rng.random() < 0.85)
    blink = float(rng.uniform(0, 1)) if rng.random() < 0.15 else 0.0
    values = {"mouth_open": opening, "mouth_round": rounding, **face, "eye_open": face["eye_open"] * (1 - blink),
              "mouth_width": face["mouth_width"] * (1 - 0.25 * rounding)}
    pose = rng.uniform(-22, 22, 3) * (rng.random(3) < 0.75)
    frame = render(identity, np.array([values[n] for n in EXPRESSION_NAMES]), pose, size)
    label = emotion if strength > 0.6 else (0 if strength < 0.1 else -1)
    return frame.image, {"mouth": np.float32(opening), "pose": (pose / POSE_SCALE).astype(np.float32),
                         "emotion": np.int64(label), "identity": identity_vector(identity)}


def degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random blur and noise, like decoded generated frames."""
    sigma = float(torch.rand(1, generator=generator)) * 1.2
    if sigma > 0.2:
        radius = 2
        k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
        k = (k / k.sum()).to(x)
        x = F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        x = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    noise = float(torch.rand(1, generator=generator)) * 0.03
    return (x + noise * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def train(out: str | Path, pool: int = 12000, steps: int = 3000, batch: int = 64, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    rng = np.random.default_rng(seed)
    started = time.time()
    frames, labels = zip(*(random_frame(rng) for _ in range(pool)))
    images = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    targets = {k: torch.from_numpy(np.stack([lab[k] for lab in labels])) for k in labels[0]}
    print(f"rendered {pool} frames in {time.time() - started:.0f} s", flush=True)
    torch.manual_seed(seed)
    probe = FaceProbe()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        index = torch.randint(0, pool, (batch,), generator=generator)
        x = degrade(images[index].float() / 255, generator)
        y = {k: v[index] for k, v in targets.items()}
        pred = probe(x)
        loss = (F.smooth_l1_loss(pred["mouth"], y["mouth"], beta=0.1) + F.smooth_l1_loss(pred["pose"], y["pose"],
                                                                                          beta=0.1)
                + 0.5 * F.cross_entropy(pred["emotion"], y["emotion"], ignore_index=-1)
                + 0.5 * F.smooth_l1_loss(pred["identity"], y["identity"], beta=0.1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step} loss {float(loss):.4f} ({time.time() - started:.0f} s)", flush=True)
    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, str(out))
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(WEIGHTS))
    parser.add_argument("--pool", type=int, default=12000, help="rendered training frames")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"wrote {train(args.out, args.pool, args.steps, seed=args.seed)}")


if __name__ == "__main__":
    main()
