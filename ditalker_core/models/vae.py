"""EasyAnimateV3's MagViT slice VAE (``AutoencoderKLMagvit``), ported so its public weights load unconverted.

Only what the released V3 VAE uses is here: ``SpatialDownBlock3D`` / ``SpatialTemporalDownBlock3D`` encoder
blocks, their ``Up`` twins, a ``MidBlock3D`` with one full 3D attention, and the V3 slice scheme. In that
scheme every "causal" convolution of the reference pads time with one zero frame on both sides (the reference
switches all of them to that mode before each slice), so here they are plain ``nn.Conv3d`` with temporal
padding 1; the one mode-dependent layer is the spatio-temporal upsampler, which only doubles time for
multi-latent chunks, not for an odd clip's lone first latent.

Time is cut into slices: an odd-length clip encodes and decodes its first frame alone; the encoder then takes
independent chunks of ``mini_batch_encoder`` frames, and the decoder chunks of ``mini_batch_decoder`` latents
whose input convolution and mid block also see the previous and the next chunk. ``decode_stream`` walks those
decoder chunks one at a time, so decoding memory stays flat in the clip length.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.activations import get_activation
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin
from safetensors.torch import load_file
from torch import nn

from ..errors import InputError, MissingModelError

DOWN_BLOCK_TYPES = {"SpatialDownBlock3D": False, "SpatialTemporalDownBlock3D": True}  # name -> halves time
UP_BLOCK_TYPES = {"SpatialUpBlock3D": False, "SpatialTemporalUpBlock3D": True}  # name -> doubles time
NORM_EPS = 1e-6
WEIGHTS_SOURCE = "https://huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512 (folder vae/)"


def _conv3(in_channels: int, out_channels: int) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)


class ResidualBlock3D(nn.Module):
    """GroupNorm-SiLU-conv twice, plus a 1x1x1 shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, act_fn: str):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = _conv3(in_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.conv2 = _conv3(out_channels, out_channels)
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.act = get_activation(act_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.shortcut(x)


class Attention3D(nn.Module):
    """Self-attention over every (t, h, w) position of the chunk, with a GroupNorm in front and a residual."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.group_norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)
        q, k, v = (
            proj(tokens).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        return x + self.to_out(out).transpose(1, 2).reshape(b, c, t, h, w)


class MidBlock3D(nn.Module):
    """``layers`` residual blocks with a 3D attention between each pair."""

    def __init__(self, channels: int, layers: int, heads: int, groups: int, act_fn: str):
        super().__init__()
        self.convs = nn.ModuleList(ResidualBlock3D(channels, channels, groups, act_fn) for _ in range(layers))
        self.attentions = nn.ModuleList(Attention3D(channels, heads, groups) for _ in range(layers - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs[0](x)
        for attn, conv in zip(self.attentions, self.convs[1:]):
            x = conv(attn(x))
        return x


class Downsampler3D(nn.Module):
    """Stride-2 conv in space (and in time for spatio-temporal blocks) after padding right and bottom by one."""

    def __init__(self, channels: int, halve_time: bool):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, stride=(2 if halve_time else 1, 2, 2), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsampler3D(nn.Module):
    """Nearest x2 in space then a conv; spatio-temporal ones then double time linearly (not for a lone latent)."""

    def __init__(self, channels: int, double_time: bool):
        super().__init__()
        self.double_time = double_time
        self.conv = _conv3(channels, channels)

    def forward(self, x: torch.Tensor, expand_time: bool) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))
        if self.double_time and expand_time:
            x = F.interpolate(x, scale_factor=(2, 1, 1), mode="trilinear")
        return x


class DownBlock3D(nn.Module):
    """Residual blocks, then an optional downsampler (``Spatial``/``SpatialTemporalDownBlock3D``)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, act_fn: str,
                 downsample: bool, halve_time: bool):
        super().__init__()
        self.convs = nn.ModuleList(
            ResidualBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, act_fn)
            for i in range(layers)
        )
        self.downsampler = Downsampler3D(out_channels, halve_time) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x if self.downsampler is None else self.downsampler(x)


class UpBlock3D(nn.Module):
    """Residual blocks, then an optional upsampler (``Spatial``/``SpatialTemporalUpBlock3D``)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, act_fn: str,
                 upsample: bool, double_time: bool):
        super().__init__()
        self.convs = nn.ModuleList(
            ResidualBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, act_fn)
            for i in range(layers)
        )
        self.upsampler = Upsampler3D(out_channels, double_time) if upsample else None

    def forward(self, x: torch.Tensor, expand_time: bool) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x if self.upsampler is None else self.upsampler(x, expand_time)


class Encoder(nn.Module):
    """Frames -> latent moments (mean and log-variance stacked on channels), one slice at a time."""

    def __init__(self, in_channels: int, latent_channels: int, widths: list[int], block_types: Sequence[str],
                 layers: int, groups: int, act_fn: str, mid_heads: int, mini_batch: int):
        super().__init__()
        self.mini_batch = mini_batch
        self.conv_in = _conv3(in_channels, widths[0])
        self.down_blocks = nn.ModuleList(
            DownBlock3D(widths[max(i - 1, 0)], widths[i], layers, groups, act_fn,
                        downsample=i < len(widths) - 1, halve_time=DOWN_BLOCK_TYPES[kind])
            for i, kind in enumerate(block_types)
        )
        self.mid_block = MidBlock3D(widths[-1], layers, mid_heads, groups, act_fn)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=NORM_EPS)
        self.conv_act = get_activation(act_fn)
        self.conv_out = _conv3(widths[-1], 2 * latent_channels)

    def encode_slice(self, x: torch.Tensor) -> torch.Tensor:
        with one_frame_guard(x, self.conv_in.weight.dtype):
            x = self.conv_in(x)
            for block in self.down_blocks:
                x = block(x)
            return self.conv_out(self.conv_act(self.conv_norm_out(self.mid_block(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Slices are encoded independently, so a slice equal to an earlier one (a still frame repeated, the blank
        frames of an inpaint video) reuses its encoding: the same numbers, a fraction of the time."""
        encoded: list[tuple[torch.Tensor, torch.Tensor]] = []
        for a, b in slice_bounds(x.shape[2], self.mini_batch):
            part = x[:, :, a:b]
            done = next((z for seen, z in encoded if seen.shape == part.shape and torch.equal(seen, part)), None)
            encoded.append((part, self.encode_slice(part) if done is None else done))
        return torch.cat([z for _, z in encoded], 2)


class Decoder(nn.Module):
    """Latents -> frames, one chunk (with its neighbours as context for ``conv_in`` and the mid block) at a time."""

    def __init__(self, latent_channels: int, out_channels: int, widths: list[int], block_types: Sequence[str],
                 layers: int, groups: int, act_fn: str, mid_heads: int, mini_batch: int):
        super().__init__()
        self.mini_batch = mini_batch
        rev = widths[::-1]
        self.conv_in = _conv3(latent_channels, rev[0])
        self.mid_block = MidBlock3D(rev[0], layers, mid_heads, groups, act_fn)
        self.up_blocks = nn.ModuleList(
            UpBlock3D(rev[max(i - 1, 0)], rev[i], layers + 1, groups, act_fn,
                      upsample=i < len(rev) - 1, double_time=UP_BLOCK_TYPES[kind])
            for i, kind in enumerate(block_types)
        )
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=NORM_EPS)
        self.conv_act = get_activation(act_fn)
        self.conv_out = _conv3(widths[0], out_channels)

    def windows(self, num_latents: int) -> Iterator[tuple[slice, slice, bool]]:
        """Per chunk: the latents it reads, which of the mid block's frames are its own, and whether time grows.

        As in the reference, the first multi-latent chunk has no left context (even after a lone first
        latent), and a chunk's right context is the next ``mini_batch`` latents, clipped at the end.
        """
        m, lone_first = self.mini_batch, num_latents % 2
        for k, (a, b) in enumerate(slice_bounds(num_latents, m)):
            if k == 0 and lone_first:
                yield slice(0, 1), slice(0, 1), False
                continue
            start = a - m if k > lone_first else a
            yield slice(start, min(a + 2 * m, num_latents)), slice(a - start, b - start), True

    def decode_window(self, z: torch.Tensor, own: slice, expand_time: bool) -> torch.Tensor:
        with one_frame_guard(z, self.conv_in.weight.dtype):
            x = self.mid_block(self.conv_in(z))[:, :, own]
            for block in self.up_blocks:
                x = block(x, expand_time)
            return self.conv_out(self.conv_act(self.conv_norm_out(x)))


def one_frame_guard(x: torch.Tensor, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """oneDNN's bf16/fp16 Conv3d on a CPU miscomputes one-frame inputs with some channel counts (RGB's 3 among
    them: errors of 100 % and NaN, torch 2.9.1 and 2.13; tests/test_demo.py), so a one-frame slice or chunk in
    reduced precision on a CPU runs on ATen's own kernels (one frame: little time lost)."""
    reduced = dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled(x.device.type)
    if x.shape[2] == 1 and x.device.type == "cpu" and reduced:
        return torch.backends.mkldnn.flags(enabled=False)
    return contextlib.nullcontext()


def slice_bounds(num_frames: int, chunk: int) -> list[tuple[int, int]]:
    """The V3 slices of a clip: an odd clip's first frame alone, then consecutive runs of ``chunk`` frames."""
    first = num_frames % 2
    return [(0, 1)] * first + [(i, min(i + chunk, num_frames)) for i in range(first, num_frames, chunk)]


def _blend_into(prev: torch.Tensor, tile: torch.Tensor, extent: int, dim: int) -> None:
    """Cross-fade ``prev``'s trailing ``extent`` rows/columns into ``tile``'s leading ones, in place."""
    extent = min(prev.shape[dim], tile.shape[dim], extent)
    w = (torch.arange(extent, dtype=torch.float64) / extent).to(tile)
    w = w.view(-1, 1) if dim == 3 else w
    head = tile.narrow(dim, 0, extent)
    head.copy_(prev.narrow(dim, prev.shape[dim] - extent, extent) * (1 - w) + head * w)


class AutoencoderKLMagvit(ModelMixin, ConfigMixin):
    """The EasyAnimateV3 MagViT slice VAE; state-dict keys and results match the reference (commit 616a354).

    Defaults are the released V3 VAE's config. ``num_attention_heads`` only feeds block types V3 does not
    use and is accepted for config compatibility; unsupported values of the other keys raise. The VAE stays
    frozen in DiTalker, so encoding and decoding run without autograd. ``decode`` takes unscaled latents:
    multiplying by ``config.scaling_factor`` is the diffusion side's job, as upstream.
    """

    tile_sample_min_size = 384
    tile_overlap_factor = 0.25

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 4, 4),
        use_gc_blocks: Sequence[bool] | None = None,
        down_block_types: Sequence[str] = ("SpatialDownBlock3D",) + ("SpatialTemporalDownBlock3D",) * 3,
        up_block_types: Sequence[str] = ("SpatialUpBlock3D",) + ("SpatialTemporalUpBlock3D",) * 3,
        mid_block_type: str = "MidBlock3D",
        mid_block_use_attention: bool = True,
        mid_block_attention_type: str = "3d",
        mid_block_num_attention_heads: int = 1,
        layers_per_block: int = 2,
        act_fn: str = "silu",
        num_attention_heads: int = 1,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        scaling_factor: float = 0.18215,
        slice_compression_vae: bool = True,
        use_tiling: bool = True,
        mini_batch_encoder: int = 8,
        mini_batch_decoder: int = 2,
    ):
        super().__init__()
        _check_config(ch_mult, use_gc_blocks, down_block_types, up_block_types, mid_block_type,
                      mid_block_use_attention, mid_block_attention_type, slice_compression_vae)
        widths = [ch * m for m in ch_mult]
        shared = dict(widths=widths, layers=layers_per_block, groups=norm_num_groups, act_fn=act_fn,
                      mid_heads=mid_block_num_attention_heads)
        self.encoder = Encoder(in_channels, latent_channels, block_types=down_block_types,
                               mini_batch=mini_batch_encoder, **shared)
        self.decoder = Decoder(latent_channels, out_channels, block_types=up_block_types,
                               mini_batch=mini_batch_decoder, **shared)
        self.quant_conv = nn.Conv3d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(latent_channels, latent_channels, 1)
        self.use_tiling = use_tiling
        self.tile_latent_min_size = int(self.tile_sample_min_size / 2 ** (len(ch_mult) - 1))

    @classmethod
    def from_local(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> AutoencoderKLMagvit:
        """Load the released ``vae/`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) as is."""
        folder = Path(folder)
        files = [folder / "config.json", folder / "diffusion_pytorch_model.safetensors"]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise MissingModelError("EasyAnimateV3 VAE", missing, folder, WEIGHTS_SOURCE)
        with init_empty_weights():
            model = cls.from_config(json.loads(files[0].read_text()))
        model.load_state_dict(load_file(files[1]), strict=True, assign=True)
        return nn.Module.to(model, dtype).eval()  # ModelMixin.to warns on every dtype cast (diffusers 0.42)

    def _tiled(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int,
               out_tile: int) -> torch.Tensor:
        """Run ``fn`` on overlapping square tiles and cross-fade them, exactly as the reference tiles."""
        stride = int(tile * (1 - self.tile_overlap_factor))
        extent = int(out_tile * self.tile_overlap_factor)
        keep = out_tile - extent
        rows = [[fn(x[:, :, :, i:i + tile, j:j + tile]) for j in range(0, x.shape[4], stride)]
                for i in range(0, x.shape[3], stride)]
        for i, row in enumerate(rows):
            for j, t in enumerate(row):
                if i > 0:
                    _blend_into(rows[i - 1][j], t, extent, dim=3)
                if j > 0:
                    _blend_into(row[j - 1], t, extent, dim=4)
        return torch.cat([torch.cat([t[:, :, :, :keep, :keep] for t in row], 4) for row in rows], 3)

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """Frames (B, 3, F, H, W) in [-1, 1] -> posterior over (B, C, 1 + (F - 1) // 4 or F // 4, H/8, W/8).

        Runs with autograd when the caller allows it (the sync loss trains through the decoder); inference
        callers wrap it in ``torch.no_grad()``.
        """
        if x.ndim != 5:
            raise InputError(f"VAE encode: video must be (B, C, F, H, W), got shape {tuple(x.shape)}; "
                             "add the missing batch or frame axis.")

        def run(part: torch.Tensor) -> torch.Tensor:
            return self.quant_conv(self.encoder(part))

        x = x.to(self.dtype)
        if self.use_tiling and max(x.shape[-2:]) > self.tile_sample_min_size:
            moments = self._tiled(run, x, self.tile_sample_min_size, self.tile_latent_min_size)
        else:
            moments = run(x)
        return DiagonalGaussianDistribution(moments)

    def decode_stream(self, z: torch.Tensor, start: int = 0) -> Iterator[torch.Tensor]:
        """Yield the decoded frames (B, 3, f, H, W) chunk by chunk; only the latents are kept between chunks.

        ``start``: skip the chunks whose own latents all lie before latent ``start`` (the others are decoded
        exactly as in the full decode: a chunk reads its context latents, not its neighbours' outputs)."""
        if z.ndim != 5:
            raise InputError(f"VAE decode: latents must be (B, C, F, H, W), got shape {tuple(z.shape)}; "
                             "add the missing batch or frame axis.")
        z = self.post_quant_conv(z.to(self.dtype))
        tiled = self.use_tiling and max(z.shape[-2:]) > self.tile_latent_min_size
        for window, own, expand_time in self.decoder.windows(z.shape[2]):
            if window.start + own.stop <= start:
                continue

            def run(part: torch.Tensor) -> torch.Tensor:
                return self.decoder.decode_window(part[:, :, window], own, expand_time)

            yield self._tiled(run, z, self.tile_latent_min_size, self.tile_sample_min_size) if tiled else run(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (unscaled) -> frames (B, 3, F, H, W), the concatenation of ``decode_stream``."""
        return torch.cat(list(self.decode_stream(z)), dim=2)


def _check_config(ch_mult: Sequence[int], use_gc_blocks: Sequence[bool] | None, down_block_types: Sequence[str],
                  up_block_types: Sequence[str], mid_block_type: str, mid_block_use_attention: bool,
                  mid_block_attention_type: str, slice_compression_vae: bool) -> None:
    """Refuse configs that need reference features this V3-only port leaves out, instead of mis-building them."""
    problems = []
    if not slice_compression_vae:
        problems.append("slice_compression_vae must be true (only the V3 slice VAE is ported)")
    if use_gc_blocks is not None and any(use_gc_blocks):
        problems.append("use_gc_blocks is not supported")
    if mid_block_type != "MidBlock3D" or not mid_block_use_attention or mid_block_attention_type != "3d":
        problems.append("the mid block must be MidBlock3D with 3d attention")
    for name, types, known in (("down_block_types", down_block_types, DOWN_BLOCK_TYPES),
                               ("up_block_types", up_block_types, UP_BLOCK_TYPES)):
        if isinstance(types, str) or len(types) != len(ch_mult) or any(t not in known for t in types):
            problems.append(f"{name} must list one of {sorted(known)} per ch_mult entry, got {types!r}")
    if problems:
        raise InputError("Unsupported MagViT VAE config: " + "; ".join(problems) + ".")
