"""Any audio length: the model takes clips of a fixed number of frames, so long audio is generated in
overlapping windows. Each window after the first continues the previous one: the shared frames are given to the
inpaint branch as known frames and their latents are pinned to the previous window's, so the windows stitch into
one latent sequence that is decoded as a whole. (``SamplingOptions(seams="crossfade")``: the shared latents are
denoised again and cross-faded when stitched; the README compares the two, measured.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import InputError

STRIDE = 8  # frames: 2 latents = one VAE decoder chunk


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    known: int  # leading frames taken from the previous window (0 for the first)


def check_overlap(overlap: int, window: Optional[int] = None) -> None:
    """The one overlap rule (the sampler node checks it at /prompt, before the model's window is known)."""
    if overlap < 0 or overlap % STRIDE or (window is not None and overlap >= window):
        below = f" and below the model's clip of {window} frames" if window is not None else ""
        raise InputError(f"overlap is {overlap}: it must be a multiple of {STRIDE} (0, 8, 16, ...){below}, so "
                         f"consecutive windows share whole latents")


def plan_windows(num_frames: int, window: int, overlap: int) -> list[Window]:
    """Windows of ``window`` frames every ``window - overlap`` frames until ``num_frames`` are covered.

    Window and overlap are multiples of ``STRIDE`` (8 frames = 2 latents = one VAE decoder chunk), so a window's
    known frames are whole latents of the previous window and the stitched latent sequence keeps the VAE's
    even-length chunking. The last window may run past the end: its conditions are padded and its extra frames
    dropped.
    """
    if num_frames < 1:
        raise ValueError("nothing to generate: the audio gives 0 video frames")
    if window % STRIDE:
        raise ValueError(f"window ({window}) must be a multiple of {STRIDE}")
    check_overlap(overlap, window)
    windows = [Window(0, window, 0)]
    while windows[-1].end < num_frames:
        start = windows[-1].end - overlap
        windows.append(Window(start, start + window, overlap))
    return windows
