"""Reference portrait -> CLIP image embedding (the backbone's CLIP tokens and the c_ref half of c_emo).

Computed as the EasyAnimate I2V pipeline does it: the reference is resized to the video size (a
plain PIL resize, stretching), ``CLIPImageProcessor`` crops and normalises it, and the
``image_embeds`` of ``CLIPVisionModelWithProjection`` (768-d for EasyAnimateV3's image encoder)
are the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, MissingModelError

CLIP_FOLDER = "models/clip_vision/"
CLIP_SOURCE = "https://huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512 (image_encoder/ folder)"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def find_clip_vision(path: str | Path) -> Path:
    """Accept the EasyAnimate root (image_encoder/) or the image encoder folder itself."""
    root = Path(path)
    candidates = [root, root / "image_encoder"]
    folder = next((d for d in candidates if (d / "config.json").is_file()), None)
    if folder is None:
        raise MissingModelError("CLIP image encoder config.json", [d / "config.json" for d in candidates],
                                CLIP_FOLDER, CLIP_SOURCE)
    if not any((folder / name).is_file() for name in _WEIGHTS):
        raise MissingModelError("CLIP image encoder weights", [folder / name for name in _WEIGHTS], CLIP_FOLDER, CLIP_SOURCE)
    return folder


def load_clip_vision(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Module, Any]:
    """-> (CLIPVisionModelWithProjection, CLIPImageProcessor) from a local folder.

    A folder without ``preprocessor_config.json`` gets OpenAI CLIP's preprocessing at the model's image size.
    """
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    folder = find_clip_vision(path)
    model = CLIPVisionModelWithProjection.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
    if (folder / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(folder)
    else:
        side = model.config.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return model, processor


def reference_image(image: Any) -> Image.Image:
    """One image as a path, PIL image, (H, W, 3) array, or ComfyUI IMAGE (1, H, W, 3) in [0, 1] -> RGB PIL."""
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise InputError(f"reference image {image} does not exist; pass the path of an existing image")
        return Image.open(image).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise InputError(f"reference image has shape {array.shape}; pass one (H, W, 3) image")
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]))


@torch.no_grad()
def encode_reference(image: Any, model: Any, processor: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Reference image -> (1, projection_dim) ``image_embeds`` on the model's device and dtype.

    ``size`` is the generated video's (height, width): the official pipeline resizes the reference
    to it before CLIP sees it, so passing it reproduces the official embedding.
    """
    picture = reference_image(image)
    if size is not None:
        picture = picture.resize((size[1], size[0]))  # PIL's default filter, as the official code uses
    pixels = processor(images=picture, return_tensors="pt")["pixel_values"]
    return model(pixel_values=pixels.to(model.device, dtype=model.dtype)).image_embeds
