"""Run by ComfyUI-Manager (and ``comfy node install``) after ``requirements.txt``: installs the packages of
``requirements-nodeps.txt`` without their declared dependencies, which would pull torchvision/torchaudio or pin
an old torch over the host's build. What they really import is in ``requirements.txt``.

    python install.py        # the same by hand, with the Python that runs ComfyUI
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

NODEPS = Path(__file__).resolve().with_name("requirements-nodeps.txt")


def pinned(path: Path = NODEPS) -> dict[str, str]:
    """``name==version`` lines of the file -> {name: version}."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def missing(pins: dict[str, str]) -> list[str]:
    """The pins not installed at exactly their version."""
    out = []
    for name, version in pins.items():
        try:
            if metadata.version(name) != version:
                out.append(f"{name}=={version}")
        except metadata.PackageNotFoundError:
            out.append(f"{name}=={version}")
    return out


def main() -> int:
    todo = missing(pinned())
    if not todo:
        print("ComfyUI-DiTalker: requirements-nodeps.txt already installed")
        return 0
    print(f"ComfyUI-DiTalker: installing without dependencies: {' '.join(todo)}")
    return subprocess.call([sys.executable, "-m", "pip", "install", "--no-deps", *todo])


if __name__ == "__main__":
    sys.exit(main())
