"""Procedural portrait identities and the renderer that draws one frame of them.

A face is drawn in unit coordinates on a canvas 4x the output size (then box-filtered down, so edges are
anti-aliased): background, shoulders and neck, then a head layer (back hair, ears, face, eyes with lids, brows,
nose, mouth with lips, fringe) that yaw and pitch shift and roll rotates about the neck. The same geometry gives
the DWPose keypoints (OpenPose body points and the 68-point jaw line) and the eye/face/lip masks of the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ditalker_core.extract.pose_render import Person, PoseFrame

from .tracks import EXPRESSION_NAMES

SUPERSAMPLE = 4
_SKINS = ((255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 86), (141, 85, 54), (92, 58, 38))
_HAIRS = ((20, 16, 14), (60, 40, 25), (110, 75, 40), (170, 130, 70), (220, 200, 140), (120, 120, 125),
          (150, 40, 30))
_EYES = ((60, 40, 25), (40, 90, 140), (60, 110, 60), (90, 70, 50), (30, 30, 35))
HAIR_STYLES = ("short", "long", "fringe", "bald")
_NECK = (0.5, 0.86)  # roll pivot


def _jitter(rng: np.random.Generator, color: tuple[int, ...], amount: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in color)  # type: ignore[return-value]


@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic person look like themselves."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    eyes: tuple[int, int, int]
    lips: tuple[int, int, int]
    background: tuple[int, int, int]
    background_bottom: tuple[int, int, int]
    shirt: tuple[int, int, int]
    face_width: float
    face_height: float
    eye_spacing: float
    eye_size: float
    brow_thickness: float
    mouth_width: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Identity":
        skin = _jitter(rng, _SKINS[rng.integers(len(_SKINS))], 10)
        lips = tuple(int(c) for c in np.clip(np.array(skin) * [0.85, 0.55, 0.55] + [30, 0, 10], 0, 255))
        background = tuple(int(c) for c in rng.integers(30, 230, 3))
        return cls(skin=skin, hair=_jitter(rng, _HAIRS[rng.integers(len(_HAIRS))], 12),
                   hair_style=str(rng.choice(HAIR_STYLES)), eyes=_jitter(rng, _EYES[rng.integers(len(_EYES))], 10),
                   lips=lips, background=background,  # type: ignore[arg-type]
                   background_bottom=tuple(int(np.clip(c + rng.integers(-60, 61), 0, 255)) for c in background),
                   shirt=tuple(int(c) for c in rng.integers(20, 235, 3)),  # type: ignore[arg-type]
                   face_width=float(rng.uniform(0.27, 0.33)), face_height=float(rng.uniform(0.36, 0.41)),
                   eye_spacing=float(rng.uniform(0.36, 0.44)), eye_size=float(rng.uniform(0.85, 1.15)),
                   brow_thickness=float(rng.uniform(0.018, 0.03)), mouth_width=float(rng.uniform(0.1, 0.13)))


@dataclass
class Frame:
    image: np.ndarray  # (size, size, 3) uint8
    pose: PoseFrame  # DWPose keypoints in pixels of the output size
    eye_mask: np.ndarray  # (size, size) bool
    face_mask: np.ndarray
    lip_mask: np.ndarray  # (size, size) bool


class _Canvas:
    """Unit coordinates -> supersampled pixels."""

    def __init__(self, image: Image.Image):
        self.image, self.draw, self.scale = image, ImageDraw.Draw(image), image.width

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill) -> None:
        s = self.scale
        self.draw.ellipse(((cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s), fill=fill)

    def polygon(self, points: list[tuple[float, float]], fill=None, outline=None, width: float = 0) -> None:
        s = self.scale
        pts = [(x * s, y * s) for x, y in points]
        self.draw.polygon(pts, fill=fill)
        if outline is not None:
            self.draw.line(pts + pts[:1], fill=outline, width=max(1, int(width * s)), joint="curve")

    def line(self, points: list[tuple[float, float]], fill, width: float) -> None:
        s = self.scale
        self.draw.line([(x * s, y * s) for x, y in points], fill=fill, width=max(1, int(width * s)), joint="curve")


def _rotate_point(x: float, y: float, degrees: float) -> tuple[float, float]:
    """Rotate (x, y) about the neck as PIL's ``Image.rotate(degrees)`` turns the picture (counter-clockwise)."""
    a = math.radians(degrees)
    dx, dy = x - _NECK[0], y - _NECK[1]
    return _NECK[0] + dx * math.cos(a) + dy * math.sin(a), _NECK[1] - dx * math.sin(a) + dy * math.cos(a)


def render(identity: Identity, expression: np.ndarray, pose: np.ndarray, size: int = 64) -> Frame:
    """One frame: ``expression`` holds the ``EXPRESSION_NAMES`` values, ``pose`` yaw/pitch/roll in degrees."""
    e = dict(zip(EXPRESSION_NAMES, map(float, expression)))
    yaw, pitch, roll = (math.radians(float(v)) for v in pose)
    big = size * SUPERSAMPLE
    rx, ry = identity.face_width, identity.face_height
    cx, cy = 0.5, 0.47
    fx, fy = cx + 0.9 * rx * math.sin(yaw), cy + 0.7 * ry * math.sin(pitch)  # interior features
    ox = cx + 0.3 * rx * math.sin(yaw)  # outline

    # Background and shoulders (they do not roll with the head).
    column = np.linspace(0, 1, big)[:, None, None]
    top, bottom = np.array(identity.background, float), np.array(identity.background_bottom, float)
    base = Image.fromarray(np.broadcast_to(top + column * (bottom - top), (big, big, 3)).astype(np.uint8))
    body = _Canvas(base)
    body.ellipse(0.5, 1.12, 0.46, 0.24, identity.shirt)
    body.polygon([(0.43, 0.7), (0.57, 0.7), (0.58, 0.92), (0.42, 0.92)], fill=tuple(int(c * 0.85)
                                                                               for c in identity.skin))

    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    head = _Canvas(layer)
    if identity.hair_style == "long":
        head.ellipse(ox, cy + 0.02, rx * 1.18, ry * 1.12, identity.hair)
    for side in (-1, 1):  # ears
        head.ellipse(ox + side * rx * 0.98, cy + 0.02, 0.045, 0.07, identity.skin)
    head.ellipse(ox, cy, rx, ry, identity.skin)
    if identity.hair_style != "bald":
        head.polygon([(ox + rx * math.cos(a), cy - 0.02 + ry * 1.05 * math.sin(a))
                      for a in np.linspace(math.pi * 1.02, math.pi * 1.98, 24)]
                     + [(ox + rx * 0.9, cy - ry * 0.55), (ox - rx * 0.9, cy - ry * 0.55)], fill=identity.hair)
    if identity.hair_style == "fringe":
        head.polygon([(fx - rx * 0.85, cy - ry * 0.6), (fx + rx * 0.85, cy - ry * 0.6),
                      (fx + rx * 0.5, cy - ry * 0.38), (fx - rx * 0.6, cy - ry * 0.42)], fill=identity.hair)

    eye_y, eye_w = fy - 0.05, 0.062 * identity.eye_size
    eye_h = 0.042 * identity.eye_size * float(np.clip(e["eye_open"], 0.0, 1.6))
    eye_boxes = []
    for side in (-1, 1):
        ex = fx + side * identity.eye_spacing * rx * 1.0
        width = eye_w * (1 - 0.25 * side * math.sin(yaw))  # the far eye looks narrower
        eye_boxes.append((ex, eye_y, width))
        if eye_h > 0.004:
            head.ellipse(ex, eye_y, width, eye_h, (245, 245, 240))
            head.ellipse(ex + 0.3 * width * math.sin(yaw), eye_y, 0.026 * identity.eye_size, min(eye_h, 0.026),
                         identity.eyes)
        head.line([(ex - width, eye_y), (ex + width, eye_y)] if eye_h <= 0.004 else
                  [(ex - width, eye_y - 0.3 * eye_h), (ex, eye_y - eye_h), (ex + width, eye_y - 0.3 * eye_h)],
                  tuple(int(c * 0.6) for c in identity.skin), 0.008)
        brow_y = eye_y - 0.075 - 0.045 * e["brow_raise"]
        inner = (ex - side * 0.9 * width, brow_y - 0.035 * e["brow_inner"])
        outer = (ex + side * 1.1 * width, brow_y + 0.01)
        head.line([inner, (ex, brow_y - 0.012), outer], tuple(int(c * 0.7) for c in identity.hair),
                  identity.brow_thickness)

    nose = tuple(int(c * 0.82) for c in identity.skin)
    head.polygon([(fx, fy + 0.0), (fx - 0.03, fy + 0.09), (fx + 0.03, fy + 0.09)], fill=nose)

    mx, my = fx, fy + 0.2
    half_w = identity.mouth_width * e["mouth_width"]
    opening = 0.13 * max(e["mouth_open"], 0.0)
    xs = np.linspace(-1, 1, 19)
    curve = np.sqrt(1 - xs**2)
    lift = 0.05 * e["corner_lift"] * xs**2
    upper = [(mx + half_w * x, my - (opening / 2 + 0.018 * e["upper_lip"]) * c - l + 0.02 * e["corner_lift"] * 0.5)
             for x, c, l in zip(xs, curve, lift)]
    lower = [(mx + half_w * x, my + opening / 2 * c - l + 0.02 * e["corner_lift"] * 0.5)
             for x, c, l in zip(xs[::-1], curve[::-1], lift[::-1])]
    head.polygon(upper + lower, fill=(70, 20, 30), outline=identity.lips, width=0.022)

    masks = Image.new("L", (big, big), 0)
    mask = _Canvas(masks)
    for ex, ey, width in eye_boxes:
        mask.ellipse(ex, ey - 0.03, width * 1.5, 0.085, 255)
    face = Image.new("L", (big, big), 0)
    _Canvas(face).ellipse(ox, cy, rx, ry, 255)
    lips = Image.new("L", (big, big), 0)
    _Canvas(lips).ellipse(mx, my, half_w * 1.35, 0.1, 255)

    degrees = math.degrees(roll)
    pivot = (_NECK[0] * big, _NECK[1] * big)
    layer = layer.rotate(degrees, resample=Image.BICUBIC, center=pivot)
    base.paste(layer, (0, 0), layer)
    image = np.asarray(base.resize((size, size), Image.BOX))
    eye_mask = np.asarray(masks.rotate(degrees, center=pivot).resize((size, size), Image.BOX)) > 127
    face_mask = np.asarray(face.rotate(degrees, center=pivot).resize((size, size), Image.BOX)) > 127
    lip_mask = np.asarray(lips.rotate(degrees, center=pivot).resize((size, size), Image.BOX)) > 127

    def point(x: float, y: float) -> list[float]:
        px, py = _rotate_point(x, y, degrees)
        return [px * size, py * size, 1.0]

    person = Person()
    person.body[0] = point(fx, fy + 0.06)  # nose
    person.body[1] = [_NECK[0] * size, 0.92 * size, 1.0]  # neck
    person.body[2] = [0.2 * size, 0.97 * size, 1.0]  # right shoulder (image left)
    person.body[5] = [0.8 * size, 0.97 * size, 1.0]
    person.body[14] = point(eye_boxes[0][0], eye_y)  # right eye
    person.body[15] = point(eye_boxes[1][0], eye_y)
    person.body[16] = point(ox - rx * 0.98, cy + 0.02)  # right ear
    person.body[17] = point(ox + rx * 0.98, cy + 0.02)
    for i, angle in enumerate(np.linspace(math.pi, 0, 17)):  # iBUG jaw line 0-16: right ear, chin, left ear
        person.face[i] = point(ox + rx * math.cos(angle), cy + ry * math.sin(angle) * 0.98)
    return Frame(image=image, pose=PoseFrame([person], size, size), eye_mask=eye_mask, face_mask=face_mask,
                 lip_mask=lip_mask)
