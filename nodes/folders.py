"""Where the pack's weights live in ComfyUI's model folders, and how a chosen name becomes a path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import folder_paths

from ..ditalker_core.demo import INPUTS as DEMO_INPUTS_DIR
from ..ditalker_core.demo import MODELS as DEMO_MODELS
from ..ditalker_core.errors import MissingModelError

WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".pt", ".bin", ".ckpt"}

# folder name -> (extensions listed, where to download). Core folders keep their own registration.
PACK_FOLDERS = {
    "ditalker": (WEIGHT_EXTENSIONS, "the DiTalker release, or the EasyAnimateV3-XL-2-InP-512x512 transformer "
                                    "(https://huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512)"),
    "ditalker_3dmm": ({".pth"}, "Deep3DFaceRecon_pytorch epoch_20.pth "
                                "(https://github.com/sicxu/Deep3DFaceRecon_pytorch#inference-with-a-pre-trained-model)"),
    "ditalker_dwpose": ({".onnx"}, "https://huggingface.co/yzd-v/DWPose (yolox_l.onnx, dw-ll_ucoco_384.onnx)"),
    "ditalker_align": (set(), "a Wav2Vec2 CTC folder, e.g. https://huggingface.co/facebook/wav2vec2-base-960h "
                              "(English) or jonatasgrosman/wav2vec2-large-xlsr-53-chinese-zh-cn"),
}
SOURCES = {
    "vae": "the vae/ folder of https://huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512",
    "text_encoders": "the text_encoder/ + tokenizer/ folders of "
                     "https://huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512 (T5)",
    "clip_vision": "the image_encoder/ folder of https://huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512",
    "audio_encoders": "https://huggingface.co/openai/whisper-tiny (the whole folder)",
    **{name: source for name, (_, source) in PACK_FOLDERS.items()},
}
# The nodes' model inputs: input name -> (ComfyUI folder, what the user picked there).
MODEL_INPUTS = {
    "checkpoint": ("ditalker", "DiTalker checkpoint"), "vae": ("vae", "DiTalker VAE"),
    "whisper": ("audio_encoders", "Whisper encoder"), "t5": ("text_encoders", "T5 text encoder"),
    "clip_vision": ("clip_vision", "CLIP vision encoder"), "aligner": ("ditalker_align", "alignment model"),
    "recon_model": ("ditalker_3dmm", "Deep3DFaceRecon weights"),
}
_SUBFOLDERS = {"ditalker": "ditalker", "ditalker_3dmm": "ditalker/3dmm", "ditalker_dwpose": "ditalker/dwpose",
               "ditalker_align": "ditalker/wav2vec2"}


def register_folders() -> None:
    """Add the pack's folders under ``models/`` without dropping paths a user's extra_model_paths set."""
    for name, (extensions, _) in PACK_FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, _SUBFOLDERS[name])
        paths, _ = folder_paths.folder_names_and_paths.get(name, ([], set()))
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[name] = (paths, extensions)


DEMO_FOLDERS = ("ditalker", "vae", "text_encoders", "clip_vision", "audio_encoders")
DEMO_INPUTS = "ditalker_demo_"  # prefix of the demo inputs' names in ComfyUI's input folder


def register_demo() -> None:
    """The shipped demo model's folders (``ditalker_core/demo/models/<folder>``) join ComfyUI's, and its inputs
    are copied to ``input/ditalker_demo_*`` (once, never over a user's file; at the top of the folder, where the
    file pickers of Load Image / Audio / Video list them), so the demo workflow runs as installed."""
    for name in DEMO_FOLDERS:
        path = DEMO_MODELS / name
        if path.is_dir() and str(path) not in folder_paths.folder_names_and_paths.get(name, ([], set()))[0]:
            folder_paths.add_model_folder_path(name, str(path))
    folder = Path(folder_paths.get_input_directory())
    for source in sorted(DEMO_INPUTS_DIR.glob("*")):
        target = folder / f"{DEMO_INPUTS}{source.name}"
        if source.suffix in (".png", ".wav", ".mp4", ".npy", ".txt") and not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def files(folder: str) -> list[str]:
    """Weight files of a folder, without those of the pack's folders nested in it (models/ditalker/3dmm, ...),
    which ComfyUI's recursive listing would otherwise offer as DiTalker checkpoints."""
    nested = tuple(sub[len(folder) + 1:] + "/" for sub in _SUBFOLDERS.values()
                   if sub.startswith(folder + "/"))
    return [name for name in folder_paths.get_filename_list(folder)
            if not name.replace(os.sep, "/").startswith(nested)]


def model_dirs(folder: str) -> list[str]:
    """Sub-folders that hold a Hugging Face style model (a config.json), for folder-shaped weights."""
    found = []
    for root in folder_paths.get_folder_paths(folder):
        if os.path.isdir(root):
            found += sorted(name for name in os.listdir(root) if os.path.isfile(os.path.join(root, name, "config.json"))
                            or os.path.isfile(os.path.join(root, name, "text_encoder", "config.json")))
    return found


def resolve(folder: str, name: str, what: str) -> Path:
    """The full path of file or sub-folder ``name`` in ComfyUI folder ``folder``, or a MissingModelError."""
    roots = folder_paths.get_folder_paths(folder)
    for root in roots:
        candidate = Path(root) / name
        if candidate.exists():
            return candidate
    raise MissingModelError(what, [Path(root) / name for root in roots], f"models/{_SUBFOLDERS.get(folder, folder)}/",
                            SOURCES.get(folder, "see the README"))


def resolve_input(input_name: str, name: str) -> Path:
    """The path a node's model input (``MODEL_INPUTS``) names, or a MissingModelError naming file, folder, source."""
    folder, what = MODEL_INPUTS[input_name]
    return resolve(folder, name, what)
