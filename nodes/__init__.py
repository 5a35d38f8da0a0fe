"""ComfyUI V3 nodes for DiTalker: thin adapters that parse inputs, call ``ditalker_core`` and wrap outputs."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .conditions import (DiTalkerAudioEncode, DiTalkerEmotion, DiTalkerPhonemes, DiTalkerPose,
                         DiTalkerReference, DiTalkerStyleEncode)
from .folders import register_demo, register_folders
from .loaders import DiTalkerModelLoader, DiTalkerVAELoader
from .sampling import DiTalkerDecode, DiTalkerEstimate, DiTalkerSampler
from .speed import DiTalkerSpeed

register_folders()
register_demo()

NODES: list[type[io.ComfyNode]] = [
    DiTalkerModelLoader, DiTalkerVAELoader, DiTalkerAudioEncode, DiTalkerPhonemes, DiTalkerStyleEncode,
    DiTalkerEmotion, DiTalkerReference, DiTalkerPose, DiTalkerSampler, DiTalkerDecode, DiTalkerEstimate,
    DiTalkerSpeed,
]
DITALKER_NODE_IDS = [node.define_schema().node_id for node in NODES]


class DiTalkerExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES
