"""A stand-in ComfyUI host for offline tests: the part of ComfyUI's Python API the pack's nodes use.

ComfyUI is not on PyPI and CI has no network, so the node and workflow tests run against these modules, which
mirror ComfyUI v0.3.64's API: ``comfy_api.latest`` (``io``, ``ComfyExtension``), ``comfy.utils.ProgressBar``,
``comfy.model_management``, ``comfy.model_patcher.ModelPatcher``, ``comfy.cli_args``, ``latent_preview``,
``folder_paths``, ``server.PromptServer`` (progress text) and ``comfy_execution.utils`` (the running node), plus the core nodes the
shipped workflows use (``core_nodes``) and the workflow formats (``workflow``). The real server is covered by
tests/test_comfyui_integration.py.

``comfy_host()`` puts this folder on ``sys.path`` only while a test needs it, sets the base directory, adds
the model folders the way an extra_model_paths.yaml does, installs the server's progress hook, and loads the
pack the way ComfyUI loads a custom node folder (its ``__init__.py`` through ``spec_from_file_location`` as a
package, then ``<pack>.nodes``). The repository root's ``nodes`` is never importable as a top-level package.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, Optional

HOST_DIR = Path(__file__).resolve().parent
REPO_ROOT = HOST_DIR.parents[1]
_HOST_MODULES = ("comfy_api", "comfy", "comfy_execution", "folder_paths", "latent_preview", "server")


@dataclass
class Host:
    """The loaded pack and the host modules it sees."""

    pack: ModuleType
    nodes: ModuleType  # <pack>.nodes
    node_classes: dict[str, type]  # ours (from the extension) and the core nodes, by node id
    folder_paths: ModuleType
    model_management: ModuleType
    progress: list[tuple[int, int]] = field(default_factory=list)  # every (value, total) the server was sent
    previews: list[object] = field(default_factory=list)  # every preview image sent with the progress
    on_progress: Optional[Callable[[int, int], None]] = None  # e.g. a user clicking Cancel


def _pack_module_name() -> str:
    """The sys.modules name ComfyUI gives a custom node folder: its path with "." replaced by "_x_"."""
    return str(REPO_ROOT).replace(".", "_x_")


def load_pack() -> ModuleType:
    name = _pack_module_name()
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    sys.modules[name] = pack
    spec.loader.exec_module(pack)
    return pack


@contextmanager
def comfy_host(base: Path, model_folders: dict[str, Path]) -> Iterator[Host]:
    """A ComfyUI host with ``base`` as --base-directory and ``model_folders`` (folder name -> path) added."""
    sys.path.insert(0, str(HOST_DIR))
    try:
        folder_paths = importlib.import_module("folder_paths")
        folder_paths.set_base_path(str(base))
        for name, path in model_folders.items():
            folder_paths.add_model_folder_path(name, str(path))
        model_management = importlib.import_module("comfy.model_management")
        pack = load_pack()
        extension = asyncio.run(pack.comfy_entrypoint())
        ours = {node.GET_SCHEMA().node_id: node for node in asyncio.run(extension.get_node_list())}
        core = importlib.import_module("comfy_host.core_nodes").CORE_NODES
        host = Host(pack, importlib.import_module(f"{pack.__name__}.nodes"), {**core, **ours}, folder_paths,
                    model_management)

        def server_progress_hook(value: int, total: int, preview: object = None, prompt_id: Optional[str] = None,
                                 node_id: Optional[str] = None) -> None:
            """What main.hijack_progress does: a pending cancel raises here, then the progress is sent."""
            model_management.throw_exception_if_processing_interrupted()
            host.progress.append((value, total))
            if preview is not None:
                host.previews.append(preview)
            if host.on_progress is not None:
                host.on_progress(value, total)

        importlib.import_module("comfy.utils").set_progress_bar_global_hook(server_progress_hook)
        yield host
    finally:
        sys.path.remove(str(HOST_DIR))
        pack_name = _pack_module_name()
        for module in list(sys.modules):
            if module.split(".")[0] in _HOST_MODULES or module == "comfy_host.core_nodes" \
                    or module.split(".")[0] == pack_name:
                del sys.modules[module]
