"""The pack inside a real ComfyUI server: loading, templates, every API workflow, and a clear error.

Opt-in, because ComfyUI is not a pip package: set ``COMFYUI_PATH`` to a ComfyUI checkout and, when
ComfyUI has its own virtual environment, ``COMFYUI_PYTHON`` to that interpreter. The server runs
``main.py`` on a free loopback port with a throwaway base directory holding this repository as the
custom node ``ComfyUI-DiTalker``; the tiny weights from ``tests/tiny_models.py`` reach it through an
extra_model_paths yaml, the way users share model folders between installs. The shipped API workflows
(workflows/api/*.json) run as test_workflows.py runs them: the tiny files picked in the model combos,
``tiny_models.CPU_OVERRIDES`` applied, the media they load written to input/.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from tiny_models import FOLDERS, session_tiny_models, use_tiny_models, write_workflow_inputs

from ditalker_core.demo import TRANSFORMER
from ditalker_core.models import get_config
from ditalker_core.pipeline.windows import plan_windows

pytestmark = pytest.mark.skipif(
    not os.environ.get("COMFYUI_PATH"),
    reason="opt-in: set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its interpreter) to run this",
)

PACK_NAME = "ComfyUI-DiTalker"
REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO_ROOT / "workflows"
STARTUP_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 30.0
MISSING_MODEL = "ditalker_missing_model.safetensors"
DITALKER_NODE_IDS_WITH_MODELS = ("DiTalkerModelLoader", "DiTalkerVAELoader", "DiTalkerAudioEncode", "DiTalkerPhonemes",
                                 "DiTalkerStyleEncode", "DiTalkerEmotion", "DiTalkerReference")
# Node types of a UI workflow that live only in the frontend.
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}

# Imports the pack the way ComfyUI's loader does (a package named by its folder, relative imports
# inside) and prints the node ids it declares: the list the server has to show.
DECLARED_IDS_SCRIPT = """
import importlib, importlib.util, json, sys
comfy_root, pack_root = sys.argv[1:3]
sys.path.insert(0, comfy_root)
from comfy.cli_args import args
args.cpu = True
spec = importlib.util.spec_from_file_location(
    "ditalker_pack_under_test", pack_root + "/__init__.py", submodule_search_locations=[pack_root])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
print(json.dumps(list(importlib.import_module(spec.name + ".nodes").DITALKER_NODE_IDS)))
"""


# After the pack import above: ComfyUI's own ModelPatcher moves a loaded model to its offload device when ComfyUI
# unloads models. A CPU-only machine has one device, so "meta" stands in for the second one.
OFFLOAD_SCRIPT = DECLARED_IDS_SCRIPT.rsplit("print(", 1)[0] + """import torch
import comfy.model_management as mm
loaders = importlib.import_module(spec.name + ".nodes.loaders")
mm.unet_offload_device = lambda: torch.device("meta")
devices = {}
for offload in (True, False):
    managed = loaders.ManagedModel(torch.nn.Linear(8, 8), offload)
    on_load = sorted({p.device.type for p in managed.get().parameters()})
    mm.unload_all_models()
    devices[str(offload)] = [on_load, sorted({p.device.type for p in managed.module.parameters()})]
    del managed
print(json.dumps(devices))
"""

@dataclass
class ComfyServer:
    """A running ComfyUI and the folders it was given."""

    url: str
    base: Path
    model_names: dict[str, str]  # what to pick in each model combo (tiny_models.write_tiny_models)
    log: Path
    process: subprocess.Popen
    seeds: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=HTTP_TIMEOUT_S) as response:
            return json.load(response)

    def queue(self, prompt: dict, client_id: str = "ditalker-tests") -> tuple[int, dict]:
        """POST /prompt -> (HTTP status, body); a rejected prompt is an answer, not an exception."""
        request = urllib.request.Request(
            self.url + "/prompt",
            data=json.dumps({"prompt": prompt, "client_id": client_id}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def wait_for(self, prompt_id: str) -> dict:
        """The history entry of a finished prompt; fails on timeout or when the server dies."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"ComfyUI exited while running {prompt_id}:\n{self.log_tail()}"
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry:  # ComfyUI writes history only once a prompt has finished
                return entry
            time.sleep(0.5)
        pytest.fail(f"prompt {prompt_id} did not finish within {RUN_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict) -> dict:
        """Queue a prompt that must succeed and return its history entry."""
        status, body = self.queue(prompt)
        assert status == 200, f"ComfyUI rejected the prompt: {json.dumps(body, indent=1)}"
        entry = self.wait_for(body["prompt_id"])
        assert entry["status"]["status_str"] == "success", (
            f"prompt failed: {_execution_error(entry)}\n{self.log_tail()}"
        )
        return entry


def _comfy_root() -> Path:
    return Path(os.environ["COMFYUI_PATH"]).resolve()


def _comfy_python() -> str:
    return os.environ.get("COMFYUI_PYTHON", sys.executable)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _extra_model_paths(models_root: Path, path: Path) -> Path:
    """One yaml entry per model folder (the pack's own ones too); JSON is valid YAML, so no yaml writer is needed."""
    path.write_text(json.dumps({"ditalker_tests": {"base_path": str(models_root), **FOLDERS}}, indent=1))
    return path


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ComfyServer]:
    comfy = _comfy_root()
    assert (comfy / "main.py").is_file(), f"COMFYUI_PATH={comfy} is not a ComfyUI checkout (no main.py)"
    base = tmp_path_factory.mktemp("comfy_base")
    for folder in ("custom_nodes", "input", "output"):
        (base / folder).mkdir()
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    models_root, names = session_tiny_models(tmp_path_factory)
    extra = _extra_model_paths(models_root, base / "extra_model_paths.yaml")

    port = _free_loopback_port()
    log = base / "comfyui.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # Tiny models on a CPU shared with the test runner: more threads only contend (up to 50x slower here).
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [
        _comfy_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--base-directory", str(base), "--extra-model-paths-config", str(extra),
        # An in-memory database keeps the checkout untouched; API nodes only slow the start.
        "--database-url", "sqlite:///:memory:", "--disable-api-nodes", "--disable-auto-launch",
        "--preview-method", "auto",  # the sampler's live previews (test_previews_arrive_every_step)
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=comfy, env=env, stdout=sink, stderr=subprocess.STDOUT)
    running = ComfyServer(f"http://127.0.0.1:{port}", base, names, log, process)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, f"ComfyUI exited during start-up:\n{running.log_tail()}"
            assert time.monotonic() < deadline, f"ComfyUI did not answer within {STARTUP_TIMEOUT_S:.0f} s"
            try:
                running.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        yield running
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get("/object_info")


def _declared_node_ids() -> list[str]:
    done = subprocess.run(
        [_comfy_python(), "-c", DECLARED_IDS_SCRIPT, str(_comfy_root()), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S,
    )
    assert done.returncode == 0, f"importing the pack with ComfyUI's interpreter failed:\n{done.stderr[-6000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loader_offload_moves_the_weights_when_comfyui_unloads() -> None:
    done = subprocess.run([_comfy_python(), "-c", OFFLOAD_SCRIPT, str(_comfy_root()), str(REPO_ROOT)],
                          capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-6000:]
    devices = json.loads(done.stdout.strip().splitlines()[-1])
    assert devices == {"True": [["cpu"], ["meta"]], "False": [["cpu"], ["cpu"]]}  # [on get(), after unloading]


def _api_workflows() -> list[Path]:
    files = sorted((WORKFLOWS / "api").glob("*.json"))
    assert files, f"no API-format workflows in {WORKFLOWS / 'api'}"
    return files


def _ui_workflows() -> list[Path]:
    files = sorted(WORKFLOWS.glob("*.json"))
    assert files, f"no UI-format workflows in {WORKFLOWS}"
    return files


def _tiny_prompt(server: ComfyServer, path: Path) -> tuple[dict, float, float]:
    """A shipped API workflow on the tiny models with its input files written: (prompt, speech seconds, fps)."""
    prompt = use_tiny_models(json.loads(path.read_text()), server.model_names)
    speech = write_workflow_inputs(prompt, server.base / "input")
    (fps,) = [n["inputs"]["fps"] for n in prompt.values() if n["class_type"] == "DiTalkerAudioEncode"]
    return prompt, speech.duration, fps


def _execution_error(entry: dict) -> str:
    for kind, message in entry["status"].get("messages", []):
        if kind == "execution_error":
            return f"{message['node_type']}: {message['exception_type']}: {message['exception_message']}"
    return "no execution_error message"


def _vary_seeds(prompt: dict, seeds: Iterator[int]) -> int:
    """Give every seed a value not used before, so ComfyUI's cache cannot answer instead of the nodes."""
    varied = 0
    for node in prompt.values():
        for name in ("seed", "noise_seed"):
            if isinstance(node["inputs"].get(name), int):
                node["inputs"][name] = next(seeds)
                varied += 1
    return varied


def _saved_videos(server: ComfyServer, entry: dict) -> list[Path]:
    found = []
    for ui in entry["outputs"].values():
        for items in ui.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and str(item.get("filename", "")).endswith(".mp4"):
                    found.append(server.base / item["type"] / item.get("subfolder", "") / item["filename"])
    return found


def _check_video(path: Path, fps: float, speech_seconds: float) -> None:
    """ceil(speech x fps) frames at the workflow's rate, and a sound track as long as the frames."""
    import av

    assert path.is_file(), f"{path} was reported but not written"
    with av.open(str(path)) as container:
        assert container.streams.video, f"{path} has no video stream"
        assert container.streams.audio, f"{path} has no audio stream"
        rate = float(container.streams.video[0].average_rate)
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        sample_rate = container.streams.audio[0].rate
        audio_seconds = sum(frame.samples for frame in container.decode(audio=0)) / sample_rate
    assert rate == pytest.approx(fps, rel=1e-3), f"{path} plays at {rate} fps, the workflow asked for {fps}"
    # CreateVideo cuts the sound to the frames, so the frames themselves must cover the speech.
    assert frames == math.ceil(speech_seconds * fps), f"{path}: {frames} frames for {speech_seconds:.3f} s at {fps}"
    # AAC rounds up to 1024-sample frames: allow one of those beyond a frame of video.
    assert audio_seconds == pytest.approx(frames / rate, abs=1.0 / rate + 1024 / sample_rate), (
        f"{path}: {frames} frames at {rate} fps but {audio_seconds:.3f} s of sound"
    )


def test_pack_imports_and_registers_every_node(server, object_info):
    pack_lines = [line for line in server.log_text().splitlines() if PACK_NAME in line]
    # ComfyUI ends start-up with one "<seconds> seconds[ (IMPORT FAILED)]: <path>" line per custom node.
    import_lines = [line for line in pack_lines if line.rstrip().endswith(PACK_NAME) and " seconds" in line]
    assert import_lines, f"ComfyUI never tried to import {PACK_NAME}:\n{server.log_tail()}"
    assert not any("IMPORT FAILED" in line for line in import_lines), (
        "\n".join(["import failed:", *pack_lines, "--- log tail ---", server.log_tail()])
    )

    declared = _declared_node_ids()
    assert declared, "nodes.DITALKER_NODE_IDS is empty"
    served = {name for name, info in object_info.items() if info["python_module"] == f"custom_nodes.{PACK_NAME}"}
    assert served == set(declared), f"declared {sorted(declared)}, ComfyUI serves {sorted(served)}"


def test_example_workflows_are_served_as_templates(server, object_info):
    templates = server.get("/workflow_templates").get(PACK_NAME, [])
    assert sorted(templates) == sorted(p.stem for p in _ui_workflows()), "only the UI workflows are templates"
    for path in _ui_workflows():
        assert path.stem in templates, f"{path.name} is not among the pack's templates {templates}"
        served = server.get(f"/api/workflow_templates/{PACK_NAME}/{path.name}")
        assert served == json.loads(path.read_text())
        node_ids = {node["id"] for node in served["nodes"]}
        unknown = {node["type"] for node in served["nodes"]} - set(object_info) - FRONTEND_ONLY_TYPES
        assert not unknown, f"{path.name} uses node types the server does not have: {sorted(unknown)}"
        for link_id, source, _, target, _, _ in served["links"]:
            assert {source, target} <= node_ids, f"{path.name}: link {link_id} joins a node that is not there"


def test_model_combos_list_the_shared_models(server, object_info):
    """The pack's folders and ComfyUI's own ones find the files an extra_model_paths yaml points at."""
    for node_id in DITALKER_NODE_IDS_WITH_MODELS:
        for name, (kind, options) in object_info[node_id]["input"]["required"].items():
            if name in server.model_names and kind == "COMBO":
                assert server.model_names[name] in options["options"], f"{node_id}.{name}: {options['options']}"
    _, checkpoint = object_info["DiTalkerModelLoader"]["input"]["required"]["checkpoint"]
    # the tiny file and the shipped demo model (the pack registers its folder); no helper model of models/ditalker
    assert checkpoint["options"] == sorted([TRANSFORMER.name, server.model_names["checkpoint"]]), \
        "helper models offered as checkpoints"


def _estimate_windows(entry: dict) -> list[int]:
    """Window counts the Run Estimate showed (its text reaches the UI through the Preview Any node)."""
    texts = [text for ui in entry["outputs"].values() for text in ui.get("text", [])]
    return [int(re.match(r"(\d+) window\(s\)", text).group(1)) for text in texts]


def test_api_workflows_render_a_video_with_speech(server):
    window = get_config("tiny")["audio_frames"]
    for path in _api_workflows():
        prompt, speech_seconds, fps = _tiny_prompt(server, path)
        assert _vary_seeds(prompt, server.seeds), f"{path.name} has no seed input"
        entry = server.run(prompt)
        videos = _saved_videos(server, entry)
        assert videos, f"{path.name} saved no .mp4"
        for video in videos:
            _check_video(video, fps, speech_seconds)
        frames = math.ceil(speech_seconds * fps)
        overlaps = [n["inputs"]["overlap"] for n in prompt.values() if n["class_type"] == "DiTalkerEstimate"]
        expected = [len(plan_windows(max(frames, window), window, overlap)) for overlap in overlaps]
        assert _estimate_windows(entry) == expected, f"{path.name}: the estimate counts other windows"


def test_missing_model_is_reported_and_the_server_keeps_serving(server):
    path = _api_workflows()[0]
    prompt, _, _ = _tiny_prompt(server, path)
    (loader,) = [n for n in prompt.values() if n["class_type"] == "DiTalkerModelLoader"]
    loader["inputs"]["checkpoint"] = MISSING_MODEL
    _vary_seeds(prompt, server.seeds)

    status, body = server.queue(prompt)
    if status == 200:
        entry = server.wait_for(body["prompt_id"])
        assert entry["status"]["status_str"] == "error", "a prompt naming a missing model succeeded"
        message = _execution_error(entry)
    else:
        message = json.dumps(body.get("node_errors", body))
    assert MISSING_MODEL in message and "models/ditalker" in message, f"the error misses what or where: {message}"

    healthy, _, _ = _tiny_prompt(server, path)
    _vary_seeds(healthy, server.seeds)
    assert _saved_videos(server, server.run(healthy)), "the server saved no video after the failed prompt"


def _node_errors(body: dict) -> dict[str, list[str]]:
    """/prompt's 400 answer: every failing node's error details, by node id."""
    return {node_id: [error["details"] for error in node["errors"]] for node_id, node in body["node_errors"].items()}


def test_missing_models_and_bad_values_are_all_refused_at_one_queue_press(server):
    """A shipped workflow with none of its models installed: HTTP 400 naming every model node's file, folder and
    source at once. Then values outside the drop-downs and NaN or misfit numbers: 400 too, naming the input; the
    server then renders a good prompt."""
    path = WORKFLOWS / "api" / "ditalker_talking_portrait.json"
    shipped = json.loads(path.read_text())
    status, body = server.queue(shipped)
    assert status == 400, body
    errors = _node_errors(body)
    model_nodes = {i for i, n in shipped.items() if n["class_type"] in DITALKER_NODE_IDS_WITH_MODELS}
    assert set(errors) == model_nodes, errors
    for node_id in model_nodes:
        message = " ".join(errors[node_id])
        assert "not found" in message and "Put it in models/" in message and "get it from" in message, message

    prompt, _, _ = _tiny_prompt(server, WORKFLOWS / "api" / "ditalker_emotion_control.json")
    by_type = {n["class_type"]: n for n in prompt.values()}
    bad = {("DiTalkerEmotion", "emotion"): "melancholic", ("DiTalkerModelLoader", "dtype"): "int8",
           ("DiTalkerSampler", "scheduler"): "lms", ("DiTalkerAudioEncode", "fps"): math.nan,
           ("DiTalkerSampler", "overlap"): 5, ("DiTalkerSampler", "audio_guidance"): math.nan}
    for (node_type, name), value in bad.items():
        by_type[node_type]["inputs"][name] = value
    status, body = server.queue(prompt)
    assert status == 400, body
    said = json.dumps(_node_errors(body))
    for words in ("emotion 'melancholic' is not one of", "dtype 'int8' is not one of", "scheduler 'lms' is not one of",
                  "fps is nan", "overlap is 5", "audio_guidance is nan"):
        assert words in said, f"{words!r} not in {said}"

    healthy, _, _ = _tiny_prompt(server, path)
    _vary_seeds(healthy, server.seeds)
    assert _saved_videos(server, server.run(healthy)), "the server saved no video after the refused prompts"


def test_previews_arrive_every_step_and_warnings_under_the_node(server):
    """With --preview-method auto the sampler sends a preview image per step over the websocket (binary event 1),
    and an accepted-but-odd input (custom_prompt with emotion happy) shows its warning as the node's progress
    text (binary event 3)."""
    import struct
    import uuid

    import websocket

    prompt, _, _ = _tiny_prompt(server, WORKFLOWS / "api" / "ditalker_emotion_control.json")
    _vary_seeds(prompt, server.seeds)
    emotion_id = next(i for i, n in prompt.items() if n["class_type"] == "DiTalkerEmotion")
    prompt[emotion_id]["inputs"].update(emotion="happy", custom_prompt="a sad person")
    (sampler,) = [n for n in prompt.values() if n["class_type"] == "DiTalkerSampler"]
    client = str(uuid.uuid4())
    sock = websocket.create_connection(server.url.replace("http", "ws") + f"/ws?clientId={client}", timeout=60)
    try:
        status, body = server.queue(prompt, client_id=client)
        assert status == 200, body
        previews, texts, progress = 0, [], []
        while True:
            message = sock.recv()
            if isinstance(message, bytes):
                (event,) = struct.unpack(">I", message[:4])
                if event == 1:
                    previews += 1
                elif event == 3:
                    (length,) = struct.unpack(">I", message[4:8])
                    texts.append((message[8:8 + length].decode(), message[8 + length:].decode()))
                continue
            data = json.loads(message)
            if data["type"] == "progress" and data["data"].get("node") in (
                    [i for i, n in prompt.items() if n["class_type"] == "DiTalkerSampler"]):
                progress.append(data["data"]["value"])
            if data["type"] == "executing" and data["data"].get("node") is None \
                    and data["data"].get("prompt_id") == body["prompt_id"]:
                break
            if data["type"] == "execution_error":
                pytest.fail(json.dumps(data["data"])[:2000])
    finally:
        sock.close()
    assert progress and previews >= len(progress) >= sampler["inputs"]["steps"], (previews, progress)
    assert (emotion_id, "Warning: custom_prompt is ignored because emotion is 'happy': set emotion to custom to use "
                        "it") in texts, texts


def test_a_file_of_another_kind_and_an_empty_transcript_are_refused_in_words(server, tmp_path_factory):
    """The tiny VAE file picked in Load DiTalker Model: 400 saying what it is and which node takes it (no key
    list); an empty transcript: 400 saying to type what is said."""
    import shutil

    models_root, names = session_tiny_models(tmp_path_factory)
    mistake = models_root / FOLDERS["ditalker"] / "picked_by_mistake.safetensors"
    shutil.copyfile(models_root / FOLDERS["vae"] / names["vae"], mistake)
    try:
        prompt, _, _ = _tiny_prompt(server, WORKFLOWS / "api" / "ditalker_talking_portrait.json")
        by_type = {n["class_type"]: n for n in prompt.values()}
        by_type["DiTalkerModelLoader"]["inputs"]["checkpoint"] = mistake.name
        by_type["DiTalkerPhonemes"]["inputs"]["transcript"] = " "
        status, body = server.queue(prompt)
    finally:
        mistake.unlink()
    assert status == 400, body
    said = json.dumps(_node_errors(body))
    assert "picked_by_mistake.safetensors is a MagViT VAE" in said and "Load DiTalker VAE takes it" in said, said
    assert "transcript is empty: type what is said in the audio" in said, said
    assert len(said) < 2000, said
