"""Stand-in for ``comfy_api.latest``: the V3 node API (``io``) and ``ComfyExtension``.

It mirrors ComfyUI's API (checked against v0.3.64) for offline tests; the real server is covered by
tests/test_comfyui_integration.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Never called by ComfyUI's loader in v0.3.64."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The node classes the extension provides."""


__all__ = ["ComfyExtension", "io"]
