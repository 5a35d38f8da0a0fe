"""Sampler, decode and run-estimate nodes."""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import comfy.model_management as mm
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..ditalker_core.errors import ConditionError, InputError
from ..ditalker_core.pipeline import (Conditions, DiTalkerPipeline, Guidance, SamplingOptions,
                                      decode_video, estimate_run)
from ..ditalker_core.pipeline.preview import LatentRGB, fit_latent_rgb, frame_strip
from ..ditalker_core.pipeline.scheduling import SCHEDULERS
from ..ditalker_core.pipeline.speed import Speedups
from ..ditalker_core.pipeline.windows import check_overlap
from .loaders import ManagedModel
from .validation import check
from .sockets import (AUDIO_FEATURES, EMOTION, LATENTS, MODEL, PHONEMES, POSE, REFERENCE, SPEED, STYLE, VAE,
                      AudioCondition, EmotionCondition, LatentVideo, ReferenceCondition, StyleCondition)

log = logging.getLogger("ditalker")


def _pipeline(model: ManagedModel, vae: ManagedModel) -> DiTalkerPipeline:
    return DiTalkerPipeline(model.get(), vae.get())


class DiTalkerLatentFormat:
    """What ``latent_preview.get_previewer`` reads from a latent format. The Latent2RGB map is fitted to this VAE
    on the reference (``ditalker_core.pipeline.preview``) when the previewer first asks for it, so a run with
    previews off never pays for the fit; there is no TAESD for MagViT latents."""

    taesd_decoder_name = None

    def __init__(self, vae: torch.nn.Module, reference: torch.Tensor):
        self.vae, self.reference, self._fit = vae, reference, None
        self.latent_channels = vae.config.latent_channels

    @property
    def fit(self) -> LatentRGB:
        if self._fit is None:
            self._fit = fit_latent_rgb(self.vae, self.reference[None])
        return self._fit

    @property
    def latent_rgb_factors(self) -> list[list[float]]:
        return self.fit.factors.tolist()

    @property
    def latent_rgb_factors_bias(self) -> list[float]:
        return self.fit.bias.tolist()


class LivePreview:
    """Per step, ComfyUI's previewer (the user's preview method) on a strip of the current window's denoised
    estimate, sent with the progress: the pipeline calls ``estimate`` then ``progress`` every step."""

    def __init__(self, vae: torch.nn.Module, reference: torch.Tensor, total: int):
        self.bar = comfy.utils.ProgressBar(total)
        self.previewer = latent_preview.get_previewer(mm.get_torch_device(), DiTalkerLatentFormat(vae, reference))
        self.latest: Optional[torch.Tensor] = None

    def estimate(self, x0: torch.Tensor) -> None:
        self.latest = x0

    def progress(self, done: int, total: int) -> None:
        image = None
        if self.previewer is not None and self.latest is not None:
            image = self.previewer.decode_latent_to_preview_image("JPEG", frame_strip(self.latest))
        self.bar.update_absolute(done, total, image)


def _conditions(reference: ReferenceCondition, audio: AudioCondition, phonemes: Optional[torch.Tensor],
                style: Optional[StyleCondition], emotion: Optional[EmotionCondition], pose: Optional[torch.Tensor]
                ) -> Conditions:
    return Conditions(
        reference=reference.image, num_frames=audio.num_frames, audio_features=audio.features,
        phoneme_ids=phonemes, style_clip=None if style is None else style.clip,
        style_pad_mask=None if style is None else style.pad_mask, pose_video=pose,
        emotion_tokens=None if emotion is None else emotion.tokens,
        emotion_mask=None if emotion is None else emotion.mask,
        negative_tokens=None if emotion is None else emotion.negative_tokens,
        negative_mask=None if emotion is None else emotion.negative_mask,
        clip_embedding=reference.clip_embedding,
    )


# What the user reconnects when the pipeline's check finds a condition that does not fit (by Conditions field).
RECONNECT = {
    "phoneme_ids": ("phonemes", "connect DiTalker Phonemes to the same DiTalker Audio Encode as the sampler"),
    "pose_video": ("pose", "connect DiTalker Pose to the same DiTalker Reference and Audio Encode as the sampler"),
    "style_clip": ("style", "set style_length of DiTalker Style Encode to {style_max_len}"),
    "audio_features": ("audio_features", "pick the Whisper encoder this model was trained with in DiTalker Audio "
                                         "Encode"),
}


def _check(pipeline: DiTalkerPipeline, conditions: Conditions, options: SamplingOptions) -> None:
    """The pipeline's own check, its error reworded with the sampler's inputs and the node to reconnect."""
    try:
        pipeline.check_inputs(conditions, options)
    except ConditionError as error:
        name, fix = RECONNECT[error.field]
        raise InputError(f"{name} does not fit: {error.problem}; "
                         f"{fix.format(**pipeline.transformer.config)}") from error


def _model_inputs() -> list[io.Input]:
    return [
        MODEL.Input("model", tooltip="From Load DiTalker Model."),
        VAE.Input("vae", tooltip="From Load DiTalker VAE."),
        REFERENCE.Input("reference", tooltip="From DiTalker Reference: the portrait and the video size."),
        AUDIO_FEATURES.Input("audio_features", tooltip="From DiTalker Audio Encode: the driving speech and the "
                                                       "frame count."),
    ]


def _sampling_inputs() -> list[io.Input]:
    return [
        io.Int.Input("steps", default=25, min=1, max=200, tooltip="Denoising steps per window (official: 25)."),
        io.Combo.Input("scheduler", options=sorted(SCHEDULERS), default="dpm++", tooltip="Diffusers scheduler."),
        io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Noise seed; the same seed on the same device gives the same video."),
        io.Float.Input("audio_guidance", default=7.0, min=1.0, max=20.0, step=0.1,
                       tooltip="Guidance weight of the audio (lip sync). Equal weights = the official single-scale "
                               "guidance (7.0)."),
        io.Float.Input("style_guidance", default=7.0, min=1.0, max=20.0, step=0.1,
                       tooltip="Guidance weight of the style (3DMM style clip, phonemes, pose)."),
        io.Float.Input("emotion_guidance", default=7.0, min=1.0, max=20.0, step=0.1,
                       tooltip="Guidance weight of the emotion prompt and CLIP reference."),
        io.Int.Input("overlap", default=8, min=0, max=56, step=8,
                     tooltip="Frames shared by consecutive windows of long audio (a multiple of 8, less than the "
                             "model's clip length); each window continues the previous one over them."),
        io.Float.Input("denoise", default=1.0, min=0.05, max=1.0, step=0.05,
                       tooltip="Below 1, start from the noised still portrait instead of pure noise."),
        io.Float.Input("clip_apply_ratio", default=0.5, min=0.0, max=1.0, step=0.05,
                       tooltip="Fraction of the last steps that see the CLIP reference (official: 0.5)."),
        SPEED.Input("speed", optional=True,
                    tooltip="From DiTalker Speed: step cache and attention kernel (unconnected: every step "
                            "computed, native attention)."),
    ]


def _validate_sampling(cls: type[io.ComfyNode], scheduler: str, audio_guidance: float, style_guidance: float,
                       emotion_guidance: float, overlap: int, denoise: float, clip_apply_ratio: float) -> bool | str:
    """The sampling widgets at /prompt (the sampler's and the estimate's ``validate_inputs``)."""
    values = dict(scheduler=scheduler, audio_guidance=audio_guidance, style_guidance=style_guidance,
                  emotion_guidance=emotion_guidance, overlap=overlap, denoise=denoise,
                  clip_apply_ratio=clip_apply_ratio)
    return check(cls, values, [] if overlap is None else [lambda: check_overlap(overlap)])


def _options(steps: int, scheduler: str, seed: int, audio_guidance: float, style_guidance: float,
             emotion_guidance: float, overlap: int, denoise: float, clip_apply_ratio: float,
             speed: Optional[Speedups] = None) -> SamplingOptions:
    return SamplingOptions(steps=steps, scheduler=scheduler, seed=seed, denoise=denoise, overlap=overlap,
                           guidance=Guidance(audio_guidance, style_guidance, emotion_guidance),
                           clip_apply_ratio=clip_apply_ratio, speed=speed or Speedups())


class DiTalkerSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerSampler", display_name="DiTalker Sampler", category="DiTalker",
            description="Animates the reference from the audio. Audio longer than the model's clip is generated "
                        "in overlapping windows, each continuing the previous one. Unconnected conditions use the "
                        "model's null condition.",
            inputs=[
                *_model_inputs(), *_sampling_inputs(),
                PHONEMES.Input("phonemes", optional=True, tooltip="From DiTalker Phonemes (same audio features)."),
                STYLE.Input("style", optional=True, tooltip="From DiTalker Style Encode: the speaking style."),
                EMOTION.Input("emotion", optional=True, tooltip="From DiTalker Emotion: the expression prompt."),
                POSE.Input("pose", optional=True, tooltip="From DiTalker Pose (same reference and audio features): "
                                                          "head pose and motion."),
            ],
            outputs=[LATENTS.Output(display_name="latents",
                                    tooltip="Denoised latents of every window (with the driving audio), for "
                                            "DiTalker Decode.")],
        )

    validate_inputs = classmethod(_validate_sampling)

    @classmethod
    def execute(cls, model: ManagedModel, vae: ManagedModel, reference: ReferenceCondition,
                audio_features: AudioCondition, phonemes: Optional[torch.Tensor] = None,
                style: Optional[StyleCondition] = None, emotion: Optional[EmotionCondition] = None,
                pose: Optional[torch.Tensor] = None, **sampling: Any) -> io.NodeOutput:
        pipeline = _pipeline(model, vae)
        conditions = _conditions(reference, audio_features, phonemes, style, emotion, pose)
        options = _options(**sampling)
        _check(pipeline, conditions, options)
        live = LivePreview(pipeline.vae, reference.image, pipeline.total_steps(conditions.num_frames, options))
        video = pipeline.sample(conditions, options, live.progress,
                                live.estimate if live.previewer is not None else None)
        return io.NodeOutput(LatentVideo(video, audio_features))


def _trim_audio(audio: dict[str, Any], frames: int, fps: float) -> dict[str, Any]:
    """The original waveform (no resampled copy), cut or silence-padded to exactly the video's duration."""
    waveform, rate = audio["waveform"], int(audio["sample_rate"])
    samples = math.ceil(frames * rate / fps)
    waveform = waveform[..., :samples]
    if waveform.shape[-1] < samples:
        waveform = torch.nn.functional.pad(waveform, (0, samples - waveform.shape[-1]))
    return {"waveform": waveform.cpu(), "sample_rate": rate}


class DiTalkerDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerDecode", display_name="DiTalker Decode", category="DiTalker",
            description="Decodes the windows' stitched latents as one sequence, chunk by chunk (memory does not "
                        "grow with the length), and returns the driving audio trimmed to the video, ready for "
                        "CreateVideo.",
            inputs=[VAE.Input("vae", tooltip="The VAE the sampler used."),
                    LATENTS.Input("latents", tooltip="From DiTalker Sampler.")],
            outputs=[io.Image.Output(display_name="frames",
                                     tooltip="The video frames, exactly ceil(audio duration x fps) of them."),
                     io.Audio.Output(display_name="audio",
                                     tooltip="The driving audio, cut or padded to the video length: for CreateVideo."),
                     io.Float.Output(display_name="fps",
                                     tooltip="Frame rate of the video (from DiTalker Audio Encode): for CreateVideo.")],
        )

    @classmethod
    def execute(cls, vae: ManagedModel, latents: LatentVideo) -> io.NodeOutput:
        video = latents.video
        bar = comfy.utils.ProgressBar(len(video.windows))
        frames = torch.cat([chunk.to(mm.intermediate_device()) for chunk in
                            decode_video(vae.get(), video, lambda done, total: bar.update_absolute(done, total))])
        audio = latents.audio
        return io.NodeOutput(frames, _trim_audio(audio.audio, frames.shape[0], audio.fps), audio.fps)


class DiTalkerEstimate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerEstimate", display_name="DiTalker Run Estimate", category="DiTalker",
            description="Measures one guided step and one window decode at the real size and reports the time and "
                        "peak memory the sampler + decode will need (peak memory does not grow with audio length).",
            inputs=[*_model_inputs(), *_sampling_inputs()],
            outputs=[io.String.Output(display_name="estimate",
                                      tooltip="Estimated time and peak memory of the sampler + decode of this graph.")],
            is_output_node=True,
        )

    validate_inputs = classmethod(_validate_sampling)

    @classmethod
    def execute(cls, model: ManagedModel, vae: ManagedModel, reference: ReferenceCondition,
                audio_features: AudioCondition, **sampling: Any) -> io.NodeOutput:
        _, height, width = reference.image.shape
        estimate = estimate_run(_pipeline(model, vae), audio_features.num_frames, height, width,
                                _options(**sampling))
        log.info("DiTalker run estimate: %s", estimate.summary())
        return io.NodeOutput(estimate.summary())
