"""Stand-in for ``comfy_execution.utils``: which node is running (the server sets it around each node).

It mirrors ComfyUI's API (v0.3.64) for offline tests; the real server is covered by
tests/test_comfyui_integration.py.
"""

from __future__ import annotations

import contextvars
from typing import NamedTuple, Optional


class ExecutionContext(NamedTuple):
    prompt_id: str
    node_id: str
    list_index: Optional[int]


current_executing_context: contextvars.ContextVar[Optional[ExecutionContext]] = contextvars.ContextVar(
    "current_executing_context", default=None)


def get_executing_context() -> Optional[ExecutionContext]:
    return current_executing_context.get(None)


class CurrentNodeContext:
    def __init__(self, prompt_id: str, node_id: str, list_index: Optional[int] = None):
        self.context = ExecutionContext(prompt_id, node_id, list_index)
        self.token = None

    def __enter__(self) -> "CurrentNodeContext":
        self.token = current_executing_context.set(self.context)
        return self

    def __exit__(self, *exc: object) -> None:
        current_executing_context.reset(self.token)
