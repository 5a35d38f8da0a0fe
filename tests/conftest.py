import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are dominated by per-op overhead: one thread is far faster than contended OpenMP threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Tiny weights in ComfyUI's model folders (built once per session) and the names to pick in the nodes."""
    from tiny_models import session_tiny_models

    return session_tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def host(tiny, tmp_path_factory):
    """The pack loaded through the offline ComfyUI stand-in, with the tiny models in its folders."""
    from comfy_host import comfy_host
    from tiny_models import model_folders

    with comfy_host(tmp_path_factory.mktemp("comfy_base"), model_folders(tiny[0])) as running:
        yield running
