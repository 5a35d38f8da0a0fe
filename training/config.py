"""Training configuration: YAML files with ``base:`` inheritance, defaults, and dotted command-line overrides.

A config is a plain nested dict. ``base: other.yaml`` (relative to the file) is loaded first and the file's
values are merged over it, so the official-value variants only list what differs. Overrides such as
``train.max_steps=20 model.config=tiny`` are parsed as YAML scalars (numbers, booleans, null, lists).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from ditalker_core.errors import InputError

DEFAULTS: dict[str, Any] = {
    "output_dir": "output/ditalker",
    "model": {
        "config": "xl",
        "overrides": {},
        "init": None,  # EasyAnimateV3 transformer file or a previous phase's checkpoint; None = fresh weights
        "init_modules": [],  # partial files (trained modules of an earlier phase) loaded on top of ``init``
        "reinit": [],  # modules set back to their fresh initialisation after loading (names as in ``trainable``)
        "trainable": ["backbone"],
        "gradient_checkpointing": True,
    },
    "models": {
        "easyanimate": "models/Diffusion_Transformer/EasyAnimateV3-XL-2-InP-512x512",
        "vae": None,  # default: <easyanimate>/vae
        "text_encoder": None,  # default: <easyanimate> (text_encoder/ + tokenizer/)
        "image_encoder": None,  # default: <easyanimate> (image_encoder/)
        "dinov2": "models/dinov2-base",
        "syncnet": "models/ditalker/syncnet/lipsync_expert.pth",
        "text_cache": None,  # default: <output_dir>/t5_cache
    },
    "data": {
        "metadata": "data/train/metadata.json",
        "root": None,  # default: the metadata file's folder
        "resolution": 512,
        "num_workers": 4,
        "inpaint_mask": "official",  # official (EasyAnimate's random masks) | first_frame | continuation
        "known_frames": 8,  # continuation masks: frames known in a later window (the pipeline's overlap)
        "memory_cache": False,  # keep decoded windows and frozen-encoder results in memory (small fixed sets)
        "style_clip": "random",  # where the style clip starts: random | middle | 0
    },
    "conditions": {
        # Probability of replacing each condition by its null (per sample, independently).
        "drop": {"audio": 0.1, "phoneme": 0.1, "style": 0.1, "pose": 0.1, "text": 0.1, "reference": 0.1},
        # Official: with an all-masked video (no known frame) the inpaint latents are zeroed with this probability.
        "zero_inpaint_without_reference": 0.9,
    },
    "diffusion": {"num_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "timestep_sampling": "lognorm"},
    "losses": {
        "rec": {"weight": 1.0},
        "eye": {"weight": 10.0},
        "lip": {"weight": 0.0},  # the same region weighting on lip_mask/ (not in the paper; the demo uses it)
        "vb": {"weight": 1.0},
        "id": {"weight": 0.0},
        "sync": {"weight": 0.0, "syncnet_weight": 0.5, "latent_frames": 2, "frames": 5},
    },
    "train": {
        "seed": 42,
        "batch_size": 1,
        "grad_accum": 1,
        "lr": 4.0e-6,
        "lr_scheduler": "constant_with_warmup",
        "warmup_steps": 500,
        "max_steps": 10000,
        "weight_decay": 0.01,
        "adam_betas": [0.9, 0.999],
        "adam_eps": 1.0e-8,
        "max_grad_norm": 1.0,
        "mixed_precision": "bf16",
        "use_8bit_adam": False,
        "ema": {"enabled": False, "decay": 0.9999},
        "allow_tf32": True,
        "find_unused_parameters": False,
    },
    "checkpoint": {"every": 1000, "keep": 3, "trained_only": False, "resume": "auto"},
    "log": {"every": 10, "tensorboard": True},
    # Every ``every`` steps, sample ``frames`` frames (default one window) of record ``record`` of ``metadata``
    # (default: the training metadata) with the sampling pipeline into <output_dir>/validation/.
    "validation": {"every": 0, "metadata": None, "record": 0, "frames": None, "steps": 25, "guidance_scale": 7.0,
                   "seed": 0},
}


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins, dicts merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file with its ``base:`` chain resolved (bases relative to the including file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist; pass one of training/configs/*.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("base", None)
    return merge(read_yaml(path.parent / base), data) if base else data


def apply_override(config: dict[str, Any], item: str) -> None:
    """Set one ``dotted.key=value`` in place; the value is read as YAML (``1e-4``, ``true``, ``[a, b]``)."""
    if "=" not in item:
        raise InputError(f"override {item!r} is not key=value; write e.g. train.max_steps=100")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """DEFAULTS <- YAML file (with bases) <- overrides, then checked."""
    config = merge(DEFAULTS, read_yaml(path)) if path is not None else copy.deepcopy(DEFAULTS)
    for item in overrides:
        apply_override(config, item)
    check_config(config)
    return config


def check_config(config: dict[str, Any]) -> None:
    """Refuse values the trainer cannot honour, naming the key and the fix (normalises a few in place)."""
    train, data = config["train"], config["data"]
    if train["mixed_precision"] in (False, None):  # YAML reads a bare `no` as false
        train["mixed_precision"] = "no"
    if train["mixed_precision"] not in ("no", "fp16", "bf16"):
        raise InputError(f"train.mixed_precision={train['mixed_precision']!r}; use no, fp16 or bf16")
    if data["inpaint_mask"] not in ("official", "first_frame", "continuation"):
        raise InputError(f"data.inpaint_mask={data['inpaint_mask']!r}; use official, first_frame or continuation")
    if config["diffusion"]["timestep_sampling"] not in ("lognorm", "uniform"):
        raise InputError("diffusion.timestep_sampling must be lognorm or uniform")
    if int(data["resolution"]) % 16:
        raise InputError(f"data.resolution={data['resolution']} must be a multiple of 16 (VAE x8, patch x2)")
    for name in ("batch_size", "grad_accum", "max_steps"):
        if int(train[name]) < 1:
            raise InputError(f"train.{name} must be at least 1")
    unknown = set(config["conditions"]["drop"] or {}) - {"audio", "phoneme", "style", "pose", "text", "reference"}
    if unknown:
        raise InputError(f"conditions.drop has unknown conditions {sorted(unknown)}")
    sync = config["losses"]["sync"]
    if sync["weight"] and (sync["latent_frames"] != 2 or not 1 <= sync["frames"] <= 8):
        raise InputError("losses.sync: latent_frames must be 2 (decoded to 8 frames) and frames 1..8")
