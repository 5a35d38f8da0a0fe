"""Classifier-free guidance over DiTalker's three conditions.

Conditions are grouped as the paper controls them: ``audio`` (Whisper features), ``style`` (3DMM style clip,
phoneme windows, DWPose video) and ``emotion`` (the emotion prompt and the CLIP reference). Guidance is
cumulative: ``eps = e0 + w_a (e_a - e0) + w_s (e_as - e_a) + w_e (e_ase - e_as)``, where ``e0`` sees no condition
(the official unconditional branch) and each next branch adds one group. With equal weights this telescopes to the
official single-scale guidance ``e0 + w (e_ase - e0)``, which then needs only two branches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUPS = ("audio", "style", "emotion")


@dataclass(frozen=True)
class Guidance:
    """Guidance weights; the official preset is 7.0 for everything."""

    audio: float = 7.0
    style: float = 7.0
    emotion: float = 7.0

    @classmethod
    def single(cls, scale: float) -> "Guidance":
        return cls(scale, scale, scale)

    @property
    def is_single(self) -> bool:
        return self.audio == self.style == self.emotion

    @property
    def is_off(self) -> bool:
        return self.is_single and self.audio == 1.0

    def branches(self) -> list[frozenset[str]]:
        """The condition groups each batched branch sees, unconditional first."""
        if self.is_off:
            return [frozenset(GROUPS)]
        if self.is_single:
            return [frozenset(), frozenset(GROUPS)]
        return [frozenset(GROUPS[:i]) for i in range(len(GROUPS) + 1)]

    def combine(self, predictions: torch.Tensor) -> torch.Tensor:
        """(branches, B, ...) noise predictions, in ``branches()`` order -> guided (B, ...)."""
        if self.is_off:
            return predictions[0]
        if self.is_single:
            return predictions[0] + self.audio * (predictions[1] - predictions[0])
        e0, e_a, e_as, e_ase = predictions
        return e0 + self.audio * (e_a - e0) + self.style * (e_as - e_a) + self.emotion * (e_ase - e_as)
