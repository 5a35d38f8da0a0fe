"""Bad inputs refused at /prompt (the nodes' ``validate_inputs``, called as ComfyUI v0.3.64 calls it: the stand-in's
``validate_prompt``), every problem of a graph reported by one queue press, each naming the input and the fix.
The real server: tests/test_comfyui_integration.py."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
SOURCES = {  # model input -> (folder named, where to get it named)
    "checkpoint": ("models/ditalker", "EasyAnimateV3-XL-2-InP-512x512"),
    "vae": ("models/vae", "huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512"),
    "whisper": ("models/audio_encoders", "huggingface.co/openai/whisper-tiny"),
    "t5": ("models/text_encoders", "EasyAnimateV3-XL-2-InP-512x512"),
    "clip_vision": ("models/clip_vision", "EasyAnimateV3-XL-2-InP-512x512"),
    "aligner": ("models/ditalker/wav2vec2", "facebook/wav2vec2-base-960h"),
    "recon_model": ("models/ditalker/3dmm", "Deep3DFaceRecon_pytorch"),
}


def api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def validate(host, prompt: dict) -> dict:
    from comfy_host.workflow import validate_prompt

    return validate_prompt(prompt, host.node_classes)


def messages(errors: dict, node_id: str) -> list[str]:
    return [error["details"] for error in errors.get(node_id, [])]


def only(node, key: str, value) -> dict:
    """``validate_inputs``' arguments with one widget given and the others linked (None)."""
    import inspect

    return {name: value if name == key else None for name in inspect.getfullargspec(node.validate_inputs).args[1:]}


def with_tiny_models(prompt: dict, names: dict) -> dict:
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        for key in set(node["inputs"]) & set(SOURCES):
            if isinstance(node["inputs"][key], str) and node["inputs"][key] != "none":
                node["inputs"][key] = names[key]
    return prompt


@pytest.mark.parametrize("name", ["ditalker_talking_portrait", "ditalker_style_from_video"])
def test_one_queue_press_reports_every_missing_model_with_file_folder_and_source(host, name, tmp_path, monkeypatch):
    for folder, _ in host.pack.nodes.folders.MODEL_INPUTS.values():  # no weights installed
        _, extensions = host.folder_paths.folder_names_and_paths[folder]
        monkeypatch.setitem(host.folder_paths.folder_names_and_paths, folder, ([str(tmp_path)], extensions))
    prompt = api(name)
    errors = validate(host, prompt)
    expected = {node_id: key for node_id, node in prompt.items() for key in set(node["inputs"]) & set(SOURCES)
                if node["inputs"][key] not in ("none", None) and isinstance(node["inputs"][key], str)}
    assert len(expected) >= 5
    assert set(errors) == set(expected)  # every model node, and nothing else
    for node_id, key in expected.items():
        folder, source = SOURCES[key]
        for message in messages(errors, node_id):
            assert prompt[node_id]["inputs"][key] in message and folder in message and source in message, message


def test_the_same_workflow_with_its_models_installed_is_accepted(host, tiny):
    assert validate(host, with_tiny_models(api("ditalker_talking_portrait"), tiny[1])) == {}


BAD_VALUES = [  # node type, input, value, words the message must hold
    ("DiTalkerEmotion", "emotion", "melancholic", ["emotion 'melancholic' is not one of", "happy"]),
    ("DiTalkerModelLoader", "dtype", "int8", ["dtype 'int8' is not one of", "bf16"]),
    ("DiTalkerSampler", "scheduler", "lms", ["scheduler 'lms' is not one of", "dpm++"]),
    ("DiTalkerAudioEncode", "fps", math.nan, ["fps is nan", "from 1.0 to 120.0"]),
    ("DiTalkerSampler", "overlap", 5, ["overlap is 5", "multiple of 8"]),
    ("DiTalkerSampler", "audio_guidance", math.nan, ["audio_guidance is nan", "from 1.0 to 20.0"]),
    ("DiTalkerSampler", "emotion_guidance", math.inf, ["emotion_guidance is inf"]),
    ("DiTalkerSampler", "denoise", 0.0, ["denoise is 0.0", "from 0.05 to 1.0"]),
    ("DiTalkerPhonemes", "transcript", "  ", ["transcript is empty", "type what is said"]),
    ("DiTalkerEmotion", "custom_prompt", "", ["custom_prompt is empty"]),
]


@pytest.mark.parametrize("node_type, key, value, words", BAD_VALUES, ids=[f"{c[1]}={c[2]}" for c in BAD_VALUES])
def test_a_bad_value_is_refused_at_prompt_naming_the_input_and_the_fix(host, tiny, node_type, key, value, words):
    prompt = with_tiny_models(api("ditalker_emotion_control"), tiny[1])
    node_id = next(i for i, node in prompt.items() if node["class_type"] == node_type)
    prompt[node_id]["inputs"][key] = value
    if key == "custom_prompt":
        prompt[node_id]["inputs"]["emotion"] = "custom"
    errors = validate(host, prompt)
    assert set(errors) == {node_id}
    for message in messages(errors, node_id):
        assert all(word in message for word in words), message


@pytest.mark.parametrize("node_id, key, other, taker", [
    ("DiTalkerModelLoader", "checkpoint", "vae", "Load DiTalker VAE"),
    ("DiTalkerVAELoader", "vae", "checkpoint", "Load DiTalker Model"),
    ("DiTalkerEmotion", "t5", "clip_vision", "DiTalker Reference"),
    ("DiTalkerAudioEncode", "whisper", "t5", "DiTalker Emotion"),
    ("DiTalkerReference", "clip_vision", "whisper", "DiTalker Audio Encode"),
])
def test_a_file_of_another_kind_is_named_with_the_node_that_takes_it(host, tiny, tmp_path, monkeypatch, node_id,
                                                                     key, other, taker):
    """The tiny file made for input ``other`` put in the folder that ``key`` reads and picked there: refused at
    /prompt in a sentence (no key list) saying what it is and which node takes it; so is loading it."""
    import shutil

    from tiny_models import model_folders

    root, names = tiny
    folders = host.pack.nodes.folders
    source = model_folders(root)[folders.MODEL_INPUTS[other][0]] / names[other]
    (shutil.copytree if source.is_dir() else shutil.copyfile)(source, tmp_path / names[other])
    folder = folders.MODEL_INPUTS[key][0]
    _, extensions = host.folder_paths.folder_names_and_paths[folder]
    monkeypatch.setitem(host.folder_paths.folder_names_and_paths, folder, ([str(tmp_path)], extensions))
    answer = host.node_classes[node_id].validate_inputs(**only(host.node_classes[node_id], key, names[other]))
    assert answer is not True and f"{names[other]} is " in answer and taker in answer, answer
    assert len(answer) < 300, answer


def test_a_ditalker_file_keeps_its_own_config_whatever_the_config_widget_says(host, tiny):
    (managed,) = host.node_classes["DiTalkerModelLoader"].EXECUTE_NORMALIZED(
        checkpoint=tiny[1]["checkpoint"], config="xl", dtype="fp32", offload=False).result
    assert managed.module.config.num_attention_heads * managed.module.config.attention_head_dim == 32


def test_3dmm_weights_in_the_model_loader_and_a_genuine_mismatch_are_told_in_a_sentence(host, tiny, tmp_path,
                                                                                          monkeypatch):
    import shutil

    import torch
    from tiny_models import model_folders

    root, names = tiny
    shutil.copyfile(model_folders(root)["ditalker_3dmm"] / names["recon_model"], tmp_path / "epoch_20.pth")
    upstream = {k: v for k, v in torch.load(tmp_path / "epoch_20.pth", weights_only=True).items()}
    assert "net_recon" in upstream  # the released file's layout
    from safetensors.torch import load_file, save_file

    tiny_state = load_file(str(model_folders(root)["ditalker"] / names["checkpoint"]))
    save_file({k: v for k, v in tiny_state.items() if not k.startswith("transformer_blocks.1.")},
              str(tmp_path / "cut.safetensors"))
    _, extensions = host.folder_paths.folder_names_and_paths["ditalker"]
    monkeypatch.setitem(host.folder_paths.folder_names_and_paths, "ditalker", ([str(tmp_path)], extensions))
    loader = host.node_classes["DiTalkerModelLoader"]
    errors = host.pack.ditalker_core.errors
    with pytest.raises(errors.InputError) as wrong:
        loader.EXECUTE_NORMALIZED(checkpoint="epoch_20.pth", config="tiny", dtype="fp32", offload=False)
    assert "Deep3DFaceRecon" in str(wrong.value) and "DiTalker Style Encode" in str(wrong.value), wrong.value
    with pytest.raises(errors.InputError) as cut:
        loader.EXECUTE_NORMALIZED(checkpoint="cut.safetensors", config="tiny", dtype="fp32", offload=False)
    message = str(cut.value)
    assert "missing keys (asfm.audio_attention 8, asfm.style_attention 8, backbone 47, eca 8; e.g. " in message
    assert len(message) < 250, message
