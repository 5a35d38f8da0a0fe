"""Whisper encoders from faster-whisper (CTranslate2) folders, which WhisperX and many packs keep.

A CTranslate2 ``model.bin`` is a flat list of named arrays. Its encoder maps one-to-one onto transformers'
``WhisperEncoder`` except that the attention's q/k/v projections are fused (``linear_0``, k without bias), so
the folder is converted on load and never written back.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import InputError

# CTranslate2's DataType ids (ctranslate2/types.h) -> numpy.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BFLOAT16 = 5


def is_ctranslate2_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "model.bin").is_file() and not (path / "model.safetensors").is_file()


def _read(handle: BinaryIO, fmt: str) -> int:
    return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]


def _string(handle: BinaryIO) -> str:
    return handle.read(_read(handle, "H"))[:-1].decode()


def read_ctranslate2(path: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of a CTranslate2 ``model.bin`` whose names start with ``prefix`` (others are skipped)."""
    path = Path(path)
    arrays = {}
    with path.open("rb") as handle:
        version = _read(handle, "I")
        if version < 5:
            raise InputError(f"{path}: CTranslate2 model format {version} is too old; convert it again with "
                             f"ct2-transformers-converter")
        _string(handle), _read(handle, "I")  # spec name and revision
        for _ in range(_read(handle, "I")):
            name = _string(handle)
            shape = [_read(handle, "I") for _ in range(_read(handle, "B"))]
            dtype, size = _read(handle, "B"), _read(handle, "I")
            if not name.startswith(prefix):
                handle.seek(size, 1)
                continue
            raw = handle.read(size)
            if dtype == _BFLOAT16:
                array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype in _DTYPES:
                array = np.frombuffer(raw, _DTYPES[dtype])
            else:
                raise InputError(f"{path}: variable {name} has CTranslate2 dtype {dtype}, which cannot be read "
                                 f"(int8-quantised folders: convert with --quantization float16)")
            arrays[name] = array.reshape(shape)
    return arrays


def whisper_encoder_state_dict(arrays: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """CTranslate2 ``encoder/...`` arrays -> (WhisperEncoder state dict in float32, its config values)."""

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(arrays[f"encoder/{name}"].astype(np.float32))

    layers = sum(1 for k in arrays if k.endswith("/self_attention/linear_0/weight"))
    width = arrays["encoder/conv1/weight"].shape[0]
    state = {"conv1.weight": tensor("conv1/weight"), "conv1.bias": tensor("conv1/bias"),
             "conv2.weight": tensor("conv2/weight"), "conv2.bias": tensor("conv2/bias"),
             "embed_positions.weight": tensor("position_encodings/encodings"),
             "layer_norm.weight": tensor("layer_norm/gamma"), "layer_norm.bias": tensor("layer_norm/beta")}
    for i in range(layers):
        src, dst = f"layer_{i}", f"layers.{i}"
        qkv_w, qkv_b = tensor(f"{src}/self_attention/linear_0/weight"), tensor(f"{src}/self_attention/linear_0/bias")
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            state[f"{dst}.self_attn.{proj}.weight"] = qkv_w[j * width:(j + 1) * width]
            if proj != "k_proj":
                state[f"{dst}.self_attn.{proj}.bias"] = qkv_b[j * width:(j + 1) * width]
        for ours, theirs in (("self_attn.out_proj", "self_attention/linear_1"), ("fc1", "ffn/linear_0"),
                             ("fc2", "ffn/linear_1")):
            state[f"{dst}.{ours}.weight"] = tensor(f"{src}/{theirs}/weight")
            state[f"{dst}.{ours}.bias"] = tensor(f"{src}/{theirs}/bias")
        for ours, theirs in (("self_attn_layer_norm", "self_attention/layer_norm"), ("final_layer_norm",
                                                                                     "ffn/layer_norm")):
            state[f"{dst}.{ours}.weight"] = tensor(f"{src}/{theirs}/gamma")
            state[f"{dst}.{ours}.bias"] = tensor(f"{src}/{theirs}/beta")
    heads = int(arrays["encoder/num_heads"]) if "encoder/num_heads" in arrays else max(1, width // 64)
    config = {"d_model": width, "encoder_layers": layers, "encoder_attention_heads": heads,
              "encoder_ffn_dim": arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
              "num_mel_bins": arrays["encoder/conv1/weight"].shape[1],
              "max_source_positions": arrays["encoder/position_encodings/encodings"].shape[0]}
    return state, config


def load_whisper_encoder(folder: str | Path) -> torch.nn.Module:
    """A faster-whisper folder (``model.bin``) -> transformers ``WhisperEncoder`` (float32, eval)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    state, values = whisper_encoder_state_dict(read_ctranslate2(Path(folder) / "model.bin", prefix="encoder/"))
    encoder = WhisperEncoder(WhisperConfig(**values))
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def save_encoder_folder(folder: str | Path, out: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a faster-whisper folder's encoder as an encoder-only transformers folder (``AudioEncoder`` loads it);
    float16 keeps the released weights exactly (CTranslate2 folders store float16)."""
    from transformers import WhisperFeatureExtractor

    encoder = load_whisper_encoder(folder)
    encoder.to(dtype).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins).save_pretrained(out)
    return Path(out)
