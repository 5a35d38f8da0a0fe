"""DiTalkerTransformer3DModel: the EasyAnimateV3 image-to-video DiT extended with DiTalker's conditions.

Data path of one forward:

    noisy latent (+ 0.5 * Pose Adapter(DWPose video))  ++  inpaint latents (mask C + masked video C; C = 4 for V3)
      -> per-frame 2x2 patch embedding + 2D sin-cos table -> tokens (B, F*h*w, C)
    timestep -> adaLN-single;  T5 tokens -> caption projection;  CLIP embedding -> 8 tokens
    Whisper windows -> AudioProjection -> c_a (``audio_token_groups``: one group per latent frame, see there)
    3DMM clip + phoneme windows -> SEEM style branch -> c_s
    c_emo = [caption tokens | CLIP tokens];  Scale Adapter(c_s, c_a) -> (s_phi, s_alpha) per block
    28 DiTalker blocks with U-ViT long skips (outputs of blocks 0-12 feed blocks 27-15)
      -> adaLN output norm -> linear -> unpatchify -> (B, 2C, F, H, W): noise (C) | learned variance (C)

The REPA side output (hidden states of block ``repa_depth`` through the REPA head) is returned for training.

Context parallelism (diffusers' ``enable_parallelism``, ``_cp_plan``) splits the token sequence by *latent frames*:
each process holds a run of whole frames from block 0 to the output projection. Frame-wise attention, the
per-frame GroupNorm of the motion modules and the per-frame audio tokens then need nothing from other processes;
the motion modules' attentions across frames (Temporal, Global) are the only ones that exchange tokens
(Ulysses all-to-all in diffusers' dispatcher; they add the global frame positions). Splitting by rows instead
would break the frame-wise attention and the per-frame norms and 2D position table.
State-dict keys are the official DiTalker / EasyAnimateV3 ones, so both load unconverted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import PatchEmbed, PixArtAlphaTextProjection
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle
from diffusers.utils import BaseOutput
from einops import rearrange
from torch import nn

from ..errors import InputError
from .audio_projection import AudioProjection
from .block import DiTalkerBlock
from .pose_adapter import PoseAdapter
from .repa import repa_head
from .scale_adapter import ScaleAdapter
from .seem import ContentEncoder, ExpressionDecoder, StyleEncoder, StyleProjection

# Groups of state-dict key prefixes, used by reports, loaders and the trainer to name modules.
DITALKER_MODULES = {
    "audio_projection": ("audio_projection.",),
    "asfm.audio_attention": (".audio_attention.",),
    "asfm.style_attention": (".style_attention.",),
    "eca": (".emotion_cross_attention.",),
    "seem.style": ("style_model.", "style_content_model.", "style_content_decoder.", "style_projection."),
    "scale_adapter": ("scale_adapter.",),
    "pose_adapter": ("pose_adapter.",),
    "repa_head": ("repa_proj.",),
}


def module_group(key: str) -> str:
    """The DiTalker module a state-dict key belongs to, or ``"backbone"``."""
    for group, patterns in DITALKER_MODULES.items():
        if any(key.startswith(p) if not p.startswith(".") else p in key for p in patterns):
            return group
    return "backbone"


@dataclass
class DiTalkerTransformerOutput(BaseOutput):
    """``sample``: (B, out_channels, F, H, W); ``repa``: (B, tokens, repa_dim) when asked for, else None."""

    sample: torch.Tensor
    repa: Optional[torch.Tensor] = None


class CLIPProjection(nn.Module):
    """CLIP image embedding (B, 768) -> ``tokens`` tokens of the inner width (EasyAnimateV3 I2V)."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(embedding)))


def _default_motion_kwargs(heads: int, attention_block_types: list[str]) -> dict[str, Any]:
    return {"num_attention_heads": heads, "num_transformer_block": 1, "attention_block_types": attention_block_types,
            "temporal_position_encoding": True, "temporal_position_encoding_max_len": 4096,
            "temporal_attention_dim_div": 1}


class DiTalkerTransformer3DModel(ModelMixin, ConfigMixin, CacheMixin):
    """EasyAnimateV3 I2V transformer + SEEM, Scale Adapter, ASFM, ECA, Pose Adapter and REPA head.

    With every ``enable_*`` flag off this is exactly the EasyAnimateV3 ``Transformer3DModel`` (I2V, motion
    modules, U-ViT); the defaults are the official real-size DiTalker.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiTalkerBlock"]
    _repeated_blocks = ["DiTalkerBlock"]  # compile_repeated_blocks compiles one block, reused by all
    # Kept float32 when the model is loaded in bf16/fp16 (checkpoints.load_transformer, diffusers' rule): the
    # timestep embedding and the motion modules' affine LayerNorms (every norm computes in float32 either way).
    _keep_in_fp32_modules = ["adaln_single", "norms", "ff_norm"]
    # Split by latent frames (see the module docstring): block 0's tokens and every block's per-frame audio
    # tokens (grouped audio, 4 dims; the official ungrouped tokens are read whole), gathered after proj_out.
    _cp_plan = {
        "transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
        "transformer_blocks.*": {"audio_tokens": ContextParallelInput(split_dim=1, expected_dims=4)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        # EasyAnimateV3 backbone
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 12,
        out_channels: int = 8,
        num_layers: int = 28,
        cross_attention_dim: int = 1152,
        attention_bias: bool = True,
        sample_size: int = 64,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        norm_eps: float = 1e-6,
        caption_channels: int = 4096,
        clip_embed_dim: int = 768,
        clip_tokens: int = 8,
        enable_uvit: bool = True,
        motion_module_kwargs_even: Optional[dict[str, Any]] = None,
        motion_module_kwargs_odd: Optional[dict[str, Any]] = None,
        # DiTalker modules
        enable_audio_attention: bool = True,
        enable_style_attn: bool = True,
        enable_scale_adapter: bool = True,
        enable_eca: bool = True,
        enable_pose_adapter: bool = True,
        enable_repa: bool = True,
        audio_frames: int = 64,
        audio_window: int = 50,
        audio_feature_dim: int = 384,
        audio_tokens: int = 128,
        audio_hidden_dim: int = 9216,
        audio_token_groups: Optional[int] = None,
        exp_dim: int = 64,
        style_max_len: int = 256,
        style_use_pad_mask: bool = False,
        phoneme_vocab: int = 75,
        phoneme_window: int = 11,
        phoneme_embed_dim: int = 128,
        seem_dim: int = 256,
        seem_heads: int = 8,
        seem_layers: int = 3,
        seem_ff_dim: int = 1024,
        seem_dropout: float = 0.1,
        style_tokens: int = 128,
        style_hidden_dim: int = 384,
        scale_adapter_layers: int = 3,
        pose_weight: float = 0.5,
        repa_depth: int = 8,
        repa_hidden_dim: int = 4096,
        repa_dim: int = 768,
        repa_tokens: Optional[int] = 256,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        conditioned = enable_audio_attention or enable_style_attn or enable_eca
        if conditioned and inner_dim != cross_attention_dim:
            raise ValueError(
                f"DiTalker conditions need num_attention_heads * attention_head_dim ({inner_dim}) == "
                f"cross_attention_dim ({cross_attention_dim}): c_a, c_s and c_emo share the attention width"
            )
        if enable_scale_adapter and not (enable_audio_attention and enable_style_attn):
            raise ValueError("enable_scale_adapter needs both enable_audio_attention and enable_style_attn")
        motion_even = motion_module_kwargs_even or _default_motion_kwargs(num_attention_heads,
                                                                          ["Temporal_Self", "Temporal_Self"])
        motion_odd = motion_module_kwargs_odd or _default_motion_kwargs(num_attention_heads,
                                                                        ["Temporal_Self", "Global_Self"])

        self.pos_embed = PatchEmbed(height=sample_size, width=sample_size, patch_size=patch_size,
                                    in_channels=in_channels, embed_dim=inner_dim,
                                    interpolation_scale=max(sample_size // 64, 1))
        self.adaln_single = AdaLayerNormSingle(inner_dim, use_additional_conditions=False)
        self.caption_projection = PixArtAlphaTextProjection(in_features=caption_channels, hidden_size=inner_dim)
        self.clip_projection = CLIPProjection(clip_embed_dim, inner_dim * clip_tokens)
        self.transformer_blocks = nn.ModuleList(
            DiTalkerBlock(
                inner_dim, num_attention_heads, attention_head_dim, cross_attention_dim,
                motion_module_kwargs=motion_even if index % 2 == 0 else motion_odd,
                attention_bias=attention_bias, activation_fn=activation_fn, norm_eps=norm_eps,
                audio_attention=enable_audio_attention, style_attention=enable_style_attn,
                emotion_attention=enable_eca,
            )
            for index in range(num_layers)
        )
        self.num_skips = (num_layers - 2) // 2 if enable_uvit else 0
        if enable_uvit:
            self.long_connect_fc = nn.ModuleList(nn.Linear(inner_dim, inner_dim) for _ in range(self.num_skips))
            for fc in self.long_connect_fc:
                nn.init.zeros_(fc.weight)
                nn.init.zeros_(fc.bias)

        if enable_audio_attention:
            self.audio_projection = AudioProjection(audio_frames, audio_window, audio_feature_dim, audio_tokens,
                                                    audio_hidden_dim, cross_attention_dim, audio_token_groups)
        if enable_style_attn:
            self.style_model = StyleEncoder(exp_dim, seem_dim, seem_heads, seem_layers, seem_ff_dim, style_max_len,
                                            seem_dropout, style_use_pad_mask)
            self.style_content_model = ContentEncoder(phoneme_vocab, phoneme_embed_dim, seem_dim, seem_heads,
                                                      seem_layers, seem_ff_dim, phoneme_window, seem_dropout)
            self.style_content_decoder = ExpressionDecoder(seem_dim, seem_heads, seem_layers, seem_ff_dim,
                                                           phoneme_window, exp_dim, seem_dropout)
            self.style_projection = StyleProjection(audio_frames, exp_dim, style_tokens, style_hidden_dim,
                                                    cross_attention_dim)
        if enable_scale_adapter:
            self.scale_adapter = ScaleAdapter(cross_attention_dim, num_attention_heads, num_layers,
                                              scale_adapter_layers)
        if enable_pose_adapter:
            self.pose_adapter = PoseAdapter(3, out_channels // 2)  # out = noise + variance, each latent-sized
        if enable_repa:
            self.repa_proj = repa_head(inner_dim, repa_hidden_dim, repa_dim)

        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, inner_dim) / inner_dim**0.5)
        self.proj_out = nn.Linear(inner_dim, patch_size * patch_size * out_channels)
        self.gradient_checkpointing = False
        self._zero_init_condition_outputs()

    def _zero_init_condition_outputs(self) -> None:
        """A fresh ASFM/ECA adds nothing, so EasyAnimateV3 weights keep their I2V behaviour until trained."""
        for block in self.transformer_blocks:
            for attention in (block.audio_attention, block.style_attention, block.emotion_cross_attention):
                if attention is not None:
                    nn.init.zeros_(attention.to_out[0].weight)
                    nn.init.zeros_(attention.to_out[0].bias)

    # ------------------------------------------------------------------------------------------------------
    # Conditions. Each absent condition (None) gets what the official pipeline feeds its unconditional branch.
    # ------------------------------------------------------------------------------------------------------
    def encode_audio(self, audio: Optional[torch.Tensor], batch: int,
                     dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Whisper windows (B, frames, 50, d) -> ``c_a``; None means silence (all-zero features).

        ``dtype``: the model's, when the caller has it (``self.dtype`` walks every submodule: 3 ms a call)."""
        cfg, dtype = self.config, dtype or self.dtype
        shape = (batch, cfg.audio_frames, cfg.audio_window, cfg.audio_feature_dim)
        if audio is None:
            audio = torch.zeros(shape, device=self.device, dtype=dtype)
        elif tuple(audio.shape) != shape:
            raise InputError(
                f"audio_encoder_hidden_states has shape {tuple(audio.shape)}, the model takes {shape}: "
                f"exactly {cfg.audio_frames} video frames of {cfg.audio_window} Whisper tokens each; cut the "
                f"audio into windows of that length (the pipeline does this) or pad the last one"
            )
        return self.audio_projection(audio.to(dtype))

    def encode_style(self, style_clip: Optional[torch.Tensor], phoneme_windows: Optional[torch.Tensor],
                     batch: int, pad_mask: Optional[torch.Tensor] = None,
                     dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """SEEM style branch -> (``c_s`` (B, tokens, D), stylised expressions (B, frames, 64)).

        None means all-zero 3DMM coefficients / phoneme id 0, as the official unconditional branch.
        """
        cfg, dtype = self.config, dtype or self.dtype
        if style_clip is None:
            style_clip = torch.zeros(batch, cfg.style_max_len, cfg.exp_dim, device=self.device, dtype=dtype)
        if phoneme_windows is None:
            phoneme_windows = torch.zeros(batch, cfg.audio_frames, cfg.phoneme_window, device=self.device,
                                          dtype=torch.long)
        expected = (batch, cfg.audio_frames, cfg.phoneme_window)
        if tuple(phoneme_windows.shape) != expected:
            raise InputError(f"phoneme_win has shape {tuple(phoneme_windows.shape)}, the model takes {expected} "
                             f"(one {cfg.phoneme_window}-id window per video frame of the clip)")
        if style_clip.shape[0] != batch or style_clip.shape[-1] != cfg.exp_dim or \
                style_clip.shape[1] > cfg.style_max_len:
            raise InputError(f"style_clip has shape {tuple(style_clip.shape)}, the model takes (B, L<="
                             f"{cfg.style_max_len}, {cfg.exp_dim}) 3DMM expression coefficients")
        style_code = self.style_model(style_clip.to(dtype), pad_mask)
        content = self.style_content_model(phoneme_windows.long())
        expressions = self.style_content_decoder(content, style_code)
        return self.style_projection(expressions), expressions

    def encode_text_and_reference(
        self, text: Optional[torch.Tensor], text_mask: Optional[torch.Tensor], clip: Optional[torch.Tensor],
        clip_mask: Optional[torch.Tensor], batch: int, dtype: Optional[torch.dtype] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption + CLIP tokens for attn2 (also ``c_emo``), and the additive attention bias (B, 1, L).

        No text means one masked zero token; no CLIP embedding means zeros with a zero mask (the official
        negative branch).
        """
        cfg, dtype = self.config, dtype or self.dtype
        if text is None:
            text = torch.zeros(batch, 1, cfg.caption_channels, device=self.device, dtype=dtype)
            text_mask = torch.zeros(batch, 1, device=self.device)
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], device=text.device)
        if clip is None:
            clip = torch.zeros(batch, cfg.clip_embed_dim, device=self.device, dtype=dtype)
            clip_mask = torch.zeros(batch, cfg.clip_tokens, device=self.device)
        if clip_mask is None:
            clip_mask = torch.ones(batch, cfg.clip_tokens, device=clip.device)
        inner = self.caption_projection.linear_2.out_features
        tokens = torch.cat([self.caption_projection(text.to(dtype)),
                            self.clip_projection(clip.to(dtype)).view(batch, -1, inner)], dim=1)
        mask = torch.cat([text_mask, clip_mask], dim=1)
        bias = ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)
        return tokens, bias

    def pose_offset(self, pose_video: Optional[torch.Tensor], latent: torch.Tensor) -> torch.Tensor:
        """``pose_weight`` * Pose Adapter(DWPose video), fitted to the latent; None = an all-black video."""
        batch, _, frames, height, width = latent.shape
        if pose_video is None:
            pose_video = torch.zeros(batch, 3, 4 * frames, 4 * height, 4 * width, device=latent.device,
                                     dtype=latent.dtype)
        offset = self.pose_adapter(pose_video.to(latent.dtype)) * self.config.pose_weight
        return PoseAdapter.fit_to_latent(offset, latent.shape)

    # ------------------------------------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        inpaint_latents: Optional[torch.Tensor] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        clip_encoder_hidden_states: Optional[torch.Tensor] = None,
        clip_attention_mask: Optional[torch.Tensor] = None,
        audio_encoder_hidden_states: Optional[torch.Tensor] = None,
        phoneme_win: Optional[torch.Tensor] = None,
        style_clip: Optional[torch.Tensor] = None,
        pad_mask: Optional[torch.Tensor] = None,
        pixel_values_pose: Optional[torch.Tensor] = None,
        c_emo: Optional[torch.Tensor] = None,
        repa_index: Optional[int] = None,
        return_dict: bool = True,
    ) -> DiTalkerTransformerOutput | tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Predict noise and variance for (B, C, F, H, W) ``hidden_states`` at ``timestep`` (B,).

        Argument names are the official ones. ``inpaint_latents`` (B, 2C, F, H, W): mask latent + masked video
        latent. ``repa_index``: return the REPA projection of token chunk ``repa_index`` (``repa_tokens`` tokens;
        with the official 256 at 512 px that is one frame) of block ``repa_depth``; None skips it.
        """
        cfg = self.config
        batch, _, frames, height, width = hidden_states.shape
        if height % cfg.patch_size or width % cfg.patch_size:
            raise InputError(f"latent height/width ({height}x{width}) must be multiples of the patch size "
                             f"{cfg.patch_size} (pixel sizes multiples of {8 * cfg.patch_size})")
        dtype = self.dtype
        hidden_states = hidden_states.to(dtype)
        timestep = torch.as_tensor(timestep, device=hidden_states.device).reshape(-1).expand(batch)

        if cfg.enable_pose_adapter:
            hidden_states = hidden_states + self.pose_offset(pixel_values_pose, hidden_states)
        if inpaint_latents is not None:
            hidden_states = torch.cat([hidden_states, inpaint_latents.to(dtype)], dim=1)
        if hidden_states.shape[1] != cfg.in_channels:
            raise InputError(f"noisy latent + inpaint_latents have {hidden_states.shape[1]} channels, the model "
                             f"takes {cfg.in_channels} (noisy + mask + masked-video latents, "
                             f"{cfg.out_channels // 2} channels each)")

        h, w = height // cfg.patch_size, width // cfg.patch_size
        tokens = self.pos_embed(rearrange(hidden_states, "b c f h w -> (b f) c h w"))
        tokens = rearrange(tokens, "(b f) n c -> b (f n) c", f=frames)
        time_mod, embedded_timestep = (e.to(dtype) for e in self.adaln_single(
            timestep, {"resolution": None, "aspect_ratio": None}, batch_size=batch,
            hidden_dtype=self.adaln_single.linear.weight.dtype))

        text_tokens, text_bias = self.encode_text_and_reference(
            encoder_hidden_states, encoder_attention_mask, clip_encoder_hidden_states, clip_attention_mask, batch,
            dtype)
        if c_emo is None and cfg.enable_eca:
            c_emo = text_tokens
        audio_tokens = (self.encode_audio(audio_encoder_hidden_states, batch, dtype)
                        if cfg.enable_audio_attention else None)
        style_tokens = (self.encode_style(style_clip, phoneme_win, batch, pad_mask, dtype)[0]
                        if cfg.enable_style_attn else None)
        s_phi = s_alpha = None
        if cfg.enable_scale_adapter:
            s_phi, s_alpha = self.scale_adapter(style_tokens, audio_tokens)

        heard = audio_tokens
        if audio_tokens is not None and cfg.audio_token_groups is not None:
            if frames != cfg.audio_token_groups:
                raise InputError(f"the latent has {frames} frames but the model's audio tokens come in "
                                 f"{cfg.audio_token_groups} groups, one per latent frame: give it windows of "
                                 f"{cfg.audio_frames} video frames (the pipeline does this)")
            heard = audio_tokens.unflatten(1, (frames, -1))
        repa = None
        skips: list[torch.Tensor] = []
        first_skip_target = len(self.transformer_blocks) - self.num_skips
        for index, block in enumerate(self.transformer_blocks):
            skip = None
            if cfg.enable_uvit and index >= first_skip_target:
                skip = self.long_connect_fc[index - first_skip_target](skips.pop())
            args = (tokens, time_mod, text_tokens, text_bias, h, w, heard, style_tokens,
                    None if s_alpha is None else s_alpha[:, index, None],
                    None if s_phi is None else s_phi[:, index, None], c_emo, skip)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(block, *args)
            else:
                tokens = block(*args)
            if cfg.enable_uvit and index < self.num_skips:
                skips.append(tokens)
            if repa_index is not None and cfg.enable_repa and index + 1 == cfg.repa_depth:
                chunk = cfg.repa_tokens or h * w
                repa = self.repa_proj(tokens[:, chunk * repa_index: chunk * (repa_index + 1)])

        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        tokens = self.proj_out(self.norm_out(tokens) * (1 + scale) + shift)
        tokens = tokens.reshape(batch, frames, h, w, cfg.patch_size, cfg.patch_size, cfg.out_channels)
        sample = torch.einsum("nfhwpqc->ncfhpwq", tokens).reshape(
            batch, cfg.out_channels, frames, h * cfg.patch_size, w * cfg.patch_size)
        if not return_dict:
            return sample, repa
        return DiTalkerTransformerOutput(sample=sample, repa=repa)
