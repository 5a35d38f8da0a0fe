"""Sampling: conditioning, multi-condition guidance, long-audio windows, the denoising loop, run estimates."""

from .conditioning import output_size, prepare_reference
from .estimate import RunEstimate, estimate_run
from .generate import Conditions, DiTalkerPipeline, SampledVideo, SamplingOptions, decode_video
from .guidance import Guidance

__all__ = ["Conditions", "DiTalkerPipeline", "Guidance", "RunEstimate", "SampledVideo", "SamplingOptions",
           "decode_video", "estimate_run", "output_size", "prepare_reference"]
