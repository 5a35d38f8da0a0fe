"""Face detection with 5 landmarks (MTCNN) and the Deep3DFaceRecon 224x224 alignment.

The 3DMM regressor was trained on crops made by Deep3DFaceRecon_pytorch's ``align_img`` from MTCNN
points, so both steps are reproduced here exactly: any other detector or crop shifts the
predicted expression coefficients.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

# Deep3DFaceRecon's 5-point 3D template: the BFM ``similarity_Lm3D_all.mat`` 68-point mean reduced to
# (eye centre left, eye centre right, nose tip, mouth corner left, mouth corner right), as its load_lm3d does.
LM3D_STD = np.array(
    [
        [-0.31148657, 0.29036078, 0.13377953],
        [0.30979887, 0.28972036, 0.13179526],
        [0.00325350, -0.04617932, 0.55244243],
        [-0.25216928, -0.38133916, 0.22405732],
        [0.24846620, -0.38128236, 0.22235769],
    ],
    dtype=np.float64,
)
ALIGN_SIZE = 224
ALIGN_RESCALE = 102.0


def as_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Frames in any of the usual layouts -> uint8 RGB (N, H, W, 3).

    Accepts uint8 arrays, float arrays/tensors in [0, 1] (ComfyUI IMAGE is float (N, H, W, 3)),
    channel-first (N, 3, H, W) tensors or a single (H, W, 3) image.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.float().numpy() if frames.is_floating_point() else frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim == 4 and frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames have shape {frames.shape}; pass RGB images as (N, H, W, 3) or (N, 3, H, W)")
    if frames.dtype == np.uint8:
        return frames
    if frames.dtype.kind == "f":
        return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise InputError(f"frames have dtype {frames.dtype}; pass uint8 [0, 255] or float [0, 1] images")


def as_frame_list(frames: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Frames -> list of uint8 (H, W, 3); a list may mix image sizes (e.g. a folder of photos)."""
    if isinstance(frames, (list, tuple)):
        return [as_uint8_frames(frame)[0] for frame in frames]
    return list(as_uint8_frames(frames))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy IoU non-maximum suppression per group, same contract as ``torchvision.ops.batched_nms``.

    Boxes are (x1, y1, x2, y2); returns kept indices by decreasing score. Groups are separated by
    offsetting each group's boxes so that boxes of different groups never overlap.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    shifted = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
    order = torch.argsort(scores, descending=True)
    x1, y1, x2, y2 = shifted[order].unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    remaining = torch.arange(order.numel(), device=boxes.device)
    keep = []
    while remaining.numel() > 0:
        best, rest = remaining[0], remaining[1:]
        keep.append(best)
        inter_w = (torch.minimum(x2[rest], x2[best]) - torch.maximum(x1[rest], x1[best])).clamp(min=0)
        inter_h = (torch.minimum(y2[rest], y2[best]) - torch.maximum(y1[rest], y1[best])).clamp(min=0)
        inter = inter_w * inter_h
        iou = inter / (areas[best] + areas[rest] - inter)
        remaining = rest[iou <= iou_threshold]
    return order[torch.stack(keep)]


@functools.cache
def _mtcnn_class() -> type:
    """Import facenet-pytorch's MTCNN, giving it a pure-torch ``batched_nms`` when torchvision is absent.

    facenet-pytorch imports torchvision only for ``batched_nms`` (and ``to_tensor`` in a helper we do not
    call). torchvision wheels are tied to one torch build, so instead of requiring it, placeholder
    modules exist only while facenet-pytorch is imported and are removed right after, so other
    libraries still see torchvision as not installed.
    """
    if importlib.util.find_spec("facenet_pytorch") is None:
        raise ImportError("face detection needs facenet-pytorch: pip install --no-deps facenet-pytorch")
    if importlib.util.find_spec("torchvision") is not None:
        from facenet_pytorch import MTCNN

        return MTCNN
    names = ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms",
             "torchvision.transforms.functional")
    placeholders = {name: types.ModuleType(name) for name in names}
    placeholders["torchvision.ops.boxes"].batched_nms = batched_nms
    sys.modules.update(placeholders)
    try:
        from facenet_pytorch import MTCNN
    finally:
        for name, module in placeholders.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return MTCNN


@dataclass
class FaceDetection:
    """One face: box (x1, y1, x2, y2), MTCNN probability and 5 points in pixels (x right, y down).

    Points are ordered left eye, right eye, nose tip, left mouth corner, right mouth corner, where
    left means the image's left.
    """

    box: np.ndarray
    prob: float
    points: np.ndarray


class FaceDetector:
    """MTCNN with its shipped P/R/O-net weights; keeps the largest face of each frame."""

    def __init__(self, device: str | torch.device = "cpu", min_face_size: int = 20, batch_size: int = 16):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.mtcnn = _mtcnn_class()(min_face_size=min_face_size, select_largest=True, keep_all=True,
                                    device=self.device).eval()

    def detect(self, frames: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> list[FaceDetection | None]:
        """Largest face of each frame, or None where MTCNN finds no face.

        A list of differently sized images is accepted: MTCNN batches only equal sizes, so consecutive
        frames of one size go together.
        """
        images = as_frame_list(frames)
        results: list[FaceDetection | None] = []
        start = 0
        while start < len(images):
            stop = start + 1
            while stop < len(images) and stop - start < self.batch_size and images[stop].shape == images[start].shape:
                stop += 1
            boxes, probs, points = self.mtcnn.detect(np.stack(images[start:stop]), landmarks=True)
            for box, prob, point in zip(boxes, probs, points):
                if box is None:
                    results.append(None)
                else:
                    results.append(FaceDetection(np.asarray(box[0], np.float64), float(prob[0]),
                                                 np.asarray(point[0], np.float64)))
            start = stop
        return results


def _similarity_pos(points_up: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares weak-perspective fit of the 3D template onto the 2D points -> (translation, scale).

    Mirrors Deep3DFaceRecon's ``POS``: an affine 2x4 projection is solved, its two rotation rows'
    norms give the scale and the last column the translation.
    """
    n = points_up.shape[0]
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = template
    a[0::2, 3] = 1
    a[1::2, 4:7] = template
    a[1::2, 7] = 1
    b = points_up.reshape(2 * n)
    k = np.linalg.lstsq(a, b, rcond=None)[0]
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(scale)


def align_face(image: np.ndarray, points: np.ndarray, size: int = ALIGN_SIZE,
               rescale: float = ALIGN_RESCALE) -> tuple[np.ndarray, np.ndarray]:
    """Crop one face the way Deep3DFaceRecon's ``align_img`` does -> (uint8 (size, size, 3), params).

    The whole image is resized by a similarity scale (bicubic) so the face matches the template, then
    a ``size`` square centred on the fitted translation is cut (outside the image is black).
    ``params`` is (W, H, scale, tx, ty) as that code returns, ty in y-up coordinates.
    """
    h0, w0 = image.shape[:2]
    points_up = np.asarray(points, np.float64).copy()
    points_up[:, 1] = h0 - 1 - points_up[:, 1]  # the fit works in y-up coordinates
    t, s = _similarity_pos(points_up, LM3D_STD)
    s = rescale / s
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - size / 2 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - size / 2 + (h0 / 2 - t[1]) * s)
    resized = Image.fromarray(image).resize((w, h), resample=Image.Resampling.BICUBIC)
    crop = resized.crop((left, up, left + size, up + size))
    return np.array(crop), np.array([w0, h0, s, t[0], t[1]])
