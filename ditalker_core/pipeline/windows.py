"""Any audio length: the model takes clips of a fixed number of frames, so long audio is generated in
overlapping windows. Each window after the first continues the previous one: the shared frames are given to the
inpaint branch as known frames and their latents are pinned to the previous window's, so the windows stitch into
one latent sequence that is decoded as a whole."""

from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class Window:
    start: int
    end: int
    known: int  # leading frames taken from the previous window (0 for the first)


def plan_windows(num_frames: int, window: int, overlap: int, stride: int = 8) -> list[Window]:
    """Windows of ``window`` frames every ``window - overlap`` frames until ``num_frames`` are covered.

    Window and overlap are multiples of ``stride`` (8 frames = 2 latents = one VAE decoder chunk), so a window's
    known frames are whole latents of the previous window and the stitched latent sequence keeps the VAE's
    even-length chunking. The last window may run past the end: its conditions are padded and its extra frames
    dropped.
    """
    if num_frames < 1:
        raise ValueError("nothing to generate: the audio gives 0 video frames")
    if window % stride or not 0 <= overlap < window or overlap % stride:
        raise ValueError(f"window ({window}) and overlap ({overlap}) must be multiples of {stride} "
                         f"with 0 <= overlap < window")
    windows = [Window(0, window, 0)]
    while windows[-1].end < num_frames:
        start = windows[-1].end - overlap
        windows.append(Window(start, start + window, overlap))
    return windows
