"""The ComfyUI core nodes the shipped workflows use, with their real inputs, outputs and semantics.

It mirrors ComfyUI v0.3.64 (nodes.py LoadImage, nodes_audio.py LoadAudio, nodes_video.py LoadVideo /
GetVideoComponents / CreateVideo / SaveVideo, nodes_preview_any.py PreviewAny) for offline tests; the real
server is covered by tests/test_comfyui_integration.py. Data types as ComfyUI passes them: IMAGE (B, H, W, 3)
float32 in [0, 1], AUDIO {"waveform": (B, C, N) float32, "sample_rate": int}, VIDEO an object with
``get_components()``. SaveVideo keeps the real traps: even sizes only, the sound cut to the frames.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional

import av
import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image, ImageOps

import folder_paths
from ditalker_core.media import write_video


@dataclass
class VideoComponents:
    images: torch.Tensor
    audio: Optional[dict[str, Any]]
    frame_rate: Fraction


class VideoFromFile:
    def __init__(self, path: str):
        self.path = path

    def get_components(self) -> VideoComponents:
        """Frames as IMAGE, the first audio stream (if any) as AUDIO at its own rate, the average frame rate."""
        with av.open(self.path) as container:
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) / 255.0 for f in container.decode(video=0)]
            stream = container.streams.video[0]
            rate = Fraction(stream.average_rate) if stream.average_rate else Fraction(1)
            audio = None
            if container.streams.audio:
                container.seek(0)
                audio_stream = container.streams.audio[0]
                chunks = [frame.to_ndarray() for packet in container.demux(audio_stream) for frame in packet.decode()]
                if chunks:
                    audio = {"waveform": torch.from_numpy(np.concatenate(chunks, axis=1))[None],
                             "sample_rate": int(audio_stream.sample_rate)}
        return VideoComponents(torch.stack(frames), audio, rate)


class VideoFromComponents:
    def __init__(self, components: VideoComponents):
        self.components = components

    def get_components(self) -> VideoComponents:
        return self.components

    def get_dimensions(self) -> tuple[int, int]:
        return self.components.images.shape[2], self.components.images.shape[1]

    def save_to(self, path: str) -> None:
        """H.264 yuv420p (+ AAC), the sound cut to ceil(rate / fps * frames) samples, fps rounded to 1/1000."""
        images, audio = self.components.images, self.components.audio
        if images.shape[1] % 2 or images.shape[2] % 2:
            raise ValueError(f"avcodec_open2(\"libx264\"): yuv420p needs even sizes, got {tuple(images.shape[1:3])}")
        frame_rate = Fraction(round(self.components.frame_rate * 1000), 1000)
        frames = (images * 255).clamp(0, 255).byte().cpu().numpy()
        sound = None
        if audio is not None:
            waveform, rate = audio["waveform"], int(audio["sample_rate"])
            if waveform.device.type != "cpu":
                raise TypeError("can't convert cuda tensor to numpy: ComfyUI calls .numpy() on the waveform")
            if waveform.shape[0] != 1 or waveform.shape[1] > 2:
                raise ValueError(f"waveform {tuple(waveform.shape)}: ComfyUI writes one mono or stereo stream")
            sound = {"waveform": waveform[:, :, :math.ceil(rate / frame_rate * images.shape[0])], "sample_rate": rate}
        write_video(path, frames, float(frame_rate), audio=sound)


def _input_files() -> list[str]:
    directory = folder_paths.get_input_directory()
    return sorted(f for f in os.listdir(directory) if os.path.isfile(os.path.join(directory, f)))


class LoadImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LoadImage", display_name="Load Image", category="image",
                         inputs=[io.Combo.Input("image", options=_input_files(), upload=io.UploadType.image)],
                         outputs=[io.Image.Output(), io.Mask.Output()])

    @classmethod
    def execute(cls, image: str) -> io.NodeOutput:
        """EXIF rotation applied, RGB; MASK = 1 - alpha (a 64 x 64 zero mask without alpha)."""
        picture = ImageOps.exif_transpose(Image.open(folder_paths.get_annotated_filepath(image)))
        rgb = torch.from_numpy(np.array(picture.convert("RGB")).astype(np.float32) / 255.0)[None]
        if "A" in picture.getbands():
            mask = 1.0 - torch.from_numpy(np.array(picture.getchannel("A")).astype(np.float32) / 255.0)[None]
        else:
            mask = torch.zeros((1, 64, 64), dtype=torch.float32)
        return io.NodeOutput(rgb, mask)


class LoadAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LoadAudio", display_name="Load Audio", category="audio",
                         inputs=[io.Combo.Input("audio", options=_input_files(), upload=io.UploadType.audio)],
                         outputs=[io.Audio.Output()])

    @classmethod
    def execute(cls, audio: str) -> io.NodeOutput:
        """The file's own rate and channels, PCM scaled to [-1, 1], batch of one."""
        with av.open(folder_paths.get_annotated_filepath(audio)) as container:
            stream = container.streams.audio[0]
            channels = stream.channels
            chunks = []
            for frame in container.decode(streams=stream.index):
                buffer = torch.from_numpy(frame.to_ndarray())
                chunks.append(buffer.view(-1, channels).t() if buffer.shape[0] != channels else buffer)
            rate = stream.codec_context.sample_rate
        waveform = torch.cat(chunks, dim=1)
        if waveform.dtype == torch.int16:
            waveform = waveform.float() / 2 ** 15
        elif waveform.dtype == torch.int32:
            waveform = waveform.float() / 2 ** 31
        return io.NodeOutput({"waveform": waveform.float()[None], "sample_rate": rate})


class LoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LoadVideo", display_name="Load Video", category="image/video",
                         inputs=[io.Combo.Input("file", options=_input_files(), upload=io.UploadType.video)],
                         outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, file: str) -> io.NodeOutput:
        return io.NodeOutput(VideoFromFile(folder_paths.get_annotated_filepath(file)))


class GetVideoComponents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="GetVideoComponents", display_name="Get Video Components", category="image/video",
                         inputs=[io.Video.Input("video")],
                         outputs=[io.Image.Output(display_name="images"), io.Audio.Output(display_name="audio"),
                                  io.Float.Output(display_name="fps")])

    @classmethod
    def execute(cls, video: Any) -> io.NodeOutput:
        components = video.get_components()
        return io.NodeOutput(components.images, components.audio, float(components.frame_rate))


class CreateVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CreateVideo", display_name="Create Video", category="image/video",
                         inputs=[io.Image.Input("images"),
                                 io.Float.Input("fps", default=30.0, min=1.0, max=120.0, step=1.0),
                                 io.Audio.Input("audio", optional=True)],
                         outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, images: torch.Tensor, fps: float, audio: Optional[dict] = None) -> io.NodeOutput:
        return io.NodeOutput(VideoFromComponents(VideoComponents(images, audio, Fraction(fps))))


class SaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="SaveVideo", display_name="Save Video", category="image/video",
                         inputs=[io.Video.Input("video"),
                                 io.String.Input("filename_prefix", default="video/ComfyUI"),
                                 io.Combo.Input("format", options=["auto", "mp4"], default="auto"),
                                 io.Combo.Input("codec", options=["auto", "h264"], default="auto")],
                         outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, video: Any, filename_prefix: str, format: str, codec: str) -> io.NodeOutput:
        """output/<prefix>_<counter:05>_.mp4, counter one above the highest taken."""
        folder, prefix = os.path.split(filename_prefix)
        full_folder = os.path.join(folder_paths.get_output_directory(), folder)
        os.makedirs(full_folder, exist_ok=True)
        taken = [int(name[len(prefix) + 1:-5]) for name in os.listdir(full_folder)
                 if name.startswith(prefix + "_") and name.endswith("_.mp4") and name[len(prefix) + 1:-5].isdigit()]
        filename = f"{prefix}_{max(taken, default=0) + 1:05}_.mp4"
        video.save_to(os.path.join(full_folder, filename))
        return io.NodeOutput(ui={"images": [{"filename": filename, "subfolder": folder, "type": "output"}],
                                 "animated": (True,)})


class PreviewAny(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PreviewAny", display_name="Preview Any", category="utils",
                         inputs=[io.AnyType.Input("source")], outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, source: Any = None) -> io.NodeOutput:
        if isinstance(source, str):
            value = source
        elif isinstance(source, (int, float, bool)):
            value = str(source)
        else:
            value = json.dumps(source, default=str)
        return io.NodeOutput(ui={"text": (value,)})


CORE_NODES: dict[str, type[io.ComfyNode]] = {  # node id = class name, as in ComfyUI
    node.__name__: node for node in (LoadImage, LoadAudio, LoadVideo, GetVideoComponents, CreateVideo, SaveVideo,
                                     PreviewAny)
}
