"""3DMM expression coefficients of style frames (Deep3DFaceRecon_pytorch), and the style clip.

DiTalker's style branch reads 64 expression coefficients per frame (``coeff[:, 80:144]`` of the 257
Deep3DFaceRecon coefficients) and a fixed-length clip with a padding mask. Frames are detected
with MTCNN, aligned like Deep3DFaceRecon and regressed by its ResNet-50 (``epoch_20.pth``).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import InputError, MissingModelError
from .face import FaceDetector, align_face, as_frame_list

RECON_FILE = "epoch_20.pth"
DEFAULT_FOLDER = Path("models/ditalker/3dmm")
RECON_SOURCE = (
    "the Deep3DFaceRecon_pytorch pre-trained model (README 'Prepare prerequisite models': Google Drive "
    "folder with checkpoints/<model_name>/epoch_20.pth) at https://github.com/sicxu/Deep3DFaceRecon_pytorch"
)
# Deep3DFaceRecon's coefficient layout: id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 2 + 1.
COEFF_SPLITS = (80, 64, 80, 3, 27, 2, 1)
NUM_COEFFS = sum(COEFF_SPLITS)
EXP_SLICE = slice(80, 144)
EXP_DIM = 64
STYLE_MAX_LEN = 256
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
COEFF_SUFFIXES = {".mat", ".txt", ".npy"}


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), with torchvision's attribute names."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 trunk up to global average pooling -> (B, 2048, 1, 1).

    Parameter names equal torchvision's ``resnet50`` (without ``fc``), so Deep3DFaceRecon's
    ``backbone.*`` weights load unconverted.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if index == 0 else 2
            stage = [Bottleneck(in_planes, planes, stride)]
            in_planes = planes * Bottleneck.expansion
            stage += [Bottleneck(in_planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class ReconNet(nn.Module):
    """Deep3DFaceRecon's ``ReconNetWrapper``: ResNet-50 + one 1x1 conv per coefficient group -> (B, 257).

    Input: aligned 224x224 RGB faces in [0, 1], (B, 3, 224, 224), no mean/std normalisation.
    """

    def __init__(self):
        super().__init__()
        self.backbone = ResNet50()
        self.final_layers = nn.ModuleList(nn.Conv2d(self.backbone.out_channels, n, 1) for n in COEFF_SPLITS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return torch.cat([layer(features) for layer in self.final_layers], dim=1).flatten(1)


def resolve_recon_path(recon_path: str | Path | None) -> Path:
    """A file, or a folder holding ``epoch_20.pth``; missing -> MissingModelError naming where it goes."""
    path = Path(recon_path) if recon_path is not None else DEFAULT_FOLDER
    candidate = path if path.is_file() or (path.suffix and not path.is_dir()) else path / RECON_FILE
    if not candidate.is_file():
        raise MissingModelError(
            f"Deep3DFaceRecon face reconstruction weights ({RECON_FILE})", candidate,
            f"{candidate.parent} (ComfyUI: models/ditalker/3dmm/)", RECON_SOURCE)
    return candidate


def load_recon_net(recon_path: str | Path | None) -> ReconNet:
    """Build :class:`ReconNet` and load Deep3DFaceRecon's checkpoint (its ``net_recon`` entry) strictly."""
    path = resolve_recon_path(recon_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("net_recon", checkpoint)
    net = ReconNet()
    net.load_state_dict(state)
    return net.eval()


@dataclass
class StyleResult:
    """Coefficients of the frames where a face was found; ``kept``/``skipped`` index the input frames."""

    coeff: torch.Tensor
    kept: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    @property
    def exp(self) -> torch.Tensor:
        """(M, 64) expression coefficients, DiTalker's style input."""
        return self.coeff[:, EXP_SLICE]


class StyleExtractor:
    """Style frames -> 3DMM coefficients: MTCNN 5 points, Deep3DFaceRecon alignment, ResNet-50."""

    def __init__(self, net: ReconNet, device: str | torch.device = "cpu", batch_size: int = 16):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = batch_size
        self.detector = FaceDetector(self.device, batch_size=batch_size)

    @classmethod
    def from_pretrained(cls, recon_path: str | Path | None = None, device: str | torch.device = "cpu",
                        batch_size: int = 16) -> StyleExtractor:
        """Load ``epoch_20.pth`` from a file or folder (default ``models/ditalker/3dmm``)."""
        return cls(load_recon_net(recon_path), device, batch_size)

    @torch.no_grad()
    def extract(self, frames: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> StyleResult:
        """Coefficients for every frame with a face; frames without one are skipped with a warning.

        Raises InputError only when no frame at all shows a face, as there is no style to use then.
        """
        images = as_frame_list(frames)
        detections = self.detector.detect(images)
        kept = [i for i, det in enumerate(detections) if det is not None]
        skipped = [i for i, det in enumerate(detections) if det is None]
        if not kept:
            raise InputError(f"no face was found in any of the {len(images)} style frames; pass frames showing a face")
        if skipped:
            warnings.warn(f"no face found in {len(skipped)} of {len(images)} style frames; skipped frames {skipped}",
                          stacklevel=2)
        coeffs = []
        for start in range(0, len(kept), self.batch_size):
            crops = [align_face(images[i], detections[i].points)[0]
                     for i in kept[start:start + self.batch_size]]
            batch = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
            coeffs.append(self.net(batch).float().cpu())
        return StyleResult(torch.cat(coeffs), kept, skipped)


def load_expression(path: str | Path) -> torch.Tensor:
    """Precomputed coefficients -> (M, 64) float32 expression, reading the formats DiTalker's data uses.

    ``.mat``: ``coeff`` (M, 257), expression = columns 80:144 (official loader), or Deep3DFaceRecon's own
    ``save_coeff`` output with an ``exp`` entry. ``.txt`` (np.loadtxt) and ``.npy``: (M, 64) expression,
    or (M, 257) full coefficients.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"3DMM file {path} does not exist; pass an existing .mat/.txt/.npy file")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        from scipy.io import loadmat

        data = loadmat(str(path))
        if "coeff" in data:
            values = np.asarray(data["coeff"])
            if values.ndim != 2 or values.shape[1] < EXP_SLICE.stop:
                raise InputError(f"{path}: 'coeff' has shape {values.shape}; expected (frames, 257) 3DMM coefficients")
            values = values[:, EXP_SLICE]
        elif "exp" in data:
            values = np.asarray(data["exp"])
        else:
            raise InputError(f"{path} has neither 'coeff' nor 'exp'; pass a Deep3DFaceRecon coefficient .mat")
    elif suffix == ".txt":
        values = np.loadtxt(str(path), ndmin=2)
    elif suffix == ".npy":
        values = np.load(str(path), allow_pickle=False)
    else:
        raise InputError(f"3DMM file {path} has suffix {path.suffix!r}; pass a .mat, .txt or .npy file")
    values = np.atleast_2d(values)
    if values.ndim == 2 and values.shape[1] == NUM_COEFFS:
        values = values[:, EXP_SLICE]
    if values.ndim != 2 or values.shape[1] != EXP_DIM:
        raise InputError(f"{path} holds shape {values.shape}; "
                         "expected (frames, 64) expression or (frames, 257) coefficients")
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def make_style_clip(exp: torch.Tensor | np.ndarray, length: int = STYLE_MAX_LEN,
                    mode: Literal["middle", "random"] | int = "middle",
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 64) expression -> (clip (length, 64), pad_mask (length,) bool, True = padding).

    Like the official ``get_video_style_clip``: a longer sequence is cut to ``length`` frames starting
    at the middle (``(M - length + 1) // 2``), a random or a given index; a shorter one is zero-padded
    at the end and the padded rows are flagged in the mask.
    """
    exp = torch.as_tensor(exp, dtype=torch.float32)
    if exp.ndim != 2 or exp.shape[0] == 0:
        raise InputError(f"style expression has shape {tuple(exp.shape)}; pass (frames >= 1, 64) coefficients")
    frames = exp.shape[0]
    if frames < length:
        clip = torch.cat([exp, exp.new_zeros(length - frames, exp.shape[1])])
        return clip, torch.arange(length) >= frames
    if mode == "middle":
        start = (frames - length + 1) // 2
    elif mode == "random":
        start = int(torch.randint(0, frames - length + 1, (1,), generator=generator))
    elif isinstance(mode, int) and not isinstance(mode, bool):
        if not 0 <= mode <= frames - length:
            raise InputError(f"style clip start {mode} is out of range; pass 0..{frames - length} for {frames} frames")
        start = mode
    else:
        raise InputError(f"style clip mode {mode!r} is unknown; pass 'middle', 'random' or a start index")
    return exp[start:start + length].clone(), torch.zeros(length, dtype=torch.bool)


def read_frames(path: str | Path) -> list[np.ndarray]:
    """A video file, an image file or a folder of images (sorted by name) -> list of uint8 RGB frames."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"folder {path} has no images; pass a folder of .png/.jpg frames or a video")
        return [np.asarray(Image.open(p).convert("RGB")) for p in files]
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise InputError(f"image {path} does not exist; pass an existing image, folder or video")
        return [np.asarray(Image.open(path).convert("RGB"))]
    from ..media import read_video

    return list(read_video(path)[0])


def save_coefficients(path: str | Path, exp: torch.Tensor, coeff: torch.Tensor | None = None) -> Path:
    """Write in an official format: ``.npy``/``.txt`` hold (M, 64) expression, ``.mat`` holds ``coeff``.

    Without full coefficients (converted input), the ``.mat`` ``coeff`` carries the expression in its
    80:144 columns and zeros elsewhere, which is all the DiTalker loader reads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, exp.numpy())
    elif suffix == ".txt":
        np.savetxt(path, exp.numpy())
    elif suffix == ".mat":
        from scipy.io import savemat

        if coeff is None:
            coeff = exp.new_zeros(exp.shape[0], NUM_COEFFS)
            coeff[:, EXP_SLICE] = exp
        savemat(str(path), {"coeff": coeff.numpy()})
    else:
        raise InputError(f"output {path} has suffix {path.suffix!r}; pass a .npy, .txt or .mat path")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recon", default=None,
                        help=f"Deep3DFaceRecon {RECON_FILE} or its folder (default {DEFAULT_FOLDER}/)")
    parser.add_argument("--device", default="cpu", help="torch device for detection and regression")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per forward pass")


def run(args: argparse.Namespace) -> None:
    """INPUT: video, image, image folder, or a .mat/.txt/.npy to convert; --out: .npy, .txt or .mat."""
    source = Path(args.input)
    if source.suffix.lower() in COEFF_SUFFIXES:
        exp, coeff, note = load_expression(source), None, "converted"
    else:
        extractor = StyleExtractor.from_pretrained(args.recon, args.device, args.batch_size)
        result = extractor.extract(read_frames(source))
        exp, coeff, note = result.exp, result.coeff, f"{len(result.skipped)} frames without a face skipped"
    out = save_coefficients(args.out, exp, coeff)
    print(f"wrote {out}: {exp.shape[0]} frames x {exp.shape[1]} expression coefficients ({note})")
