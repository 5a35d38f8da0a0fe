"""Condition nodes: each parses its inputs, calls one extractor of ``ditalker_core.extract``, wraps the result."""

from __future__ import annotations

import os
from typing import Any, Optional

import comfy.model_management as mm
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io

from ..ditalker_core.errors import InputError
from ..ditalker_core.extract.audio import AudioEncoder
from ..ditalker_core.extract.emotion import EMOTIONS, T5PromptEncoder, build_prompt
from ..ditalker_core.extract.phonemes import LANGUAGES, Aligner, extract_phonemes, language_mismatch
from ..ditalker_core.extract.pose import (DWPose, adapter_frames, detect_to_frames, find_dwpose, keypoints_to_frames,
                                         look_like_renderings)
from ..ditalker_core.extract.reference import encode_reference, load_clip_vision
from ..ditalker_core.extract.style3dmm import StyleExtractor, load_expression, make_style_clip
from ..ditalker_core.pipeline import output_size, prepare_reference
from . import folders
from .notices import warn
from .validation import NONE, check
from .sockets import (AUDIO_FEATURES, EMOTION, PHONEMES, POSE, POSE_KEYPOINT, REFERENCE, STYLE, AudioCondition,
                      EmotionCondition, ReferenceCondition, StyleCondition)


def _typed(transcript: Optional[str]) -> None:
    """The Phonemes node aligns a typed transcript (None: linked, checked when it arrives)."""
    if transcript is not None and not transcript.strip():
        raise InputError("transcript is empty: type what is said in the audio (this node aligns the words you "
                         "type to the audio; it does not transcribe)")


def _frames_uint8(images: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE (N, H, W, C) float [0, 1] -> uint8 RGB frames."""
    return (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class DiTalkerAudioEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerAudioEncode", display_name="DiTalker Audio Encode", category="DiTalker/conditions",
            description="Whisper features for every video frame of the driving audio (any sample rate, mono or "
                        "stereo; resampled to 16 kHz mono). The frame count is ceil(duration x fps).",
            inputs=[
                io.Audio.Input("audio", tooltip="The driving speech."),
                io.Combo.Input("whisper", options=folders.model_dirs("audio_encoders"),
                               tooltip="A Whisper folder in models/audio_encoders (whisper-tiny, as DiTalker)."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Frame rate of the generated video (DiTalker was trained at 25)."),
            ],
            outputs=[AUDIO_FEATURES.Output(display_name="audio_features", tooltip="Whisper windows, one per video "
                                           "frame: for the Sampler, Phonemes and Pose."),
                     io.Int.Output(display_name="frame_count",
                                   tooltip="Video frames the audio gives: ceil(duration x fps).")],
        )

    @classmethod
    def validate_inputs(cls, whisper: str, fps: float) -> bool | str:
        return check(cls, dict(whisper=whisper, fps=fps))

    @classmethod
    def execute(cls, audio: dict[str, Any], whisper: str, fps: float) -> io.NodeOutput:
        if audio["waveform"].shape[-1] == 0:
            raise InputError("audio is empty (0 samples); connect a clip that contains the speech")
        encoder = AudioEncoder.from_pretrained(folders.resolve_input("whisper", whisper),
                                               device=mm.get_torch_device())
        features = encoder.encode(audio, fps=fps)
        condition = AudioCondition(features.windows.to(mm.intermediate_device()), features.num_frames, fps, audio)
        return io.NodeOutput(condition, features.num_frames)


class DiTalkerPhonemes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerPhonemes", display_name="DiTalker Phonemes", category="DiTalker/conditions",
            description="Per-frame phoneme ids for the style branch: the transcript is aligned to the audio with "
                        "WhisperX (a Wav2Vec2 CTC model), or spread evenly when no aligner is chosen.",
            inputs=[
                AUDIO_FEATURES.Input("audio_features", tooltip="From DiTalker Audio Encode (same frames and fps)."),
                io.String.Input("transcript", multiline=True, default="",
                                tooltip="What is said in the audio (required): its words are aligned to the audio."),
                io.Combo.Input("language", options=list(LANGUAGES), default="en", tooltip="Spoken language."),
                io.Combo.Input("aligner", options=[NONE] + folders.model_dirs("ditalker_align"), default=NONE,
                               tooltip="Wav2Vec2 CTC folder in models/ditalker/wav2vec2 for word timings."),
            ],
            outputs=[PHONEMES.Output(display_name="phonemes",
                                     tooltip="One phoneme id per video frame, for the Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, transcript: str, language: str, aligner: str) -> bool | str:
        return check(cls, dict(language=language, aligner=aligner), [lambda: _typed(transcript)])

    @classmethod
    def execute(cls, audio_features: AudioCondition, transcript: str, language: str, aligner: str
                ) -> io.NodeOutput:
        _typed(transcript)
        mismatch = language_mismatch(transcript, language)
        if mismatch:
            warn(mismatch)
        align = None if aligner == NONE else Aligner.from_pretrained(
            folders.resolve_input("aligner", aligner), language, mm.get_torch_device())
        result = extract_phonemes(audio_features.audio, transcript.strip(), language, align,
                                  fps=audio_features.fps, num_frames=audio_features.num_frames)
        return io.NodeOutput(torch.tensor(result.ids, dtype=torch.long))


class DiTalkerStyleEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerStyleEncode", display_name="DiTalker Style Encode", category="DiTalker/conditions",
            description="Speaking style from style frames (3DMM expression coefficients per frame, Deep3DFaceRecon) "
                        "or from a precomputed .mat/.txt/.npy file in the input folder.",
            inputs=[
                io.Combo.Input("recon_model", options=[NONE] + folders.files("ditalker_3dmm"), default=NONE,
                               tooltip="Deep3DFaceRecon epoch_20.pth in models/ditalker/3dmm (for style frames)."),
                io.Int.Input("style_length", default=256, min=1, max=4096,
                             tooltip="Frames the style encoder reads (the model's style_max_len); shorter clips "
                                     "are padded, longer ones cropped around the middle."),
                io.Image.Input("style_frames", optional=True, tooltip="Frames of a talking face (e.g. LoadVideo)."),
                io.String.Input("coefficients_file", optional=True, default="",
                                tooltip="Instead of frames: a .mat (coeff), .txt or .npy file in the input folder."),
            ],
            outputs=[STYLE.Output(display_name="style",
                                  tooltip="The speaking-style clip (3DMM expression coefficients), for the Sampler."),
                     io.Int.Output(display_name="frames_without_face",
                                   tooltip="Style frames where no face was found (filled from their neighbours); "
                                           "0 is best.")],
        )

    @classmethod
    def validate_inputs(cls, recon_model: str) -> bool | str:
        return check(cls, dict(recon_model=recon_model))

    @classmethod
    def execute(cls, recon_model: str, style_length: int, style_frames: Optional[torch.Tensor] = None,
                coefficients_file: str = "") -> io.NodeOutput:
        skipped = 0
        if coefficients_file.strip():
            expression = load_expression(os.path.join(folder_paths.get_input_directory(), coefficients_file.strip()))
        elif style_frames is not None:
            if recon_model == NONE:
                raise InputError("style_frames need a recon_model (Deep3DFaceRecon epoch_20.pth in "
                                 "models/ditalker/3dmm); or give a coefficients_file")
            extractor = StyleExtractor.from_pretrained(
                folders.resolve_input("recon_model", recon_model), mm.get_torch_device())
            result = extractor.extract(_frames_uint8(style_frames))
            expression, skipped = result.exp, len(result.skipped)
        else:
            raise InputError("DiTalker Style Encode needs style_frames or a coefficients_file")
        if len(expression) < style_length // 2:
            warn(f"the style clip has {len(expression)} frames and style_length is {style_length}: it is padded, so "
                 f"the style is read from little motion; give a longer style video or lower style_length")
        clip, pad_mask = make_style_clip(expression, style_length, "middle")
        return io.NodeOutput(StyleCondition(clip.float(), pad_mask), skipped)


def _custom(emotion: Optional[str], custom_prompt: Optional[str]) -> None:
    if emotion == "custom" and custom_prompt is not None and not custom_prompt.strip():
        raise InputError("emotion is 'custom' but custom_prompt is empty: write a prompt, or pick an emotion")


class DiTalkerEmotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerEmotion", display_name="DiTalker Emotion", category="DiTalker/conditions",
            description='T5 tokens of "This person is <emotion> and talks" (or your own prompt), cached on disk so '
                        "T5 is loaded only for prompts it has not seen.",
            inputs=[
                io.Combo.Input("emotion", options=list(EMOTIONS) + ["custom"], default="neutral",
                               tooltip="The expression; 'custom' uses the prompt below as written."),
                io.Combo.Input("subject", options=["person", "man", "woman"], default="person",
                               tooltip="Word used in the template prompt."),
                io.Combo.Input("t5", options=folders.model_dirs("text_encoders"),
                               tooltip="T5 folder in models/text_encoders (EasyAnimateV3's text_encoder + "
                                       "tokenizer)."),
                io.String.Input("custom_prompt", multiline=True, default="", tooltip="Used when emotion is custom."),
                io.String.Input("negative_prompt", default="", tooltip="The unconditional branch's prompt."),
            ],
            outputs=[EMOTION.Output(display_name="emotion",
                                    tooltip="The encoded emotion prompt (and negative prompt), for the Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, emotion: str, subject: str, t5: str, custom_prompt: str) -> bool | str:
        return check(cls, dict(emotion=emotion, subject=subject, t5=t5), [lambda: _custom(emotion, custom_prompt)])

    @classmethod
    def execute(cls, emotion: str, subject: str, t5: str, custom_prompt: str, negative_prompt: str
                ) -> io.NodeOutput:
        _custom(emotion, custom_prompt)
        prompt = custom_prompt.strip() if emotion == "custom" else build_prompt(emotion, subject)
        cache = os.path.join(folder_paths.get_user_directory(), "ditalker", "t5_cache")
        encoder = T5PromptEncoder(folders.resolve_input("t5", t5), cache_dir=cache,
                                  device=mm.text_encoder_device())
        if emotion != "custom" and custom_prompt.strip():
            warn(f"custom_prompt is ignored because emotion is '{emotion}': set emotion to custom to use it")
        positive = encoder(prompt)
        negative = encoder(negative_prompt)
        if bool(positive.mask.all()):
            warn(f"the emotion prompt reaches the text encoder's limit of {encoder.max_length} tokens, so words "
                 f"past it are dropped: shorten custom_prompt")
        encoder.unload()
        return io.NodeOutput(EmotionCondition(prompt, positive.embeds[0], positive.mask[0], negative.embeds[0],
                                              negative.mask[0]))


class DiTalkerReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerReference", display_name="DiTalker Reference", category="DiTalker/conditions",
            description="The portrait to animate: cropped to the output size (aspect kept, multiples of 16) and "
                        "embedded with CLIP for identity.",
            inputs=[
                io.Image.Input("image", tooltip="The portrait (the first image of the batch is used)."),
                io.Combo.Input("clip_vision", options=[NONE] + folders.model_dirs("clip_vision"),
                               tooltip="CLIP vision folder in models/clip_vision (EasyAnimateV3's image_encoder); "
                                       "none = no CLIP identity tokens."),
                io.Int.Input("resolution", default=512, min=16, max=2048, step=16,
                             tooltip="Output size: about resolution^2 pixels with the portrait's aspect ratio."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Load Image's MASK (its transparency): transparent parts of the portrait are "
                                      "composited on white."),
            ],
            outputs=[REFERENCE.Output(display_name="reference",
                                      tooltip="The prepared portrait (and its CLIP embedding), for the Sampler, "
                                              "Pose and Run Estimate."),
                     io.Image.Output(display_name="cropped",
                                     tooltip="The portrait as the model sees it (cropped and resized): check the "
                                             "framing here.")],
        )

    @classmethod
    def validate_inputs(cls, clip_vision: str) -> bool | str:
        return check(cls, dict(clip_vision=clip_vision))

    @classmethod
    def execute(cls, image: torch.Tensor, clip_vision: str, resolution: int, mask: Optional[torch.Tensor] = None
                ) -> io.NodeOutput:
        first = image[0]  # RGB, or RGBA from nodes that keep the alpha (composited on white)
        if mask is not None and bool(mask.any()):  # Load Image gives a 64 x 64 zero mask for opaque images
            if tuple(mask.shape[-2:]) != tuple(first.shape[:2]):
                raise InputError(f"mask is {tuple(mask.shape[-2:])} but image is {tuple(first.shape[:2])}: connect "
                                 f"the MASK of the Load Image that gives the image")
            first = torch.cat([first[..., :3], 1 - mask.reshape(-1, *first.shape[:2])[0, ..., None]], dim=-1)
        height, width = output_size(first.shape[0], first.shape[1], resolution)
        reference = prepare_reference(first, height, width)
        embedding = None
        if clip_vision != NONE:
            model, processor = load_clip_vision(folders.resolve_input("clip_vision", clip_vision),
                                                device=mm.get_torch_device())
            cropped = ((reference.permute(1, 2, 0) + 1) / 2).numpy()
            embedding = encode_reference(cropped, model, processor, (height, width))[0].float().cpu()
        preview = ((reference.permute(1, 2, 0) + 1) / 2)[None]
        return io.NodeOutput(ReferenceCondition(reference, embedding), preview)


class DiTalkerPose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerPose", display_name="DiTalker Pose", category="DiTalker/conditions",
            description="Head pose and motion for the Pose Adapter, from DWPose images (any DWPose preprocessor "
                        "node), POSE_KEYPOINT data, or style frames run through DWPose. Shorter sources play back "
                        "and forth, longer ones are cut, to the audio's frame count.",
            inputs=[
                REFERENCE.Input("reference", tooltip="Sets the pose frame size (half the video size)."),
                AUDIO_FEATURES.Input("audio_features", tooltip="Sets the frame count."),
                io.Image.Input("pose_images", optional=True, tooltip="DWPose renderings from a preprocessor node."),
                POSE_KEYPOINT.Input("pose_keypoint", optional=True, tooltip="OpenPose-format keypoints."),
                io.Image.Input("style_frames", optional=True, tooltip="Frames to run DWPose on (needs the ONNX "
                                                                      "files in models/ditalker/dwpose)."),
            ],
            outputs=[POSE.Output(display_name="pose", tooltip="DWPose frames, one per video frame, for the Sampler.")],
        )

    @classmethod
    def execute(cls, reference: ReferenceCondition, audio_features: AudioCondition,
                pose_images: Optional[torch.Tensor] = None, pose_keypoint: Optional[Any] = None,
                style_frames: Optional[torch.Tensor] = None) -> io.NodeOutput:
        size = tuple(reference.image.shape[1:])
        frames = audio_features.num_frames
        if pose_images is not None:
            if not look_like_renderings(pose_images):
                warn("pose_images do not look like DWPose renderings (limbs on black): connect raw video frames to "
                     "style_frames instead (run through DWPose), or pass them through a DWPose preprocessor first")
            pose = adapter_frames(pose_images, size, frames)
        elif pose_keypoint is not None:
            pose = keypoints_to_frames(pose_keypoint, size, frames)
        elif style_frames is not None:
            det, estimator = find_dwpose(folder_paths.get_folder_paths("ditalker_dwpose"))
            pose = detect_to_frames(_frames_uint8(style_frames), DWPose(det, estimator), size, frames)
        else:
            raise InputError("DiTalker Pose needs pose_images, pose_keypoint or style_frames")
        return io.NodeOutput(pose)
