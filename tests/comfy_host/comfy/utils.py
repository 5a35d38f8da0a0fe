"""Stand-in for ``comfy.utils``: the progress bar nodes report to.

It mirrors ComfyUI's API (v0.3.64) for offline tests; the real server is covered by
tests/test_comfyui_integration.py. As in ComfyUI, a bar reads the global hook when it is constructed; the
server's hook (``comfy_host.server_progress_hook`` here, ``main.hijack_progress`` there) checks for a cancel on
every update.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

PROGRESS_BAR_HOOK: Optional[Callable[..., None]] = None


def set_progress_bar_global_hook(function: Optional[Callable[..., None]]) -> None:
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    def __init__(self, total: int, node_id: Optional[str] = None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id

    def update_absolute(self, value: int, total: Optional[int] = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)
