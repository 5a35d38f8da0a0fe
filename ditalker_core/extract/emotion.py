"""Emotion prompt -> T5 tokens and mask, cached on disk so the multi-GB T5 loads only for new prompts.

DiTalker's expression branch encodes "This person is [emotion] and talks" (paper Sec. 3.3, the
official PLLaVA labelling script and ``infer.py``) with EasyAnimateV3's T5 encoder (4096-d), padded
to 120 tokens as the EasyAnimate pipeline and the training script do. Training tokenised the prompt
as written; the official inference pipeline lowercases it first (``lowercase=True`` reproduces that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import InputError, MissingModelError

logger = logging.getLogger(__name__)

EMOTIONS = ("happy", "sad", "angry", "disgusted", "surprised", "fearful", "neutral")
SUBJECTS = ("person", "man", "woman")
TEMPLATE = "This {subject} is {emotion} and talks"
# Nouns people type for the labels; "surprise" is the one the official infer.py maps itself.
_ALIASES = {"surprise": "surprised", "happiness": "happy", "sadness": "sad", "anger": "angry",
            "disgust": "disgusted", "fear": "fearful"}
DEFAULT_MAX_LENGTH = 120
T5_FOLDER = "models/text_encoders/"
T5_SOURCE = "https://huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512 (text_encoder/ and tokenizer/ folders)"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_VOCABS = ("tokenizer.json", "spiece.model")


def build_prompt(text: str, subject: str = "person", lowercase: bool = False) -> str:
    """An emotion word (one of EMOTIONS, or any single word) -> the template; longer text is the prompt itself."""
    text = text.strip()
    if not text:
        raise InputError(f"the emotion is empty; pass one of {', '.join(EMOTIONS)} or a full prompt")
    if subject not in SUBJECTS:
        raise InputError(f"subject {subject!r} is not one of {', '.join(SUBJECTS)}")
    if len(text.split()) == 1:
        word = text.lower()
        text = TEMPLATE.format(subject=subject, emotion=_ALIASES.get(word, word))
    return text.lower() if lowercase else text


@dataclass(frozen=True)
class T5Files:
    model_dir: Path
    tokenizer_dir: Path


def find_t5(path: str | Path) -> T5Files:
    """Accept the EasyAnimate root (text_encoder/ + tokenizer/), a text_encoder folder, or one folder holding both."""
    root = Path(path)
    model_dirs = [root, root / "text_encoder"]
    model_dir = next((d for d in model_dirs if (d / "config.json").is_file()), None)
    if model_dir is None:
        raise MissingModelError("T5 text encoder config.json", [d / "config.json" for d in model_dirs], T5_FOLDER, T5_SOURCE)
    if not any((model_dir / name).is_file() for name in _WEIGHTS):
        raise MissingModelError("T5 text encoder weights", [model_dir / name for name in _WEIGHTS], T5_FOLDER, T5_SOURCE)
    tokenizer_dirs = [model_dir, root / "tokenizer", model_dir.parent / "tokenizer"]
    tokenizer_dir = next((d for d in tokenizer_dirs if any((d / name).is_file() for name in _VOCABS)), None)
    if tokenizer_dir is None:
        looked = [d / name for d in dict.fromkeys(tokenizer_dirs) for name in _VOCABS]
        raise MissingModelError("T5 tokenizer (tokenizer.json or spiece.model)", looked, T5_FOLDER, T5_SOURCE)
    return T5Files(model_dir, tokenizer_dir)


def encoder_identity(files: T5Files) -> str:
    """Fingerprint of the encoder: its path, config bytes, and the names and sizes of its files.

    Cheap (no weight hashing) yet changes when a folder's weights or tokenizer are swapped.
    """
    digest = hashlib.sha256(str(files.model_dir.resolve()).encode())
    digest.update((files.model_dir / "config.json").read_bytes())
    for folder in dict.fromkeys((files.model_dir, files.tokenizer_dir)):
        for item in sorted(p for p in folder.iterdir() if p.is_file()):
            digest.update(f"{item.name}:{item.stat().st_size};".encode())
    return digest.hexdigest()


def load_t5(files: T5Files, device: torch.device | str, dtype: torch.dtype) -> tuple[Any, torch.nn.Module]:
    """Build the tokenizer and T5 encoder (the expensive step the cache avoids)."""
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(files.tokenizer_dir)
    model = T5EncoderModel.from_pretrained(files.model_dir, torch_dtype=dtype).to(device).eval()
    return tokenizer, model


class PromptTokens(NamedTuple):
    embeds: torch.Tensor  # (1, max_length, d_model) T5 last hidden state
    mask: torch.Tensor  # (1, max_length) int64, 1 for real tokens


class T5PromptEncoder:
    """Prompt -> PromptTokens, remembered in memory and (with ``cache_dir``) in safetensors files.

    Constructing it only checks the files; T5 is built on the first prompt that is in no cache and
    stays loaded until :meth:`unload`. The cache key covers the prompt, the encoder fingerprint,
    the max length and the dtype, so changing any of them never returns stale tokens.
    """

    def __init__(
        self,
        t5_path: str | Path,
        cache_dir: str | Path | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.files = find_t5(t5_path)
        self.identity = encoder_identity(self.files)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_length = max_length
        self.device = torch.device(device)
        self.dtype = dtype
        self._tokenizer = None
        self._model = None
        self._memory: dict[str, PromptTokens] = {}

    def cache_key(self, prompt: str) -> str:
        fields = [prompt, self.identity, self.max_length, str(self.dtype)]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    def _cache_file(self, key: str) -> Path | None:
        return self.cache_dir / f"{key}.safetensors" if self.cache_dir is not None else None

    def _read(self, key: str) -> PromptTokens | None:
        path = self._cache_file(key)
        if path is None or not path.is_file():
            return None
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError):
            logger.warning("ignoring unreadable T5 cache file %s", path)
            return None
        return PromptTokens(tensors["prompt_embeds"], tensors["prompt_attention_mask"])

    def _write(self, key: str, prompt: str, tokens: PromptTokens) -> None:
        path = self._cache_file(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        save_file({"prompt_embeds": tokens.embeds, "prompt_attention_mask": tokens.mask}, partial,
                  metadata={"prompt": prompt, "max_length": str(self.max_length)})
        os.replace(partial, path)  # atomic: a concurrent reader never sees half a file

    @torch.no_grad()
    def _encode(self, prompt: str) -> PromptTokens:
        if self._model is None:
            self._tokenizer, self._model = load_t5(self.files, self.device, self.dtype)
        inputs = self._tokenizer(prompt, padding="max_length", max_length=self.max_length, truncation=True,
                                 add_special_tokens=True, return_tensors="pt")
        if len(self._tokenizer(prompt).input_ids) > self.max_length:
            logger.warning("prompt %r is longer than %d T5 tokens and was cut", prompt, self.max_length)
        ids, mask = inputs.input_ids.to(self.device), inputs.attention_mask.to(self.device)
        embeds = self._model(ids, attention_mask=mask)[0]
        return PromptTokens(embeds.cpu().contiguous(), mask.cpu().long().contiguous())

    def __call__(self, prompt: str) -> PromptTokens:
        key = self.cache_key(prompt)
        tokens = self._memory.get(key) or self._read(key)
        if tokens is None:
            tokens = self._encode(prompt)
            self._write(key, prompt, tokens)
        self._memory[key] = tokens
        return tokens

    def unload(self) -> None:
        """Free T5; the caches stay, and a new prompt loads it again."""
        self._tokenizer = self._model = None


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--t5", required=True, help=f"T5 folder (EasyAnimateV3 root or text_encoder/; {T5_FOLDER})")
    parser.add_argument("--cache", default=None, help="folder for cached prompt tokens")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="T5 tokens (EasyAnimate: 120)")
    parser.add_argument("--subject", choices=SUBJECTS, default="person", help="word in 'This <subject> is ...'")
    parser.add_argument("--lowercase", action="store_true", help="lowercase the prompt as the official infer.py does")
    parser.add_argument("--device", default="cpu", help="torch device for T5")
    parser.add_argument("--dtype", choices=tuple(_DTYPES), default="float32", help="T5 compute dtype")


def run(args: argparse.Namespace) -> None:
    """INPUT is an emotion word (happy, sad, ...) or a whole prompt; writes prompt_embeds + prompt_attention_mask."""
    prompt = build_prompt(args.input, args.subject, args.lowercase)
    encoder = T5PromptEncoder(args.t5, args.cache, args.max_length, args.device, _DTYPES[args.dtype])
    tokens = encoder(prompt)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({"prompt_embeds": tokens.embeds, "prompt_attention_mask": tokens.mask}, args.out,
              metadata={"prompt": prompt})
