"""Named model configurations.

``xl``: the official real-size DiTalker (EasyAnimateV3-XL-2-InP-512x512 + every DiTalker module; parameter
counts equal the official manifest). ``tiny``: every module present at toy widths (< 10 M parameters) for tests
and CPU demos. ``easyanimate_v3_xl``: the bare EasyAnimateV3 I2V backbone.
"""

from __future__ import annotations

from typing import Any

XL: dict[str, Any] = {}  # the model's defaults are the official real size


def _motion_modules(heads: int) -> dict[str, Any]:
    """EasyAnimateV3's motion modules for a small model: even blocks two temporal attentions, odd blocks a
    temporal and a global one; positions up to 256 frames."""
    kinds = {"even": ["Temporal_Self", "Temporal_Self"], "odd": ["Temporal_Self", "Global_Self"]}
    return {f"motion_module_kwargs_{name}": {
        "num_attention_heads": heads, "num_transformer_block": 1, "attention_block_types": blocks,
        "temporal_position_encoding": True, "temporal_position_encoding_max_len": 256,
        "temporal_attention_dim_div": 1} for name, blocks in kinds.items()}


TINY: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "cross_attention_dim": 32,
    "sample_size": 16,
    "caption_channels": 32,
    "clip_embed_dim": 32,
    **_motion_modules(heads=2),
    "audio_frames": 32,
    "audio_feature_dim": 32,
    "audio_tokens": 16,
    "audio_hidden_dim": 64,
    "style_max_len": 32,
    "seem_dim": 32,
    "seem_heads": 2,
    "seem_layers": 1,
    "seem_ff_dim": 64,
    "phoneme_embed_dim": 16,
    "style_tokens": 16,
    "style_hidden_dim": 32,
    "scale_adapter_layers": 1,
    "repa_hidden_dim": 64,
    "repa_dim": 32,
    "repa_tokens": None,
}

# The shipped demo model (synthetic talking faces, 64 px, 32-frame windows; ``demo`` VAE, real Whisper tiny
# features): every module present, small enough to train on a 2-core CPU in about two hours.
DEMO: dict[str, Any] = {
    "in_channels": 48,  # the demo VAE's 16-channel latents: noisy + mask + masked video
    "out_channels": 32,
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "cross_attention_dim": 128,
    "num_layers": 8,
    "sample_size": 8,
    "caption_channels": 32,
    "clip_embed_dim": 32,
    **_motion_modules(heads=4),
    "audio_frames": 32,
    "audio_tokens": 32,
    "audio_hidden_dim": 256,
    "audio_token_groups": 8,  # 32 frames -> 8 latent frames: each reads the 4 tokens heard in its 4 frames
    "style_max_len": 64,
    "style_use_pad_mask": True,
    "seem_dim": 64,
    "seem_heads": 4,
    "seem_layers": 2,
    "seem_ff_dim": 128,
    "phoneme_embed_dim": 32,
    "style_tokens": 32,
    "style_hidden_dim": 64,
    "scale_adapter_layers": 1,
    "repa_depth": 4,
    "repa_hidden_dim": 128,
    "repa_dim": 32,
    "repa_tokens": None,
}

EASYANIMATE_V3_XL: dict[str, Any] = {
    "enable_audio_attention": False, "enable_style_attn": False, "enable_scale_adapter": False,
    "enable_eca": False, "enable_pose_adapter": False, "enable_repa": False,
}

CONFIGS: dict[str, dict[str, Any]] = {"xl": XL, "tiny": TINY, "demo": DEMO, "easyanimate_v3_xl": EASYANIMATE_V3_XL}


def get_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The constructor kwargs of a named configuration, with ``overrides`` applied."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; choose one of {sorted(CONFIGS)}")
    return {**CONFIGS[name], **overrides}

# MagViT slice VAE configurations: ``full`` is the released EasyAnimateV3 VAE (the class defaults).
# ``demo``: the released layout (8x space, 4x time) at a small width with 16 latent channels (as Wan's VAE) for
# the synthetic-face demo model: at 64 px the mouth spans two latent pixels and each latent holds 4 frames, and 4
# channels washed the expressions out (probes on reconstructions of 7 held-out cases: 3/7 emotions with 4 channels,
# 4-6/7 with 16; mouth opening r 0.75 -> 0.77).
VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "full": {},
    "tiny": {"ch": 8, "norm_num_groups": 4, "use_tiling": False},
    "demo": {"ch": 16, "layers_per_block": 1, "norm_num_groups": 8, "latent_channels": 16, "use_tiling": False},
    # the demo VAE's first stage: trained at 4 channels, then widened into ``demo`` (training.train_vae --init)
    "demo_narrow": {"ch": 16, "layers_per_block": 1, "norm_num_groups": 8, "use_tiling": False},
}


def get_vae_config(name: str, **overrides: Any) -> dict[str, Any]:
    if name not in VAE_CONFIGS:
        raise KeyError(f"unknown VAE config {name!r}; choose one of {sorted(VAE_CONFIGS)}")
    return {**VAE_CONFIGS[name], **overrides}
