"""One checkpoint format, and loading of the upstream files (EasyAnimateV3, official DiTalker).

Our format: a single ``.safetensors`` file whose metadata holds ``{"format": "ditalker", "model": <class>,
"config": <json>}``, so a loader needs nothing else. Upstream files (safetensors, or ``.pth``/``.bin`` read with
``torch.load(weights_only=True)``) load unconverted: our key names are theirs. Missing and unexpected keys are
reported by module; only the DiTalker modules (for an EasyAnimateV3 file) and the fixed sinusoid tables (rebuilt)
may be missing.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import InputError, MissingModelError, WrongWeightsError
from .models.transformer import DiTalkerTransformer3DModel, module_group
from .models.vae import AutoencoderKLMagvit

FORMAT = "ditalker"

# Official ``Transformer3DModel`` kwargs -> ours. Anything else must have the value the official models use.
_OFFICIAL_RENAMES = {
    "enable_audio_attention": "enable_audio_attention",
    "enable_style_attn": "enable_style_attn",
    "enable_eca": "enable_eca",
    "enable_pose_adapter": "enable_pose_adapter",
}
_OFFICIAL_COPIED = ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "num_layers",
                    "cross_attention_dim", "attention_bias", "sample_size", "patch_size", "activation_fn",
                    "norm_eps", "caption_channels", "enable_uvit", "motion_module_kwargs_even",
                    "motion_module_kwargs_odd")
_OFFICIAL_FIXED = {"norm_type": "ada_norm_single", "basic_block_type": "global_motionmodule",
                   "motion_module_type": "Vanilla", "patch_3d": False, "casual_3d": False,
                   "time_position_encoding_before_transformer": False, "qk_norm": False, "after_norm": False,
                   "enable_scale_time_embedding": False, "norm_elementwise_affine": False}


def config_from_official(official: Mapping[str, Any]) -> dict[str, Any]:
    """Our constructor kwargs for an official DiTalker / EasyAnimateV3 ``Transformer3DModel`` config."""
    for key, value in _OFFICIAL_FIXED.items():
        if key in official and official[key] != value:
            raise ValueError(f"config {key}={official[key]!r} is not the EasyAnimateV3 layout ({value!r})")
    config = {key: official[key] for key in _OFFICIAL_COPIED if key in official}
    config.update({ours: bool(official.get(theirs, False)) for theirs, ours in _OFFICIAL_RENAMES.items()
                   if theirs.startswith("enable")})
    config["enable_scale_adapter"] = bool(official.get("enable_scale_fusion") or
                                          official.get("enable_audio_scale_fusion"))
    config["enable_repa"] = bool(official.get("enable_repa_2") or official.get("enable_repa_1"))
    if official.get("enable_repa_1"):
        raise ValueError("enable_repa_1 (REPA on re-embedded predictions) is not supported; use enable_repa_2")
    config["repa_depth"] = 8  # the official __init__ forces encoder_depth to 8 whatever the config says
    return config


def _is_fixed_table(key: str) -> bool:
    return key.endswith(".pos_encoder.pe") or key.endswith(".pos_embed.pos_table")


def group_keys(keys: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        groups[module_group(key)].append(key)
    return dict(groups)


# What a weights file or model folder holds, told from its key names or config.json alone (no tensor read), so
# a loader handed another kind of file says what it is instead of listing keys.
WEIGHT_KINDS = {
    "transformer": "a DiTalker / EasyAnimateV3 transformer",
    "vae": "a MagViT VAE",
    "t5": "a T5 text encoder",
    "clip_vision": "a CLIP vision encoder",
    "whisper": "a Whisper audio encoder",
    "wav2vec2": "a Wav2Vec2 alignment model",
    "3dmm": "Deep3DFaceRecon (3DMM) weights",
}
_KEY_SIGNS = (  # kind, key prefixes; the first kind with a matching key wins
    ("transformer", ("transformer_blocks.", "pos_embed.proj.", "adaln_single.")),
    ("vae", ("encoder.conv_in.", "decoder.conv_in.", "post_quant_conv.")),
    ("t5", ("encoder.block.", "shared.weight")),
    ("clip_vision", ("vision_model.",)),
    ("whisper", ("encoder.conv1.", "model.encoder.conv1.", "encoder.embed_positions.")),
    ("wav2vec2", ("wav2vec2.",)),
    ("3dmm", ("net_recon", "final_layers.")),
)
_CONFIG_SIGNS = (("vae", "magvit"), ("t5", "t5"), ("clip_vision", "clip"), ("whisper", "whisper"),
                 ("wav2vec2", "wav2vec2"), ("transformer", "transformer3d"))


def kind_of_keys(keys: Iterable[str], metadata: Mapping[str, str] | None = None) -> Optional[str]:
    """The ``WEIGHT_KINDS`` key of a state dict's key names (our files say it in their metadata), or None."""
    if metadata and metadata.get("format") == FORMAT:
        return "vae" if metadata.get("model") == AutoencoderKLMagvit.__name__ else "transformer"
    keys = list(keys)
    for kind, prefixes in _KEY_SIGNS:
        if any(key.startswith(prefixes) for key in keys):
            return kind
    return None


def identify_weights(path: str | os.PathLike) -> Optional[str]:
    """The ``WEIGHT_KINDS`` key of a safetensors file or a model folder (its config.json, or a faster-whisper
    folder); None when unknown or not cheaply readable (pickled files are told apart when loaded)."""
    path = Path(path)
    if path.is_dir():
        if (path / "text_encoder").is_dir():
            return "t5"
        if (path / "model.bin").is_file() and (path / "vocabulary.txt").is_file():
            return "whisper"  # faster-whisper (CTranslate2)
        config = path / "config.json"
        if not config.is_file():
            return None
        try:
            described = json.loads(config.read_text())
        except (OSError, ValueError):
            return None
        names = " ".join(str(described.get(k, "")) for k in ("_class_name", "model_type", "architectures")).lower()
        return next((kind for kind, sign in _CONFIG_SIGNS if sign in names), None)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            return kind_of_keys(handle.keys(), handle.metadata())
    except (SafetensorError, OSError, ValueError):
        return None


def check_kind(path: str | os.PathLike, expected: str, kind: Optional[str] = None) -> None:
    """Raise WrongWeightsError when ``path`` (or the already known ``kind``) is another kind than expected."""
    kind = kind if kind is not None else identify_weights(path)
    if kind is not None and kind != expected:
        raise WrongWeightsError(f"{Path(path).name} is {WEIGHT_KINDS[kind]}, not {WEIGHT_KINDS[expected]}: pick "
                                f"{WEIGHT_KINDS[expected]} here and load this file where {WEIGHT_KINDS[kind]} is "
                                f"taken", kind, expected)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise MissingModelError(f"checkpoint {path.name}", path, path.parent,
                                "the DiTalker release, or EasyAnimateV3-XL-2-InP-512x512 on Hugging Face")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
            return load_file(str(path)), metadata
        except (SafetensorError, OSError, ValueError) as error:
            raise InputError(f"{path} is not a readable safetensors file ({error}); it may be truncated or "
                             f"still downloading: download it again") from error
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors vary by torch version
        raise InputError(f"{path} could not be read as a PyTorch checkpoint ({error}); it may be truncated or "
                         f"not a weights file: download it again") from error
    for wrapper in ("state_dict", "module", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return state, {}


def check_keys(model: nn.Module, state: Mapping[str, torch.Tensor],
               allow_missing_groups: Iterable[str] = ()) -> list[str]:
    """Raise on unexpected, misshaped or (outside ``allow_missing_groups``) missing keys; return missing keys."""
    own = model.state_dict()
    allowed = set(allow_missing_groups)
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                       for k in set(state) & set(own) if state[k].shape != own[k].shape)
    missing = sorted(k for k in set(own) - set(state) if not _is_fixed_table(k))
    problems = []
    if unexpected:
        problems.append(_describe("unexpected", unexpected))
    if misshaped:
        problems.append(f"{len(misshaped)} misshaped keys: " + "; ".join(misshaped[:3]) +
                        (" ..." if len(misshaped) > 3 else ""))
    not_allowed = [k for k in missing if module_group(k) not in allowed]
    if not_allowed:
        problems.append(_describe("missing", not_allowed))
    if problems:
        raise InputError("checkpoint does not fit the model config: " + " | ".join(problems))
    return missing


def _describe(kind: str, keys: list[str]) -> str:
    """Counts per module and two examples: short enough to read in a node's error box."""
    counts = ", ".join(f"{group} {len(ks)}" for group, ks in sorted(group_keys(keys).items()))
    return f"{len(keys)} {kind} keys ({counts}; e.g. {', '.join(keys[:2])})"


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """A copy in fresh (allocator-aligned) memory. A file's tensors sit at arbitrary offsets of one buffer, and
    BLAS takes other kernels, with other roundings, for unaligned weights: a model assigned those would not compute
    bit for bit what the saved one did."""
    return tensor.clone(memory_format=torch.contiguous_format)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], allow_missing_groups: Iterable[str] = ()
              ) -> list[str]:
    """Check, then load ``state`` into ``model`` (whose weights may be empty, from ``init_empty_weights``: its
    fixed tables are buffers, built as usual); returns missing keys."""
    missing = check_keys(model, state, allow_missing_groups)
    on_meta = any(p.is_meta for p in model.parameters())
    if on_meta:  # assigned, not copied: give each weight its own allocation (see _owned)
        state = {k: _owned(v) for k, v in state.items()}
    model.load_state_dict(dict(state), strict=False, assign=on_meta)
    if on_meta:
        still_meta = [n for n, p in model.state_dict().items() if p.is_meta]
        if still_meta:
            raise InputError(_describe("uninitialised (missing from the file)", still_meta))
    return missing


def save_checkpoint(model: nn.Module, path: str | os.PathLike, modules: Optional[Iterable[str]] = None) -> None:
    """Write our single-file format atomically (transformer or VAE); ``modules`` keeps only those transformer
    groups (small phase-2/3 files)."""
    keep = set(modules) if modules is not None else None
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not _is_fixed_table(k) and (keep is None or module_group(k) in keep)}
    metadata = {"format": FORMAT, "model": type(model).__name__, "config": json.dumps(dict(model.config)),
                "modules": json.dumps(sorted(keep) if keep is not None else "all")}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_modules(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a file holding only some modules (a phase-2/3 export) over ``model``; returns the groups loaded."""
    state, _ = read_state_dict(path)
    groups = {module_group(k) for k in model.state_dict()}
    check_keys(model, state, allow_missing_groups=groups)  # unexpected or misshaped keys still fail
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    return sorted({module_group(k) for k in state})


def load_transformer(path: str | os.PathLike, config: Optional[Mapping[str, Any]] = None,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                     force_config: bool = False) -> DiTalkerTransformer3DModel:
    """Load our format (its own config wins over ``config``), or an upstream file with ``config`` (our kwargs).

    ``force_config``: build ``config`` whatever the file says (the trainer, e.g. adding audio token groups to a
    trained model). EasyAnimateV3 transformer files may lack every DiTalker module (they stay freshly
    initialised); official DiTalker files must be complete.
    """
    state, metadata = read_state_dict(path)
    check_kind(path, "transformer", kind_of_keys(state, metadata))
    if metadata.get("format") == FORMAT:
        file_config = {k: v for k, v in json.loads(metadata["config"]).items() if not k.startswith("_")}
        config = file_config | dict(config or {}) if force_config else file_config
        partial = json.loads(metadata.get("modules", '"all"')) != "all"
    elif config is None:
        raise InputError(f"{path} is an upstream checkpoint without our metadata: pass its config (e.g. "
                         f"get_config('xl') for DiTalker, or config_from_official(config.json))")
    else:
        partial = False
    if partial and "backbone" not in json.loads(metadata["modules"]):
        raise InputError(f"{Path(path).name} holds only the modules {json.loads(metadata['modules'])}: load the "
                         f"full model it was trained from, then this file over it (load_modules); for ComfyUI, "
                         f"export a complete file (training: checkpoint.trained_only=false)")
    upstream_backbone = not any(module_group(k) != "backbone" for k in state)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with init_empty_weights():
        probe = DiTalkerTransformer3DModel(**config)
    allowed = [g for g in set(map(module_group, probe.state_dict())) if g != "backbone"] \
        if (upstream_backbone or partial) else []
    complete = not check_keys(probe, state, allowed)
    # A complete file needs no random init: load onto the meta-built model (fast, one copy in memory).
    model = probe if complete else DiTalkerTransformer3DModel(**config)
    load_into(model, state, allowed)
    # nn.Module.to (diffusers' ModelMixin.to warns on any cast of a model with fp32 modules), then those back.
    return keep_in_fp32(nn.Module.to(model, device=device, dtype=dtype)).eval()


def keep_in_fp32(model: nn.Module) -> nn.Module:
    """Put the model's ``_keep_in_fp32_modules`` back in float32 (diffusers' rule: a module whose dotted name has
    one of them as a component)."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if any(part in keep for part in name.split(".")):
            module.float()
    return model


def load_vae(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
             ) -> AutoencoderKLMagvit:
    """The MagViT VAE from our single file, the released ``vae/`` folder, or a bare upstream weights file."""
    path = Path(path)
    if path.is_dir():
        check_kind(path, "vae")
        return nn.Module.to(AutoencoderKLMagvit.from_local(path, dtype), device=device).eval().requires_grad_(False)
    state, metadata = read_state_dict(path)
    check_kind(path, "vae", kind_of_keys(state, metadata))
    config = json.loads(metadata["config"]) if metadata.get("format") == FORMAT else {}
    with init_empty_weights():
        model = AutoencoderKLMagvit.from_config(config)
    load_into(model, state)
    return nn.Module.to(model, device=device, dtype=dtype).eval().requires_grad_(False)
