"""The DiTalker sampling pipeline: any audio length, multi-condition guidance, streamed output.

``DiTalkerPipeline.stream`` yields the video in order, window by window, so peak memory does not grow with the
audio length; ``__call__`` collects it. Every denoising step calls ``preview(x0)`` (if given: the current window's
denoised estimate) and then ``progress(done, total)``; an exception raised there (e.g. a user cancel) stops the
run between steps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ConditionError, InputError
from ..extract.phonemes import default_table
from ..models.transformer import DiTalkerTransformer3DModel
from .conditioning import inpaint_latents, phoneme_windows, slice_frames
from .guidance import Guidance
from .scheduling import denoised_estimate, make_scheduler
from .speed import Speedups, applied, computed_in, mag_cache
from .windows import Window, plan_windows

Progress = Callable[[int, int], None]
Preview = Callable[[torch.Tensor], None]  # (1, C, f, h, w) scaled latents of the denoised estimate


@dataclass
class Conditions:
    """Everything one video is generated from. Per-frame conditions are at the video frame rate.

    ``reference`` (3, H, W) in [-1, 1] at the output size (``conditioning.prepare_reference``). Any other field may
    be None: the model's null condition is used for it.
    """

    reference: torch.Tensor
    num_frames: int
    audio_features: Optional[torch.Tensor] = None  # (N, 50, d) Whisper windows
    phoneme_ids: Optional[torch.Tensor] = None  # (N,) ids
    style_clip: Optional[torch.Tensor] = None  # (L, 64) 3DMM expression coefficients
    style_pad_mask: Optional[torch.Tensor] = None  # (L,) True = padding
    pose_video: Optional[torch.Tensor] = None  # (3, N, H/2, W/2) DWPose frames in [0, 1]
    emotion_tokens: Optional[torch.Tensor] = None  # (L, C) T5 tokens of the emotion prompt
    emotion_mask: Optional[torch.Tensor] = None  # (L,)
    negative_tokens: Optional[torch.Tensor] = None  # (L, C) T5 tokens of the negative prompt
    negative_mask: Optional[torch.Tensor] = None
    clip_embedding: Optional[torch.Tensor] = None  # (768,) CLIP image embedding of the reference


SEAMS = ("pinned", "crossfade")  # how consecutive windows join over their shared frames


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample; frozen, so one options object can be shared by nodes and runs without one changing another."""

    steps: int = 25
    scheduler: str = "dpm++"
    guidance: Guidance = field(default_factory=Guidance)
    seed: int = 42
    denoise: float = 1.0
    overlap: int = 8  # video frames shared by consecutive windows (a multiple of 8: whole decoder chunks)
    seams: str = "pinned"  # how windows join over the overlap: "pinned" or "crossfade" (see windows.py)
    clip_apply_ratio: float = 0.5  # CLIP tokens are zeroed for the first (1 - ratio) of the steps (official)
    branch_batch: Optional[int] = None  # guidance branches per forward; None = all at once
    speed: Speedups = field(default_factory=Speedups)  # step cache and attention kernel for this run


@dataclass
class SampledVideo:
    """Denoised latents of every window (scaled, on the CPU) and the plan that places them in the video."""

    latents: list[torch.Tensor]
    windows: list[Window]
    num_frames: int
    seams: str = "pinned"


class DiTalkerPipeline:
    def __init__(self, transformer: DiTalkerTransformer3DModel, vae: torch.nn.Module):
        self.transformer = transformer
        self.vae = vae

    @property
    def window_frames(self) -> int:
        return self.transformer.config.audio_frames

    def plan(self, num_frames: int, overlap: int) -> list[Window]:
        return plan_windows(num_frames, self.window_frames, overlap)

    def total_steps(self, num_frames: int, options: SamplingOptions) -> int:
        return len(self.plan(num_frames, options.overlap)) * self.steps_run(options)

    @staticmethod
    def steps_run(options: SamplingOptions) -> int:
        """Steps each window runs (fewer than ``steps`` below denoise 1)."""
        return max(1, min(options.steps, round(options.steps * options.denoise)))

    def check_inputs(self, conditions: Conditions, options: SamplingOptions) -> None:
        """The one check of a run's inputs (as diffusers' ``check_inputs``): conditions that do not fit each other
        or this model raise a ConditionError naming the field; the nodes reword it with their inputs."""
        cfg, n = self.transformer.config, conditions.num_frames
        if n < 1:
            raise InputError("the audio is empty (0 video frames); give audio of at least one frame")
        _, height, width = conditions.reference.shape
        if height % 16 or width % 16:
            raise InputError(f"reference is {height}x{width}: prepare it with prepare_reference (multiples of 16)")
        for name, value, axis in (("audio_features", conditions.audio_features, 0),
                                  ("phoneme_ids", conditions.phoneme_ids, 0),
                                  ("pose_video", conditions.pose_video, 1)):
            if value is not None and value.shape[axis] != n:
                raise ConditionError(name, f"{name} covers {value.shape[axis]} frames but the audio gives {n}",
                                     "extract it from the same audio/video at the same fps")
        if conditions.pose_video is not None and tuple(conditions.pose_video.shape[2:]) != (height // 2, width // 2):
            raise ConditionError("pose_video", f"pose_video frames are {tuple(conditions.pose_video.shape[2:])} but "
                                 f"this video needs half its size, {(height // 2, width // 2)}",
                                 "render the pose at half the reference's size")
        if conditions.audio_features is not None and conditions.audio_features.shape[1:] != (
                cfg.audio_window, cfg.audio_feature_dim):
            raise ConditionError("audio_features", f"audio_features windows are "
                                 f"{tuple(conditions.audio_features.shape[1:])}, the model takes "
                                 f"({cfg.audio_window}, {cfg.audio_feature_dim})", "use the matching Whisper encoder")
        if conditions.style_clip is not None and conditions.style_clip.shape[0] > cfg.style_max_len:
            raise ConditionError("style_clip", f"style_clip holds {conditions.style_clip.shape[0]} frames but this "
                                 f"model reads at most {cfg.style_max_len}",
                                 f"cut it to {cfg.style_max_len} (make_style_clip)")
        if not 0 < options.denoise <= 1:
            raise InputError(f"denoise must be in (0, 1], got {options.denoise}")
        if options.seams not in SEAMS:
            raise InputError(f"seams is {options.seams!r}: use one of {', '.join(SEAMS)}")

    # ------------------------------------------------------------------------------------------------------
    def branch_inputs(self, conditions: Conditions, window: Window, options: SamplingOptions,
                      clip_on: bool) -> dict[str, torch.Tensor]:
        """Model inputs for every guidance branch, stacked on the batch axis (nulls where a branch lacks a group)."""
        model, cfg = self.transformer, self.transformer.config
        device, dtype = model.device, model.dtype
        start, end = window.start, window.end
        branches = options.guidance.branches()
        count = len(branches)

        def pick(group: str, value: Optional[torch.Tensor], null: torch.Tensor) -> torch.Tensor:
            value = null if value is None else value.to(device=device, dtype=null.dtype)
            return torch.stack([value if group in b else null for b in branches])

        audio = slice_frames(conditions.audio_features, start, end, 0.0)
        null_audio = torch.zeros(cfg.audio_frames, cfg.audio_window, cfg.audio_feature_dim, device=device,
                                 dtype=dtype)
        # Windows over the whole sequence, then sliced: a window border must see its neighbours' phonemes.
        phonemes = None if conditions.phoneme_ids is None else slice_frames(
            phoneme_windows(conditions.phoneme_ids.cpu(), win=cfg.phoneme_window // 2), start, end,
            default_table().padding)
        null_phonemes = torch.zeros(cfg.audio_frames, cfg.phoneme_window, device=device, dtype=torch.long)
        style = conditions.style_clip
        null_style = torch.zeros(cfg.style_max_len if style is None else style.shape[0], cfg.exp_dim,
                                 device=device, dtype=dtype)
        height, width = conditions.reference.shape[1:]
        pose = slice_frames(conditions.pose_video, start, end, "edge", axis=1)
        null_pose = torch.zeros(3, cfg.audio_frames, height // 2, width // 2, device=device, dtype=dtype)

        text, text_mask = conditions.emotion_tokens, conditions.emotion_mask
        negative, negative_mask = conditions.negative_tokens, conditions.negative_mask
        length = max(t.shape[0] for t in (text, negative, torch.zeros(1)) if t is not None)

        def padded(tokens: Optional[torch.Tensor], mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            out = torch.zeros(length, cfg.caption_channels, device=device, dtype=dtype)
            keep = torch.zeros(length, device=device)
            if tokens is not None:
                out[: tokens.shape[0]] = tokens.to(device, dtype)
                keep[: tokens.shape[0]] = 1 if mask is None else mask.to(device).float()
            return out, keep

        text_on, text_on_mask = padded(text, text_mask)
        text_off, text_off_mask = padded(negative, negative_mask)
        clip = conditions.clip_embedding
        clip_value = torch.zeros(cfg.clip_embed_dim, device=device, dtype=dtype) if clip is None or not clip_on \
            else clip.to(device, dtype).reshape(-1)
        clip_mask = torch.full((cfg.clip_tokens,), float(clip is not None and clip_on), device=device)
        null_clip, null_clip_mask = torch.zeros_like(clip_value), torch.zeros_like(clip_mask)

        return dict(
            audio_encoder_hidden_states=pick("audio", audio, null_audio),
            phoneme_win=pick("style", phonemes, null_phonemes),
            style_clip=pick("style", style, null_style),
            pad_mask=None if conditions.style_pad_mask is None else
            conditions.style_pad_mask.to(device).bool()[None].expand(count, -1),
            pixel_values_pose=pick("style", pose, null_pose),
            encoder_hidden_states=torch.stack([text_on if "emotion" in b else text_off for b in branches]),
            encoder_attention_mask=torch.stack([text_on_mask if "emotion" in b else text_off_mask
                                                for b in branches]),
            clip_encoder_hidden_states=pick("emotion", clip_value, null_clip),
            clip_attention_mask=pick("emotion", clip_mask, null_clip_mask),
        )

    def predict(self, latents: torch.Tensor, t: torch.Tensor, inpaint: torch.Tensor,
                 inputs: dict[str, torch.Tensor], options: SamplingOptions, step: int = 0,
                 steps: Optional[int] = None) -> torch.Tensor:
        """Guided noise prediction for one (1, C, f, h, w) latent; each forward (a batch of guidance branches) in
        its own cache context, so a step cache (``transformer.enable_cache``) compares like with like."""
        count = len(options.guidance.branches())
        chunk = options.branch_batch or count
        outputs = []
        for first in range(0, count, chunk):
            part = slice(first, min(count, first + chunk))
            size = part.stop - part.start
            batch = {k: (v[part] if v is not None else None) for k, v in inputs.items()}
            with self.transformer.cache_context(f"branches {first}", step_index=step,
                                                num_inference_steps=steps or options.steps, timestep=t), \
                    computed_in(latents.device, options.speed.precision):
                sample = self.transformer(latents.expand(size, -1, -1, -1, -1), t.expand(size),
                                          inpaint_latents=inpaint.expand(size, -1, -1, -1, -1), **batch).sample
            outputs.append(sample[:, : latents.shape[1]].to(latents.dtype))
        return options.guidance.combine(torch.cat(outputs)[:, None])

    @torch.no_grad()
    def _sample_window(self, conditions: Conditions, window: Window,
                       known: Optional[tuple[torch.Tensor, torch.Tensor]], options: SamplingOptions, index: int,
                       progress: Progress, done: int, total: int, preview: Optional[Preview] = None) -> torch.Tensor:
        """Denoise one window; returns its latents (1, C, f, h, w) (scaled).

        ``known``: the previous window's decoded frames and latents over this window's first ``window.known``
        frames (None for the first window, which starts from the reference frame).
        """
        device = self.transformer.device
        frames = window.end - window.start
        generator = torch.Generator().manual_seed(options.seed + index)
        reference = conditions.reference.to(device)
        known_video = reference[:, None] if known is None else known[0].to(device)
        known_count = 1 if known is None else window.known
        inpaint = inpaint_latents(self.vae, known_video, known_count, frames, generator).to(self.transformer.dtype)
        _, _, latent_frames, height, width = inpaint.shape

        scheduler = make_scheduler(options.scheduler)
        scheduler.set_timesteps(options.steps, device=device)
        timesteps = scheduler.timesteps[options.steps - self.steps_run(options):]
        noise = randn_tensor((1, self.vae.config.latent_channels, latent_frames, height, width), generator=generator,
                             device=device, dtype=self.transformer.dtype)
        if options.denoise < 1.0:
            start = self.vae.encode(known_video[:, :1].expand(-1, frames, -1, -1)[None]).sample(generator)
            latents = scheduler.add_noise(start.to(noise) * self.vae.config.scaling_factor, noise, timesteps[:1])
        else:
            latents = noise * scheduler.init_noise_sigma
        # Continuation windows: the inpaint branch sees the known frames; with pinned seams their latents are also
        # pinned to the previous window's (noised to each step's level), so the window continues it exactly.
        pinned = 0 if known is None or options.seams != "pinned" else known[1].shape[2]
        known_latents = None if known is None else known[1].to(device, self.transformer.dtype)
        inputs = {clip_on: self.branch_inputs(conditions, window, options, clip_on) for clip_on in (False, True)}
        if self.transformer.is_cache_enabled:  # a window is a new denoising run: nothing cached carries over
            self.transformer._reset_stateful_cache()
        for step, t in enumerate(timesteps):
            clip_on = step >= len(timesteps) * (1 - options.clip_apply_ratio)
            model_input = scheduler.scale_model_input(latents, t)
            eps = self.predict(model_input, t.reshape(1), inpaint, inputs[clip_on], options, step, len(timesteps))
            if preview is not None:
                preview(denoised_estimate(scheduler, model_input, eps, t))
            latents = scheduler.step(eps, t, latents).prev_sample
            if pinned:
                following = timesteps[step + 1: step + 2]
                latents[:, :, :pinned] = known_latents if not len(following) else scheduler.add_noise(
                    known_latents, noise[:, :, :pinned], following)
            progress(done + step + 1, total)
        return latents

    def _decode_tail(self, latents: torch.Tensor, frames: int) -> torch.Tensor:
        """The last ``frames`` decoded frames of a window, decoding only the decoder chunks that hold them, from
        their latents plus one chunk of context (so they equal the full decode's frames)."""
        need = frames // 4 + self.vae.config.mini_batch_decoder
        need += need % 2  # keep the even-length slicing of the full window
        chunks = decode_latents(self.vae, latents[:, :, -need:], start=need - frames // 4)
        return torch.cat(list(chunks), dim=1)[:, -frames:]

    def _window_cache(self, options: SamplingOptions, steps: int) -> contextlib.AbstractContextManager:
        """MagCache, set up per window (see ``speed.mag_cache``); the other settings hold for the whole run."""
        if options.speed.cache != "mag":
            return contextlib.nullcontext()
        count = len(options.guidance.branches())
        calls = -(-count // (options.branch_batch or count))
        schedule = (options.scheduler, options.steps, options.denoise)
        return mag_cache(self.transformer, options.speed.threshold, schedule, steps, calls)

    def sample(self, conditions: Conditions, options: SamplingOptions = SamplingOptions(),
               progress: Progress = lambda done, total: None, preview: Optional[Preview] = None) -> SampledVideo:
        """Denoise every window; each window after the first starts from the previous one's decoded tail."""
        self.check_inputs(conditions, options)
        windows = self.plan(conditions.num_frames, options.overlap)
        steps = self.steps_run(options)
        latents: list[torch.Tensor] = []
        with applied(self.transformer, options.speed):
            for index, window in enumerate(windows):
                known = None
                if index and window.known:
                    previous_latents = latents[-1][:, :, -(window.known // 4):]
                    known = (self._decode_tail(latents[-1], window.known), previous_latents)
                with self._window_cache(options, steps):
                    result = self._sample_window(conditions, window, known, options, index, progress,
                                                 index * steps, len(windows) * steps, preview)
                latents.append(result.cpu())
        return SampledVideo(latents, windows, conditions.num_frames, options.seams)

    def decode(self, video: SampledVideo, progress: Progress = lambda done, total: None) -> Iterator[torch.Tensor]:
        return decode_video(self.vae, video, progress)

    def stream(self, conditions: Conditions, options: SamplingOptions = SamplingOptions(),
               progress: Progress = lambda done, total: None) -> Iterator[torch.Tensor]:
        """Sample, then decode window by window (see ``decode``)."""
        return self.decode(self.sample(conditions, options, progress))

    def __call__(self, conditions: Conditions, options: SamplingOptions = SamplingOptions(),
                 progress: Progress = lambda done, total: None) -> torch.Tensor:
        """The whole video (N, H, W, 3) in [0, 1]."""
        return torch.cat(list(self.stream(conditions, options, progress)))


@torch.no_grad()
def decode_latents(vae: torch.nn.Module, latents: torch.Tensor, start: int = 0) -> Iterator[torch.Tensor]:
    """(1, C, f, h, w) scaled latents -> chunks (3, F_i, H, W) in [-1, 1] on the CPU, decoded chunk by chunk
    (from the chunk holding latent ``start``)."""
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
    for chunk in vae.decode_stream(z, start):
        yield chunk[0].clamp(-1, 1).float().cpu()


def stitched_latents(video: SampledVideo) -> torch.Tensor:
    """One latent sequence for the whole video. Pinned seams: each window after the first adds the latents after its
    shared ones, which are identical to the previous window's last latents. Cross-faded seams: over the shared
    latents the previous window's weight falls linearly (k shared latents: k/(k+1), ..., 1/(k+1))."""
    parts = [video.latents[0]]
    for window, latents in zip(video.windows[1:], video.latents[1:]):
        shared = window.known // 4
        if video.seams == "crossfade" and shared:  # the previous part is that window's tail, longer than shared
            incoming = torch.arange(1, shared + 1, dtype=latents.dtype).reshape(1, 1, -1, 1, 1) / (shared + 1)
            previous = parts.pop()
            blend = previous[:, :, -shared:] * (1 - incoming) + latents[:, :, :shared] * incoming
            parts += [previous[:, :, :-shared], blend]
        parts.append(latents[:, :, shared:])
    return torch.cat(parts, dim=2)  # one copy, however many windows


@torch.no_grad()
def decode_video(vae: torch.nn.Module, video: SampledVideo, progress: Progress = lambda done, total: None
                 ) -> Iterator[torch.Tensor]:
    """Yield frames (F_i, H, W, 3) in [0, 1], in order, exactly ``video.num_frames`` in total.

    The stitched latents are decoded as one sequence, chunk by chunk (the VAE carries only its few context latents
    between chunks), so window borders get the same decoder context as any other frame and memory does not grow
    with the video length. Needs only the VAE.
    """
    latents = stitched_latents(video)
    chunks = len(list(vae.decoder.windows(latents.shape[2])))
    emitted = 0
    for index, chunk in enumerate(decode_latents(vae, latents)):
        out = chunk[:, : max(0, video.num_frames - emitted)]
        emitted += out.shape[1]
        progress(index + 1, chunks)
        if out.shape[1]:
            yield ((out.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
