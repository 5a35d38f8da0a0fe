"""Draw OpenPose-layout keypoints the way DWPose's annotator does.

The Pose Adapter was trained on videos drawn by DWPose's ``draw_pose``: limbs as filled ellipses
(4 px half-width) in the 17 OpenPose limb colours, the whole body layer dimmed to 60 %, joints as
radius-4 dots in the 18 joint colours, hand bones as 2 px lines coloured along the HSV hue circle
with blue (0, 0, 255) radius-4 joints, and face landmarks as white radius-3 dots. Drawing here
follows the same conventions so keypoints from any source produce the pictures the adapter knows.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

# OpenPose-18 limbs as (joint, joint) pairs, 0-based; DWPose draws the first 17 (not the ear-shoulder links).
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
HAND_BONES = tuple(
    (0 if j == 0 else 4 * finger + j, 4 * finger + j + 1) for finger in range(5) for j in range(4)
)
HAND_BONE_COLORS = tuple(
    tuple(round(c * 255) for c in colorsys.hsv_to_rgb(i / len(HAND_BONES), 1.0, 1.0))
    for i in range(len(HAND_BONES))
)
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)
# iBUG-68 points 0-16 are the jaw line; the rest (brows, nose, eyes, mouth) are the face interior.
FACE_CONTOUR = slice(0, 17)

LIMB_HALF_WIDTH = 4
BODY_JOINT_RADIUS = 4
HAND_JOINT_RADIUS = 4
HAND_BONE_WIDTH = 2
FACE_RADIUS = 3
BODY_LAYER_GAIN = 0.6

FaceMode = Literal["contour", "full", "none"]


def _empty(n: int) -> np.ndarray:
    return np.zeros((n, 3), dtype=np.float32)


@dataclass
class Person:
    """One person's keypoints in pixels of the frame they were found in: (K, 3) rows of (x, y, confidence).

    ``body`` is OpenPose-18 (nose, neck, right shoulder ...), ``face`` the 68 iBUG landmarks,
    hands the 21 OpenPose hand points. A point is drawn when its confidence exceeds the threshold.
    """

    body: np.ndarray = field(default_factory=lambda: _empty(18))
    face: np.ndarray = field(default_factory=lambda: _empty(68))
    left_hand: np.ndarray = field(default_factory=lambda: _empty(21))
    right_hand: np.ndarray = field(default_factory=lambda: _empty(21))


@dataclass
class PoseFrame:
    """The people found in one frame and the size of that frame (the keypoints' pixel space)."""

    people: list[Person]
    height: int
    width: int


def _dot(draw: ImageDraw.ImageDraw, x: float, y: float, radius: int, color: tuple[int, int, int]) -> None:
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)


def _limb_polygon(a: np.ndarray, b: np.ndarray, half_width: float) -> list[tuple[float, float]]:
    """Outline of the ellipse spanning a->b (cv2.ellipse2Poly's shape, at 10 degree steps)."""
    center = (a + b) / 2
    dx, dy = b - a
    half_length = math.hypot(dx, dy) / 2
    angle = math.atan2(dy, dx)
    cos, sin = math.cos(angle), math.sin(angle)
    points = []
    for step in range(36):
        t = math.radians(step * 10)
        u, v = half_length * math.cos(t), half_width * math.sin(t)
        points.append((center[0] + u * cos - v * sin, center[1] + u * sin + v * cos))
    return points


def render_pose(
    frame: PoseFrame,
    height: int,
    width: int,
    face: FaceMode = "contour",
    threshold: float = 0.3,
) -> np.ndarray:
    """Draw ``frame`` on a black (height, width) canvas -> uint8 (H, W, 3) RGB.

    Keypoints are scaled from the frame's size to the canvas, so a pose found in a 1080p video
    is drawn with the line widths DWPose used on the 512 px training videos when the canvas is
    512 px. ``face="contour"`` keeps only the jaw line: DiTalker removes the interior face points
    so that the style video's mouth cannot fight the audio-driven lips (paper, Sec. 3.1).
    """
    scale = np.array([width / frame.width, height / frame.height], dtype=np.float32)

    def visible(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return points[:, :2] * scale, points[:, 2] > threshold

    canvas = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(canvas)
    bodies = [visible(person.body) for person in frame.people]
    for (a, b), color in zip(BODY_LIMBS, BODY_COLORS):
        for xy, ok in bodies:
            if ok[a] and ok[b]:
                draw.polygon(_limb_polygon(xy[a], xy[b], LIMB_HALF_WIDTH), fill=color)
    # The limb layer is dimmed before joints are drawn on top, exactly as DWPose does.
    canvas = Image.fromarray((np.asarray(canvas) * BODY_LAYER_GAIN).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for xy, ok in bodies:
        for i in np.flatnonzero(ok):
            _dot(draw, *xy[i], BODY_JOINT_RADIUS, BODY_COLORS[i])

    for person in frame.people:
        for hand in (person.left_hand, person.right_hand):
            xy, ok = visible(hand)
            for (a, b), color in zip(HAND_BONES, HAND_BONE_COLORS):
                if ok[a] and ok[b]:
                    draw.line((*xy[a], *xy[b]), fill=color, width=HAND_BONE_WIDTH)
            for i in np.flatnonzero(ok):
                _dot(draw, *xy[i], HAND_JOINT_RADIUS, HAND_JOINT_COLOR)

    if face != "none":
        for person in frame.people:
            xy, ok = visible(person.face[:68])
            if face == "contour":
                xy, ok = xy[FACE_CONTOUR], ok[FACE_CONTOUR]
            for i in np.flatnonzero(ok):
                _dot(draw, *xy[i], FACE_RADIUS, FACE_COLOR)
    return np.asarray(canvas)
