"""From user inputs to what one model window takes: the reference frame, inpaint latents, condition slices."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..extract.phonemes import WINDOW, default_table


def output_size(height: int, width: int, resolution: int, multiple: int = 16) -> tuple[int, int]:
    """Video size with the reference's aspect ratio and about ``resolution``^2 pixels, in model multiples."""
    if height < 1 or width < 1:
        raise InputError(f"the reference image is empty ({height}x{width})")
    scale = resolution / (height * width) ** 0.5
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


def image_tensor(image: Any) -> torch.Tensor:
    """Any image (HWC/CHW, uint8 or float in [0, 1], gray/RGB/RGBA, numpy/torch/PIL) -> (3, H, W) float [0, 1]."""
    array = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image).copy())
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise InputError(f"reference image: expected one image, got a batch of {array.shape[0]}; pick one")
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise InputError(f"reference image: expected (H, W, C) or (C, H, W), got shape {tuple(array.shape)}")
    if array.shape[-1] in (1, 3, 4) and array.shape[0] not in (1, 3, 4):
        array = array.permute(2, 0, 1)
    elif array.shape[-1] in (1, 3, 4) and array.shape[0] in (1, 3, 4) and array.shape[-1] < array.shape[0]:
        array = array.permute(2, 0, 1)
    array = array.float() / 255.0 if array.dtype == torch.uint8 else array.float()
    if array.shape[0] == 4:  # RGBA: composite on white, as image viewers show it
        array = array[:3] * array[3:] + (1 - array[3:])
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return array.clamp(0, 1)


def prepare_reference(image: Any, height: int, width: int) -> torch.Tensor:
    """Aspect-preserving resize that covers (height, width), centre crop -> (3, H, W) in [-1, 1]."""
    if height % 16 or width % 16:
        raise InputError(f"video size {height}x{width}: height and width must be multiples of 16")
    x = image_tensor(image)
    scale = max(height / x.shape[1], width / x.shape[2])
    size = (max(height, round(x.shape[1] * scale)), max(width, round(x.shape[2] * scale)))
    x = F.interpolate(x[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return (x[:, top:top + height, left:left + width].clamp(0, 1) * 2 - 1).contiguous()


@torch.no_grad()
def inpaint_latents(vae: Any, known_video: torch.Tensor, known_frames: int, frames: int,
                    generator: torch.Generator) -> torch.Tensor:
    """EasyAnimate I2V conditioning (B=1): (1, 2C, f, h, w) = [mask latent | masked-video latent].

    ``known_video`` (3, >=known_frames, H, W) in [-1, 1]; its first ``known_frames`` frames are kept, the rest of
    the ``frames``-long window is generated (mask 1, masked video -1), as EasyAnimate's inpaint pipeline encodes it.
    """
    _, _, height, width = known_video.shape
    masked = -torch.ones(1, 3, frames, height, width, device=vae.device, dtype=vae.dtype)
    masked[:, :, :known_frames] = known_video[:, :known_frames].to(vae.device, vae.dtype)
    masked_latent = vae.encode(masked).sample(generator) * vae.config.scaling_factor
    return torch.cat([mask_latent(vae, known_frames, frames, height, width), masked_latent], dim=1)


def mask_latent(vae: Any, known_frames: int, frames: int, height: int, width: int) -> torch.Tensor:
    """The encoded keep/generate mask video (1 = generate), cached: every window of a run has the same one.

    The posterior mean is used (the reference samples it; its variance is negligible for a binary mask)."""
    key = (id(vae), vae.dtype, str(vae.device), known_frames, frames, height, width)
    if key not in _MASK_LATENTS:
        mask = torch.ones(1, 3, frames, height, width, device=vae.device, dtype=vae.dtype)
        mask[:, :, :known_frames] = 0
        if len(_MASK_LATENTS) >= 8:  # a run needs two or three; keep the memory bounded
            _MASK_LATENTS.pop(next(iter(_MASK_LATENTS)))
        _MASK_LATENTS[key] = vae.encode(mask).mode() * vae.config.scaling_factor
    return _MASK_LATENTS[key]


_MASK_LATENTS: dict[tuple, torch.Tensor] = {}


def slice_frames(values: Optional[torch.Tensor], start: int, end: int, pad: str | float, axis: int = 0
                 ) -> Optional[torch.Tensor]:
    """Frames [start, end) of a per-frame condition; past its end, repeat the last frame ("edge") or a value."""
    if values is None:
        return None
    available = values.shape[axis]
    part = values.narrow(axis, start, max(0, min(end, available) - start))
    missing = end - start - part.shape[axis]
    if missing <= 0:
        return part
    if pad == "edge":
        tail = values.narrow(axis, available - 1, 1)
        filler = tail.expand(*[missing if d == axis else -1 for d in range(values.ndim)])
    else:
        shape = list(values.shape)
        shape[axis] = missing
        filler = torch.full(shape, pad, dtype=values.dtype, device=values.device)
    return torch.cat([part, filler], dim=axis)


def phoneme_windows(ids: list[int] | np.ndarray | torch.Tensor, padding: int | None = None, win: int = WINDOW
                    ) -> torch.Tensor:
    """(F,) ids -> (F, 2 * win + 1) long windows, padded past both ends (official get_audio_window) with the
    table's padding id (the shipped table's by default). Built over the whole sequence, then sliced per window,
    so a window border sees its neighbours' phonemes."""
    padding = default_table().padding if padding is None else padding
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).flatten()
    padded = torch.cat([ids.new_full((win,), padding), ids, ids.new_full((win,), padding)])
    return padded.unfold(0, 2 * win + 1, 1)
