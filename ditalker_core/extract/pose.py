"""DWPose video for the Pose Adapter, from pose images, OpenPose keypoints or style frames.

What the adapter expects (official ``PoseGuider`` and data code): for a video of F frames at
H x W the pose input is (B, 3, F, H/2, W/2). Its convolutions divide space by 4 and time by 4
(kernel 2 stride 2, kernel 2, kernel 3 stride 2), landing on the MagViT latent grid
(F/4, H/8, W/8): EasyAnimateV3's slice VAE is 8x spatial and turns every 8 frames into 2 latent
frames, so F is a multiple of 8. Training resized every DWPose frame to 256 x 256 for 512 x 512
clips (stretching, not cropping) and the official ``infer.py`` does the same, so that is what
happens here. Frames here are float in [0, 1], laid out (3, T, h, w): add the batch axis and
they are the adapter's input. Note: the training loader normalised them to [-1, 1] while the
official inference script feeds [0, 1]; the model side picks the range.

Three sources, one output:
  (a) pose images a DWPose preprocessor already drew (ComfyUI IMAGE (N, H, W, 3)): resized;
  (b) POSE_KEYPOINT / OpenPose JSON (comfyui_controlnet_aux's format): drawn by ``pose_render``;
  (c) style frames: DWPose (YOLOX + RTMPose whole-body, local ONNX files via rtmlib), then (b).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, MissingModelError
from ..media import read_video, write_video
from .pose_render import FaceMode, Person, PoseFrame, render_pose

POSE_DOWNSCALE = 2
DWPOSE_FOLDER = Path("models/ditalker/dwpose")
DET_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
DWPOSE_SOURCE = "https://huggingface.co/yzd-v/DWPose (yolox_l.onnx, dw-ll_ucoco_384.onnx)"
# comfyui_controlnet_aux downloads the same two files here (relative to the ComfyUI root).
CONTROLNET_AUX_FOLDER = Path("custom_nodes/comfyui_controlnet_aux/ckpts/yzd-v/DWPose")
DWPOSE_FOLDERS = (DWPOSE_FOLDER, CONTROLNET_AUX_FOLDER)
_RESIZE_CHUNK = 16


def pose_size(video_height: int, video_width: int) -> tuple[int, int]:
    """Pose frame size for a generated video of this size: half of it, i.e. latent size x 4."""
    if video_height % 8 or video_width % 8:
        raise InputError(
            f"video size {video_height}x{video_width} is not a multiple of 8; the VAE needs multiples of 8 (use 512x512)"
        )
    return video_height // POSE_DOWNSCALE, video_width // POSE_DOWNSCALE


def frame_indices(available: int, wanted: int | None) -> np.ndarray:
    """Which source frames make ``wanted`` frames: cut when longer, played back and forth when shorter.

    Going back and forth keeps the head motion continuous when a short style clip drives long audio.
    """
    if available < 1:
        raise InputError("the pose source has no frames; pass at least one frame")
    wanted = available if wanted is None else wanted
    if wanted < 1:
        raise InputError(f"num_frames is {wanted}; pass a positive frame count")
    if available == 1:
        return np.zeros(wanted, dtype=np.int64)
    period = 2 * (available - 1)
    phase = np.arange(wanted) % period
    return np.where(phase < available, phase, period - phase)


def retime_indices(count: int, source_fps: float, target_fps: float) -> np.ndarray:
    """Frames of a ``source_fps`` clip to show at ``target_fps`` with the same duration (nearest earlier frame)."""
    if source_fps <= 0 or target_fps <= 0:
        raise InputError(f"frame rates {source_fps} -> {target_fps} must be positive")
    wanted = max(1, round(count * target_fps / source_fps))
    return np.minimum((np.arange(wanted) * source_fps / target_fps + 1e-6).astype(np.int64), count - 1)


def look_like_renderings(frames: torch.Tensor, dark: float = 0.1, share: float = 0.5) -> bool:
    """Whether (N, H, W, C) images in [0, 1] look like DWPose renderings: limbs drawn on a black background, so
    most pixels are dark. Video frames wired in by mistake are not."""
    brightest = frames[..., :3].float().amax(dim=-1)
    return bool((brightest < dark).float().mean() >= share)


def adapter_frames(images: Any, video_size: tuple[int, int], num_frames: int | None = None) -> torch.Tensor:
    """Drawn pose images -> the adapter's frames, float32 (3, T, H/2, W/2) in [0, 1].

    ``images`` is (N, H, W, 3) (or one (H, W, 3) image): a ComfyUI IMAGE tensor in [0, 1], a float
    array in [0, 1] or a uint8 array. Frames are resized in chunks so long clips stay small in memory.
    """
    frames = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise InputError(f"pose images have shape {tuple(frames.shape)}; pass (N, H, W, 3) RGB images")
    height, width = pose_size(*video_size)
    order = torch.from_numpy(frame_indices(len(frames), num_frames))
    out = torch.empty(3, len(order), height, width, dtype=torch.float32)
    for start in range(0, len(order), _RESIZE_CHUNK):
        chunk = frames[order[start:start + _RESIZE_CHUNK], ..., :3].cpu()
        chunk = chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk.float()
        chunk = chunk.permute(0, 3, 1, 2)
        if chunk.shape[-2:] != (height, width):
            chunk = F.interpolate(chunk, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        out[:, start:start + len(chunk)] = chunk.clamp(0.0, 1.0).transpose(0, 1)
    return out


def _points(values: Sequence[float] | None, count: int, scale: tuple[float, float]) -> np.ndarray:
    points = np.zeros((count, 3), dtype=np.float32)
    if values:
        flat = np.asarray(values, dtype=np.float32).reshape(-1, 3)[:count]
        points[: len(flat)] = flat
        points[:, :2] *= scale
    return points


def _is_normalised(people: list[dict]) -> bool:
    """OpenPose JSON may hold pixels or [0, 1] fractions of the canvas; tell them apart by range."""
    coords = [
        np.asarray(person[key], dtype=np.float32).reshape(-1, 3)
        for person in people
        for key in ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")
        if person.get(key)
    ]
    seen = np.concatenate(coords) if coords else np.zeros((0, 3), dtype=np.float32)
    seen = seen[seen[:, 2] > 0, :2]
    return len(seen) > 0 and bool(np.all(np.abs(seen) <= 1.0))


def parse_pose_keypoints(data: dict | list[dict]) -> list[PoseFrame]:
    """POSE_KEYPOINT (a list with one OpenPose JSON dict per frame) or one such dict -> PoseFrames.

    Each dict is ``{"people": [{"pose_keypoints_2d": [x, y, c] * 18, "face_keypoints_2d": 68 or 70
    points, "hand_left_keypoints_2d": 21, "hand_right_keypoints_2d": 21}], "canvas_width", "canvas_height"}``.
    """
    frames = [data] if isinstance(data, dict) else list(data)
    if not frames:
        raise InputError("POSE_KEYPOINT is empty; pass the keypoints of at least one frame")
    poses = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "canvas_width" not in frame or "canvas_height" not in frame:
            raise InputError(
                f"pose keypoints frame {i} is not an OpenPose JSON dict with canvas_width/canvas_height; "
                "pass the POSE_KEYPOINT output of a DWPose/OpenPose preprocessor"
            )
        width, height = int(frame["canvas_width"]), int(frame["canvas_height"])
        people = frame.get("people") or []
        scale = (float(width), float(height)) if _is_normalised(people) else (1.0, 1.0)
        poses.append(PoseFrame(
            people=[
                Person(
                    body=_points(person.get("pose_keypoints_2d"), 18, scale),
                    face=_points(person.get("face_keypoints_2d"), 68, scale),
                    left_hand=_points(person.get("hand_left_keypoints_2d"), 21, scale),
                    right_hand=_points(person.get("hand_right_keypoints_2d"), 21, scale),
                )
                for person in people
            ],
            height=height,
            width=width,
        ))
    return poses


def render_keypoints(poses: Sequence[PoseFrame], video_size: tuple[int, int], face: FaceMode = "contour") -> np.ndarray:
    """Draw at the video size (as the 512 px training pose videos were drawn) -> uint8 (N, H, W, 3)."""
    height, width = video_size
    return np.stack([render_pose(pose, height, width, face) for pose in poses])


def keypoints_to_frames(
    data: dict | list[dict],
    video_size: tuple[int, int],
    num_frames: int | None = None,
    face: FaceMode = "contour",
) -> torch.Tensor:
    """Route (b): POSE_KEYPOINT / OpenPose JSON -> adapter frames (3, T, H/2, W/2)."""
    poses = parse_pose_keypoints(data)
    poses = [poses[i] for i in frame_indices(len(poses), num_frames)]
    return adapter_frames(render_keypoints(poses, video_size, face), video_size)


def find_dwpose(
    folders: Sequence[str | Path] = DWPOSE_FOLDERS,
    det: str | Path | None = None,
    pose: str | Path | None = None,
) -> tuple[Path, Path]:
    """Locate the YOLOX detector and the DWPose whole-body ONNX files (explicit paths win over folders).

    The error names the first folder (``models/ditalker/dwpose`` by default) as the place to put them.
    """
    found = []
    for explicit, name, what in ((det, DET_FILE, "DWPose person detector"), (pose, POSE_FILE, "DWPose whole-body model")):
        candidates = [Path(explicit)] if explicit else [Path(folder) / name for folder in folders]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            folder = candidates[0].parent if explicit else folders[0]
            raise MissingModelError(f"{what} ({name})", candidates, folder, DWPOSE_SOURCE)
        found.append(path)
    return found[0], found[1]


def _input_hw(session: Any) -> tuple[int, int] | None:
    """(H, W) of an ONNX model's image input, or None when the graph leaves it dynamic."""
    shape = session.get_inputs()[0].shape
    return (shape[2], shape[3]) if all(isinstance(s, int) for s in shape[2:4]) else None


class DWPose:
    """DWPose (YOLOX person boxes + RTMPose whole-body) through rtmlib on onnxruntime, local files only.

    Frames go in as RGB, as DWPose's ControlNet annotator fed them. Like that annotator, only COCO
    class 0 (person) boxes scoring above 0.3 after NMS at 0.45 are kept: DWPose's yolox_l.onnx is the
    80-class COCO detector (exported without NMS), and rtmlib's "human" mode would keep every class.
    Every detected person is drawn; with no person box RTMPose looks at the whole frame.
    """

    def __init__(self, det: str | Path, pose: str | Path, device: str = "cpu"):
        det, pose = find_dwpose((), det, pose)
        try:
            from rtmlib import RTMPose, YOLOX
        except ImportError as exc:
            raise ImportError("DWPose needs rtmlib>=0.0.16 and onnxruntime: pip install rtmlib onnxruntime") from exc
        self.detector = YOLOX(str(det), det_mode="multiclass", nms_thr=0.45, score_thr=0.3,
                              backend="onnxruntime", device=device)
        self.estimator = RTMPose(str(pose), to_openpose=True, backend="onnxruntime", device=device)
        # rtmlib assumes the stock input sizes; take the real ones from the graphs (det: (H, W), pose: (W, H)).
        det_hw, pose_hw = _input_hw(self.detector.session), _input_hw(self.estimator.session)
        if det_hw:
            self.detector.model_input_size = det_hw
        if pose_hw:
            self.estimator.model_input_size = pose_hw[::-1]

    def __call__(self, frame: np.ndarray) -> PoseFrame:
        """uint8 (H, W, 3) RGB -> everyone's OpenPose-134 keypoints (body, feet, face, left, right hand)."""
        frame = np.ascontiguousarray(frame)
        boxes, classes = self.detector(frame)
        keypoints, scores = self.estimator(frame, bboxes=list(boxes[classes == 0]))
        points = np.concatenate([keypoints, scores[..., None]], axis=-1).astype(np.float32)
        people = [
            Person(body=p[:18], face=p[24:92], left_hand=p[92:113], right_hand=p[113:134]) for p in points
        ]
        return PoseFrame(people=people, height=frame.shape[0], width=frame.shape[1])


def detect_to_frames(
    frames: np.ndarray,
    detector: DWPose,
    video_size: tuple[int, int],
    num_frames: int | None = None,
    face: FaceMode = "contour",
) -> torch.Tensor:
    """Route (c): style frames uint8 (N, H, W, 3) RGB -> DWPose -> adapter frames (3, T, H/2, W/2)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"style frames have shape {frames.shape} and dtype {frames.dtype}; pass uint8 (N, H, W, 3) RGB")
    order = frame_indices(len(frames), num_frames)
    detected = {i: detector(frames[i]) for i in np.unique(order)}
    return adapter_frames(render_keypoints([detected[i] for i in order], video_size, face), video_size)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=512, help="width of the video to generate (pose frames are half)")
    parser.add_argument("--height", type=int, default=512, help="height of the video to generate")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the pose video; videos are retimed to it")
    parser.add_argument("--frames", type=int, default=None, help="frame count: cut, or played back and forth if short")
    parser.add_argument("--face", choices=("contour", "full", "none"), default="contour",
                        help="face landmarks to draw; the paper keeps only the jaw line (contour)")
    parser.add_argument("--rendered", action="store_true", help="INPUT is already a DWPose video: only resize it")
    parser.add_argument("--det", default=None, help=f"YOLOX ONNX file (default {DWPOSE_FOLDER / DET_FILE})")
    parser.add_argument("--pose", default=None, help=f"DWPose ONNX file (default {DWPOSE_FOLDER / POSE_FILE})")
    parser.add_argument("--device", default="cpu", help="onnxruntime device for DWPose: cpu or cuda")


def run(args: argparse.Namespace) -> None:
    """INPUT is a style video, a DWPose video (--rendered) or an OpenPose/POSE_KEYPOINT .json file."""
    video_size = (args.height, args.width)
    source = Path(args.input)
    if source.suffix.lower() == ".json":
        frames = keypoints_to_frames(json.loads(source.read_text()), video_size, args.frames, args.face)
    else:
        images, fps = read_video(source)
        images = images[retime_indices(len(images), fps, args.fps)]
        if args.rendered:
            frames = adapter_frames(images, video_size, args.frames)
        else:
            detector = DWPose(*find_dwpose(DWPOSE_FOLDERS, args.det, args.pose), device=args.device)
            frames = detect_to_frames(images, detector, video_size, args.frames, args.face)
    pixels = (frames.permute(1, 2, 3, 0) * 255.0).round().to(torch.uint8).numpy()
    write_video(args.out, pixels, args.fps)
