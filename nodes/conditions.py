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
from ..ditalker_core.extract.phonemes import LANGUAGES, Aligner, extract_phonemes
from ..ditalker_core.extract.pose import DWPose, adapter_frames, detect_to_frames, find_dwpose, keypoints_to_frames
from ..ditalker_core.extract.reference import encode_reference, load_clip_vision
from ..ditalker_core.extract.style3dmm import StyleExtractor, load_expression, make_style_clip
from ..ditalker_core.pipeline import output_size, prepare_reference
from . import folders
from .sockets import (AUDIO_FEATURES, EMOTION, PHONEMES, POSE, POSE_KEYPOINT, REFERENCE, STYLE, AudioCondition,
                      EmotionCondition, ReferenceCondition, StyleCondition)

NONE = "none"


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
    def execute(cls, audio: dict[str, Any], whisper: str, fps: float) -> io.NodeOutput:
        if audio["waveform"].shape[-1] == 0:
            raise InputError("audio is empty (0 samples); connect a clip that contains the speech")
        encoder = AudioEncoder.from_pretrained(folders.resolve("audio_encoders", whisper, "Whisper encoder"),
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
                                tooltip="What is said. Empty: transcribe with WhisperX (needs its full install)."),
                io.Combo.Input("language", options=list(LANGUAGES), default="en", tooltip="Spoken language."),
                io.Combo.Input("aligner", options=[NONE] + folders.model_dirs("ditalker_align"), default=NONE,
                               tooltip="Wav2Vec2 CTC folder in models/ditalker/wav2vec2 for word timings."),
            ],
            outputs=[PHONEMES.Output(display_name="phonemes",
                                     tooltip="One phoneme id per video frame, for the Sampler.")],
        )

    @classmethod
    def execute(cls, audio_features: AudioCondition, transcript: str, language: str, aligner: str
                ) -> io.NodeOutput:
        align = None if aligner == NONE else Aligner.from_pretrained(
            folders.resolve("ditalker_align", aligner, "alignment model"), language, mm.get_torch_device())
        result = extract_phonemes(audio_features.audio, transcript.strip() or None, language, align,
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
                folders.resolve("ditalker_3dmm", recon_model, "Deep3DFaceRecon weights"), mm.get_torch_device())
            result = extractor.extract(_frames_uint8(style_frames))
            expression, skipped = result.exp, len(result.skipped)
        else:
            raise InputError("DiTalker Style Encode needs style_frames or a coefficients_file")
        clip, pad_mask = make_style_clip(expression, style_length, "middle")
        return io.NodeOutput(StyleCondition(clip.float(), pad_mask), skipped)


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
    def execute(cls, emotion: str, subject: str, t5: str, custom_prompt: str, negative_prompt: str
                ) -> io.NodeOutput:
        if emotion == "custom" and not custom_prompt.strip():
            raise InputError("emotion is 'custom' but custom_prompt is empty; write a prompt or pick an emotion")
        prompt = custom_prompt.strip() if emotion == "custom" else build_prompt(emotion, subject)
        cache = os.path.join(folder_paths.get_user_directory(), "ditalker", "t5_cache")
        encoder = T5PromptEncoder(folders.resolve("text_encoders", t5, "T5 text encoder"), cache_dir=cache,
                                  device=mm.text_encoder_device())
        positive = encoder(prompt)
        negative = encoder(negative_prompt)
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
                io.Image.Input("image", tooltip="The portrait (first image of the batch is used; RGBA is "
                                                "composited on white)."),
                io.Combo.Input("clip_vision", options=[NONE] + folders.model_dirs("clip_vision"),
                               tooltip="CLIP vision folder in models/clip_vision (EasyAnimateV3's image_encoder); "
                                       "none = no CLIP identity tokens."),
                io.Int.Input("resolution", default=512, min=16, max=2048, step=16,
                             tooltip="Output size: about resolution^2 pixels with the portrait's aspect ratio."),
            ],
            outputs=[REFERENCE.Output(display_name="reference",
                                      tooltip="The prepared portrait (and its CLIP embedding), for the Sampler, "
                                              "Pose and Run Estimate."),
                     io.Image.Output(display_name="cropped",
                                     tooltip="The portrait as the model sees it (cropped and resized): check the "
                                             "framing here.")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, clip_vision: str, resolution: int) -> io.NodeOutput:
        first = image[0]
        height, width = output_size(first.shape[0], first.shape[1], resolution)
        reference = prepare_reference(first, height, width)
        embedding = None
        if clip_vision != NONE:
            model, processor = load_clip_vision(folders.resolve("clip_vision", clip_vision, "CLIP vision encoder"),
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
            pose = adapter_frames(pose_images, size, frames)
        elif pose_keypoint is not None:
            pose = keypoints_to_frames(pose_keypoint, size, frames)
        elif style_frames is not None:
            det, estimator = find_dwpose(folder_paths.get_folder_paths("ditalker_dwpose"))
            pose = detect_to_frames(_frames_uint8(style_frames), DWPose(det, estimator), size, frames)
        else:
            raise InputError("DiTalker Pose needs pose_images, pose_keypoint or style_frames")
        return io.NodeOutput(pose)
