"""Warnings a user sees: shown under the running node (ComfyUI's progress text, where the API nodes report their
status) and logged, for inputs that are accepted but probably not what was meant."""

from __future__ import annotations

import logging

log = logging.getLogger("ditalker")


def warn(message: str) -> None:
    # Imported when a node runs, inside the server (importing ``server`` at pack import pulls in the whole app).
    from comfy_execution.utils import get_executing_context
    from server import PromptServer

    log.warning(message)
    context = get_executing_context()
    if context is not None and PromptServer.instance is not None:
        PromptServer.instance.send_progress_text(f"Warning: {message}", context.node_id)
