"""``comfy.cli_args``: the preview method the server was started with (``--preview-method``; ComfyUI's default
is none)."""

from __future__ import annotations

import enum
from types import SimpleNamespace


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


args = SimpleNamespace(preview_method=LatentPreviewMethod.NoPreviews, preview_size=512)
