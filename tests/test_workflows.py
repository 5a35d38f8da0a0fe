"""The shipped workflows: checked against the node definitions, and run end to end on a CPU with tiny models.

workflows/*.json is the UI format (ComfyUI offers a pack's workflows/ folder as templates), workflows/api/*.json
the API format of the same graph. Both are validated the way the frontend and the server read them: node types
from our schemas and the core nodes' real definitions (tests/comfy_host/core_nodes.py), input names, widget
values (type, range, static combo options), link types. Then every API workflow runs through the node classes
in graph order on the stand-in host, with the changes a CPU test needs:
- model names: the workflows name the released files (``SHIPPED_MODELS``, README's table); the test picks the
  tiny files of tests/tiny_models.py in the same combos, as a user with other files would;
- ``tiny_models.CPU_OVERRIDES``: 5 video frames a second, 32 x 32 pixels, 1 sampling step, style_length 32 (the
  tiny model's maximum);
- inputs: skimage's astronaut photo, each workflow's transcript spoken by espeak-ng, a short moving-face video.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import av
import pytest
import torch
from tiny_models import use_tiny_models, write_workflow_inputs

from ditalker_core.media import read_video

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
NAMES = ["ditalker_talking_portrait", "ditalker_style_from_video", "ditalker_emotion_control", "ditalker_long_audio"]
DEMO = "ditalker_demo"  # runs the shipped demo model as installed: tests/test_demo.py
# What the shipped workflows load: the released files as README's model table names them.
SHIPPED_MODELS = {"checkpoint": "ditalker_xl.safetensors", "vae": "EasyAnimateV3-XL-2-InP-512x512",
                  "whisper": "whisper-tiny", "t5": "EasyAnimateV3-t5", "clip_vision": "EasyAnimateV3-image-encoder",
                  "aligner": "wav2vec2-base-960h", "recon_model": "epoch_20.pth"}
# Combos whose options are files on the user's disk: checked only once the test has written its files.
FILE_COMBOS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("LoadVideo", "file")}


def specs_of(host) -> dict:
    """Node specs as /object_info would give them now (combo options are read from disk on every call)."""
    from comfy_host.workflow import NodeSpec

    return {node_id: NodeSpec.of(cls) for node_id, cls in host.node_classes.items()}


def load(name: str) -> tuple[dict, dict]:
    return (json.loads((WORKFLOWS / f"{name}.json").read_text()),
            json.loads((WORKFLOWS / "api" / f"{name}.json").read_text()))


def is_file_combo(node_type: str, name: str) -> bool:
    return (node_type, name) in FILE_COMBOS or (node_type.startswith("DiTalker") and name in SHIPPED_MODELS)


def check_value(node_type: str, spec_input, value, files_known: bool) -> None:
    """A widget value as the server validates it, plus the type the frontend widget holds."""
    where = f"{node_type}.{spec_input.id} = {value!r}"
    kind = spec_input.io_type
    if kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    elif kind == "COMBO":
        if files_known or not is_file_combo(node_type, spec_input.id):
            assert value in spec_input.options, f"{where} is not one of {spec_input.options}"
        assert isinstance(value, str), where
    else:
        number = int if kind == "INT" else (int, float)
        assert isinstance(value, number) and not isinstance(value, bool), where
        assert spec_input.min is None or value >= spec_input.min, f"{where} is below {spec_input.min}"
        assert spec_input.max is None or value <= spec_input.max, f"{where} is above {spec_input.max}"


def check_prompt(prompt: dict, specs: dict, files_known: bool) -> None:
    """What the server checks before running a prompt: known node types, every required input given, known
    input names, links to an existing node's output of the input's type, valid widget values."""
    from comfy_host.workflow import is_widget

    for node_id, node in prompt.items():
        spec = specs[node["class_type"]]
        given = node["inputs"]
        names = {i.id for i in spec.inputs}
        assert set(given) <= names, f"node {node_id}: unknown inputs {set(given) - names}"
        for spec_input in spec.inputs:
            where = f"node {node_id} {spec.node_id}.{spec_input.id}"
            if spec_input.id not in given:
                assert spec_input.optional, f"{where}: required input missing"
                continue
            value = given[spec_input.id]
            if isinstance(value, list):
                source = prompt[value[0]]
                source_type = specs[source["class_type"]].outputs[value[1]][1]
                assert spec_input.io_type in (source_type, "*"), f"{where}: {source_type} linked"
            else:
                assert is_widget(spec_input), f"{where}: a {spec_input.io_type} socket needs a link"
                check_value(spec.node_id, spec_input, value, files_known)


def test_every_workflow_ships_in_both_formats():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(NAMES + [DEMO])
    assert sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")) == sorted(NAMES + [DEMO])


@pytest.mark.parametrize("name", NAMES + [DEMO])
def test_ui_workflow_fits_the_node_definitions(host, name):
    from comfy_host.workflow import FRONTEND_ONLY_TYPES, is_widget, split_widgets_values

    specs = specs_of(host)
    ui, _ = load(name)
    assert ui["version"] == 0.4
    nodes = {node["id"]: node for node in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    assert len(nodes) == len(ui["nodes"]) and len(links) == len(ui["links"])
    assert ui["last_node_id"] >= max(nodes) and ui["last_link_id"] >= max(links)
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        spec = specs[node["type"]]
        where = f"{name} node {node['id']} {node['type']}"
        assert [o["name"] for o in node["outputs"]] == [n for n, _ in spec.outputs], where
        assert [o["type"] for o in node["outputs"]] == [t for _, t in spec.outputs], where
        values, extras = split_widgets_values(spec, node["widgets_values"])
        for widget in spec.widgets:
            check_value(spec.node_id, widget, values[widget.id], files_known=False)
            if widget.id == "seed":
                assert extras["seed"] in (["fixed"], ["increment"], ["decrement"], ["randomize"]), where
        socket_names = [s["name"] for s in node["inputs"]]
        assert len(set(socket_names)) == len(socket_names), where
        for slot, socket in enumerate(node["inputs"]):
            spec_input = spec.input(socket["name"])
            assert socket["type"] == spec_input.io_type, f"{where}.{socket['name']}"
            assert ("widget" in socket) == is_widget(spec_input), f"{where}.{socket['name']}"
            assert (socket.get("shape") == 7) == spec_input.optional, f"{where}.{socket['name']}: optional mark"
            if socket["link"] is not None:
                _, source, source_slot, target, target_slot, link_type = links[socket["link"]]
                assert (target, target_slot) == (node["id"], slot), f"{where}: link {socket['link']} points elsewhere"
                source_output = nodes[source]["outputs"][source_slot]
                assert socket["link"] in source_output["links"], f"{where}: source does not list the link"
                assert link_type == source_output["type"], f"{where}: link type"
                assert spec_input.io_type in (link_type, "*"), f"{where}.{socket['name']}: {link_type} linked"
        linked = {s["name"] for s in node["inputs"] if s["link"] is not None}
        for socket in spec.sockets:
            assert socket.optional or socket.id in linked, f"{where}: required {socket.id} is not linked"
    for link_id, source, source_slot, target, target_slot, _ in ui["links"]:
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert link_id in nodes[source]["outputs"][source_slot]["links"]


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_is_the_same_graph_and_valid(host, name):
    from comfy_host.workflow import ui_to_api

    specs = specs_of(host)
    ui, api = load(name)
    assert api == ui_to_api(ui, specs)
    check_prompt(api, specs, files_known=False)
    picked = {key: value for node in api.values() if node["class_type"].startswith("DiTalker")
              for key, value in node["inputs"].items() if key in SHIPPED_MODELS and isinstance(value, str)}
    assert picked == {k: v for k, v in SHIPPED_MODELS.items() if k in picked}
    assert {"checkpoint", "vae", "whisper", "t5", "clip_vision", "aligner"} <= set(picked)


def saved_video(host, outputs: dict) -> Path:
    (entry,) = [item for out in outputs.values() if out.ui for item in out.ui.get("images", [])]
    return Path(host.folder_paths.get_output_directory()) / entry["subfolder"] / entry["filename"]


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


@pytest.mark.parametrize("name", NAMES)
def test_workflow_renders_the_speech_on_tiny_models(host, tiny, name):
    _, names = tiny
    _, api = load(name)
    prompt = use_tiny_models(copy.deepcopy(api), names)
    speech = write_workflow_inputs(prompt, Path(host.folder_paths.get_input_directory()))
    check_prompt(prompt, specs_of(host), files_known=True)

    from comfy_host.workflow import execute_prompt

    outputs = execute_prompt(prompt, host.node_classes)

    by_type = {node["class_type"]: node_id for node_id, node in prompt.items()}
    fps = prompt[by_type["DiTalkerAudioEncode"]]["inputs"]["fps"]
    expected = math.ceil(speech.duration * fps)
    frames, audio, decoded_fps = outputs[by_type["DiTalkerDecode"]].result
    assert frames.shape == (expected, 32, 32, 3) and frames.dtype == torch.float32 and decoded_fps == fps
    assert 0 <= frames.min() and frames.max() <= 1 and frames.std() > 0
    # The driving audio untouched (file rate, no resampling), cut or padded to exactly the video's length.
    assert audio["sample_rate"] == speech.rate
    assert audio["waveform"].shape == (1, 1, math.ceil(expected * speech.rate / fps))
    loaded = outputs[by_type["LoadAudio"]].result[0]["waveform"]
    torch.testing.assert_close(audio["waveform"][..., :loaded.shape[-1]], loaded[..., :audio["waveform"].shape[-1]])

    video, rate = read_video(saved_video(host, outputs))
    assert video.shape == (expected, 32, 32, 3) and rate == fps
    assert audio_seconds(saved_video(host, outputs)) == pytest.approx(expected / fps, abs=1 / fps + 1024 / speech.rate)
    if "DiTalkerEstimate" in by_type:
        (text,) = outputs[by_type["PreviewAny"]].ui["text"]
        windows = len(outputs[by_type["DiTalkerSampler"]].result[0].video.windows)
        assert text.startswith(f"{windows} window(s) x 1 steps") and windows > 1
    if "DiTalkerStyleEncode" in by_type:
        style, faceless = outputs[by_type["DiTalkerStyleEncode"]].result
        assert faceless == 0 and style.clip.shape == (32, 64) and not style.pad_mask[:8].any()
        pose = outputs[by_type["DiTalkerPose"]].result[0]
        assert pose.shape == (3, expected, 16, 16) and pose.max() > 0.5
