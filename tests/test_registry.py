"""Installing the way ComfyUI users install packs: the Comfy Registry metadata validates, its dependency list is
requirements.txt (never torch), and install.py (run by ComfyUI-Manager and `comfy node install`) puts the
--no-deps packages into a fresh environment without pulling their declared dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def test_comfy_node_validate_passes_without_a_warning():
    comfy = shutil.which("comfy", path=str(Path(sys.executable).parent))
    assert comfy, "comfy-cli is a test requirement (requirements-test.txt)"
    result = subprocess.run([comfy, "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "All validation checks passed successfully" in output and "warning" not in output.lower(), output


def test_registry_dependencies_are_requirements_txt_without_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [r for r in requirement_lines(ROOT / "requirements.txt") if not r.startswith("torch")]
    assert project["dependencies"] == wanted
    assert not any(d.split("=")[0].split(">")[0].strip() in ("torch", "torchvision", "torchaudio")
                   for d in project["dependencies"])
    assert (ROOT / project["license"]["file"]).read_text().lstrip().startswith("Apache License")


def test_install_py_installs_the_nodeps_pins_alone_into_a_fresh_venv(tmp_path):
    venv.create(tmp_path / "env", with_pip=True)
    python = tmp_path / "env" / "bin" / "python"
    for _ in range(2):  # the second run finds everything in place
        result = subprocess.run([str(python), str(ROOT / "install.py")], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "already installed" in result.stdout
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower().split()
    pins = [p.lower() for p in requirement_lines(ROOT / "requirements-nodeps.txt")]
    assert sorted(p for p in listed if not p.startswith(("pip==", "setuptools=="))) == sorted(pins)  # no torch
