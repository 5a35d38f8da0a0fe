"""Tiny, offline-built weights for every model the nodes load, in ComfyUI's folder layout.

``write_tiny_models(models_dir)`` fills a ComfyUI ``models/`` folder so the ``tiny`` DiTalker config runs end to
end on a CPU: the transformer and VAE in our checkpoint format, and random-weight Whisper, T5, CLIP vision,
Wav2Vec2 CTC, DWPose (ONNX) and Deep3DFaceRecon models with the real files' layouts and input/output signatures.
The results mean nothing; the code paths are the real ones. The single-model builders are shared with the
extractor tests.

Shipped workflows name the released files (README's table); ``use_tiny_models`` picks the tiny ones in the same
combos, as a user with other files would, and shrinks the run to CPU size; ``write_workflow_inputs`` writes the
media they load: a real portrait photo, the transcript spoken by espeak-ng, a short video of the face moving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditalker_core.models import get_config, get_vae_config
from training.tiny import save_tiny_clip_vision, save_tiny_t5  # shared with the CPU training demo

# ComfyUI folder name -> where it lives under models/ (the pack's own folders sit under models/ditalker/).
FOLDERS = {
    "ditalker": "ditalker", "ditalker_3dmm": "ditalker/3dmm", "ditalker_dwpose": "ditalker/dwpose",
    "ditalker_align": "ditalker/wav2vec2", "vae": "vae", "audio_encoders": "audio_encoders",
    "text_encoders": "text_encoders", "clip_vision": "clip_vision",
}

# What the tests change in a shipped workflow to run it on the tiny models on a CPU, by (node type, input).
CPU_OVERRIDES: dict[tuple[str, str], Any] = {
    ("DiTalkerAudioEncode", "fps"): 5.0,  # a fifth of the frames and model windows of 25 fps
    ("DiTalkerReference", "resolution"): 32,  # 512 x 512 -> 32 x 32 frames
    ("DiTalkerSampler", "steps"): 1,
    ("DiTalkerEstimate", "steps"): 1,
    ("DiTalkerStyleEncode", "style_length"): get_config("tiny")["style_max_len"],  # the most it reads
}

WHISPER_LAYERS, WHISPER_WIDTH = 4, 32  # whisper-tiny has 4 encoder layers -> 5 rows per token, 10 x 5 = 50

# DWPose stand-ins: YOLOX and RTMPose graphs with the real I/O signatures at small input sizes.
DET_HW = (64, 64)
POSE_HW = (36, 24)  # (H, W); DWPose's real one is 384 x 288
# COCO-WholeBody index -> SimCC argmax (x bin, y bin); for the person box below a bin maps to pixel
# 5/6 * bin + (12, 2): the box (16, 8)-(48, 56) padded 1.25x by rtmlib has the model's 2:3 aspect.
SIMCC_PEAKS = {0: (24, 12), 5: (42, 36), 6: (6, 36), 23: (18, 30), 91: (30, 48)}


def save_tiny_whisper(path: Path, local: bool = False) -> Path:
    """A random Whisper with the real 30 s / 1500-token geometry and a small width.

    ``local=True`` zeroes the positional table and the attention values, so every token depends
    only on the audio around it: the features of any moment are then known from a short run.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
                           d_model=WHISPER_WIDTH, encoder_layers=WHISPER_LAYERS, encoder_attention_heads=2,
                           encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                           max_target_positions=32)
    model = WhisperModel(config)
    if local:
        with torch.no_grad():
            model.encoder.embed_positions.weight.zero_()
            for layer in model.encoder.layers:
                layer.self_attn.v_proj.weight.zero_()
                layer.self_attn.out_proj.weight.zero_()
    model.save_pretrained(path)
    WhisperFeatureExtractor().save_pretrained(path)
    return path


def save_tiny_wav2vec2(path: Path) -> Path:
    """Random Wav2Vec2 CTC model with a lowercase letter vocabulary, like facebook/wav2vec2-base-960h."""
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    vocab.update({c: 5 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")})
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab_src.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(path / "vocab_src.json")).save_pretrained(path)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(path)
    return path


def _yolox_predictions() -> np.ndarray:
    """Raw YOLOX output as in DWPose's yolox_l.onnx (no NMS): per anchor dx, dy, log w, log h, obj, 80 classes."""
    anchors = sum((DET_HW[0] // s) * (DET_HW[1] // s) for s in (8, 16, 32))
    out = np.zeros((1, anchors, 85))
    # Stride-8 cell (4, 4): centre (32, 32), 32 x 48 box, person (class 0) at 0.9.
    out[0, 4 * 8 + 4, :5] = (0, 0, np.log(4), np.log(6), 1)
    out[0, 4 * 8 + 4, 5] = 0.9
    # Stride-16 cell (1, 1): a confident chair (class 56) that must not become a person.
    out[0, 64 + 1 * 4 + 1, :5] = (0, 0, 0, 0, 1)
    out[0, 64 + 1 * 4 + 1, 5 + 56] = 0.95
    return out


def _constant_onnx(path: Path, input_shape: tuple[int, ...], outputs: dict[str, np.ndarray]) -> None:
    """An ONNX graph with the given image input whose outputs are fixed tensors (still wired to the input)."""
    from onnx import TensorProto, helper, numpy_helper, save

    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    initializers = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    infos = []
    for name, value in outputs.items():
        initializers.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
    graph = helper.make_graph(nodes, "tiny", [image], infos, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))


def save_tiny_dwpose(folder: Path) -> Path:
    """yolox_l.onnx (one person box, one chair) and dw-ll_ucoco_384.onnx (SimCC peaks at SIMCC_PEAKS)."""
    from ditalker_core.extract.pose import DET_FILE, POSE_FILE

    folder.mkdir(parents=True, exist_ok=True)
    _constant_onnx(folder / DET_FILE, (1, 3, *DET_HW), {"dets": _yolox_predictions()})
    simcc_x = np.zeros((1, 133, POSE_HW[1] * 2))
    simcc_y = np.zeros((1, 133, POSE_HW[0] * 2))
    for index, (x_bin, y_bin) in SIMCC_PEAKS.items():
        simcc_x[0, index, x_bin] = 1.0
        simcc_y[0, index, y_bin] = 1.0
    _constant_onnx(folder / POSE_FILE, (1, 3, *POSE_HW), {"simcc_x": simcc_x, "simcc_y": simcc_y})
    return folder


def save_random_recon(path: Path) -> torch.nn.Module:
    """A random-weight regressor saved like Deep3DFaceRecon's epoch_20.pth (net_recon + optimizer state)."""
    from ditalker_core.extract.style3dmm import ReconNet

    torch.manual_seed(0)
    net = ReconNet().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net_recon": net.state_dict(), "opt_00": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, path)
    return net


def save_tiny_transformer(path: Path) -> Path:
    """The ``tiny`` DiTalker in our checkpoint format; the zero-initialised output layers get small random values
    so every condition moves the result (a fresh model ignores its DiTalker modules by design)."""
    from ditalker_core.checkpoints import save_checkpoint
    from ditalker_core.models import DiTalkerTransformer3DModel

    torch.manual_seed(0)
    model = DiTalkerTransformer3DModel(**get_config("tiny")).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2 and not parameter.any():
                parameter.normal_(0, 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path)
    return path


def save_tiny_vae(path: Path) -> Path:
    from ditalker_core.checkpoints import save_checkpoint
    from ditalker_core.models.vae import AutoencoderKLMagvit

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(AutoencoderKLMagvit(**get_vae_config("tiny")).eval(), path)
    return path


def model_folders(models_dir: Path) -> dict[str, Path]:
    """ComfyUI folder name -> path, for registering ``models_dir`` the way an extra_model_paths.yaml does."""
    return {name: Path(models_dir) / sub for name, sub in FOLDERS.items()}


def write_tiny_models(models_dir: Path) -> dict[str, str]:
    """Write every model under ``models_dir`` (a ComfyUI ``models/`` folder, layout ``FOLDERS``).

    Returns the names to pick in the nodes' model combos, keyed by the input that picks them.
    """
    tiny = get_config("tiny")
    folder = model_folders(models_dir)
    names = {"checkpoint": "ditalker_tiny.safetensors", "vae": "ditalker_vae_tiny.safetensors",
             "whisper": "whisper-tiny-test", "t5": "t5-tiny-test", "clip_vision": "clip-tiny-test",
             "aligner": "w2v-tiny-test", "recon_model": "epoch_20.pth"}
    save_tiny_transformer(folder["ditalker"] / names["checkpoint"])
    save_tiny_vae(folder["vae"] / names["vae"])
    assert tiny["audio_feature_dim"] == WHISPER_WIDTH
    save_tiny_whisper(folder["audio_encoders"] / names["whisper"])
    save_tiny_t5(folder["text_encoders"] / names["t5"], tiny["caption_channels"])
    save_tiny_clip_vision(folder["clip_vision"] / names["clip_vision"], projection_dim=tiny["clip_embed_dim"])
    save_tiny_wav2vec2(folder["ditalker_align"] / names["aligner"])
    save_tiny_dwpose(folder["ditalker_dwpose"])
    save_random_recon(folder["ditalker_3dmm"] / names["recon_model"])
    return names


_SESSION: dict[str, tuple[Path, dict[str, str]]] = {}


def session_tiny_models(tmp_path_factory: Any) -> tuple[Path, dict[str, str]]:
    """(models folder, names) built once per pytest session: building takes several seconds."""
    if "built" not in _SESSION:
        root = tmp_path_factory.mktemp("tiny_models")
        _SESSION["built"] = (root, write_tiny_models(root))
    return _SESSION["built"]


def use_tiny_models(prompt: dict[str, dict], names: dict[str, str]) -> dict[str, dict]:
    """An API-format prompt with the tiny models picked in every model combo and ``CPU_OVERRIDES`` applied."""
    for node in prompt.values():
        inputs = node["inputs"]
        for name, value in inputs.items():
            if node["class_type"].startswith("DiTalker") and name in names and isinstance(value, str):
                inputs[name] = names[name]
            elif (node["class_type"], name) in CPU_OVERRIDES and not isinstance(value, list):
                inputs[name] = CPU_OVERRIDES[node["class_type"], name]
    return prompt


def style_video_frames(count: int = 8, size: int = 256) -> np.ndarray:
    """uint8 (count, size, size, 3): skimage's astronaut photo drifting and zooming a little, like a talking head
    (the face is about 45 px wide: MTCNN finds it, and it stays cheap)."""
    from PIL import Image
    from skimage.data import astronaut

    photo = Image.fromarray(astronaut())
    frames = []
    for index in range(count):
        phase = 2 * np.pi * index / count
        scale = int(size * (1.06 + 0.03 * np.sin(phase)))
        left, top = (scale - size) // 2 + round(3 * np.sin(phase)), (scale - size) // 2 + round(2 * np.cos(phase))
        moved = np.asarray(photo.resize((scale, scale), Image.Resampling.BILINEAR))
        frames.append(moved[top:top + size, left:left + size])
    return np.stack(frames)


def write_workflow_inputs(prompt: dict[str, dict], input_dir: Path) -> Any:
    """Write every file the prompt's LoadImage/LoadAudio/LoadVideo nodes name into ``input_dir``; the speech
    says the DiTalker Phonemes transcript. Returns the speech (``speech.Speech``)."""
    from PIL import Image
    from skimage.data import astronaut
    from training.synthetic.speech import synthesize, write_wav

    from ditalker_core.media import write_video

    transcripts = [n["inputs"]["transcript"] for n in prompt.values() if n["class_type"] == "DiTalkerPhonemes"]
    speech = synthesize(transcripts[0] if transcripts else "Hello, nice to meet you.")
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "LoadImage":
            Image.fromarray(astronaut()).save(input_dir / inputs["image"])
        elif kind == "LoadAudio":
            write_wav(input_dir / inputs["audio"], speech.audio, speech.rate)
        elif kind == "LoadVideo":
            write_video(input_dir / inputs["file"], style_video_frames(), 25.0)
    return speech
