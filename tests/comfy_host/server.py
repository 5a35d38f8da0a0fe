"""Stand-in for ComfyUI's ``server``: ``PromptServer.instance.send_progress_text``, the text the frontend shows
under a node, recorded as (node id, text).

It mirrors ComfyUI's API (v0.3.64) for offline tests; the real server is covered by
tests/test_comfyui_integration.py.
"""

from __future__ import annotations

from typing import Optional


class PromptServer:
    instance: Optional["PromptServer"] = None

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        PromptServer.instance = self

    def send_progress_text(self, text: str | bytes, node_id: str, sid: Optional[str] = None) -> None:
        self.texts.append((str(node_id), text.decode() if isinstance(text, bytes) else text))


PromptServer()
