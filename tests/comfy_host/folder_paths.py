"""Stand-in for ComfyUI's ``folder_paths``: model folders, file lists and the input/output/user directories.

It mirrors ComfyUI's API (v0.3.64) for offline tests; the real server is covered by
tests/test_comfyui_integration.py. ``set_base_path`` plays ``--base-directory``: it resets every default path
under a new base, before any pack is loaded. File lists are not cached (ComfyUI caches them by mtime).
"""

from __future__ import annotations

import os
from collections.abc import Collection

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
_MODEL_FOLDERS = ("checkpoints", "loras", "vae", "clip_vision", "style_models", "embeddings", "vae_approx",
                  "gligen", "upscale_models", "hypernetworks", "photomaker", "model_patches", "audio_encoders")

base_path = ""
models_dir = ""
input_directory = output_directory = temp_directory = user_directory = ""
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def set_base_path(path: str) -> None:
    """Point every default folder at ``path`` (``--base-directory``) and forget paths added before."""
    global base_path, models_dir, input_directory, output_directory, temp_directory, user_directory
    base_path = os.path.abspath(path)
    models_dir = os.path.join(base_path, "models")
    folder_names_and_paths.clear()
    for name in _MODEL_FOLDERS:
        folder_names_and_paths[name] = ([os.path.join(models_dir, name)], supported_pt_extensions)
    folder_names_and_paths["text_encoders"] = ([os.path.join(models_dir, "text_encoders"),
                                                os.path.join(models_dir, "clip")], supported_pt_extensions)
    folder_names_and_paths["diffusion_models"] = ([os.path.join(models_dir, "unet"),
                                                   os.path.join(models_dir, "diffusion_models")],
                                                  supported_pt_extensions)
    folder_names_and_paths["custom_nodes"] = ([os.path.join(base_path, "custom_nodes")], set())
    input_directory = os.path.join(base_path, "input")
    output_directory = os.path.join(base_path, "output")
    temp_directory = os.path.join(base_path, "temp")
    user_directory = os.path.join(base_path, "user")
    os.makedirs(input_directory, exist_ok=True)


def map_legacy(folder_name: str) -> str:
    return {"unet": "diffusion_models", "clip": "text_encoders"}.get(folder_name, folder_name)


def get_input_directory() -> str:
    return input_directory


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_user_directory() -> str:
    return user_directory


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """A file picked in a LoadImage/LoadAudio/LoadVideo combo ("x.png [output]" picks another directory)."""
    for suffix, directory in ((" [output]", output_directory), (" [input]", input_directory),
                              (" [temp]", temp_directory)):
        if name.endswith(suffix):
            return os.path.join(directory, name[: -len(suffix)])
    return os.path.join(default_dir or input_directory, name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """What an extra_model_paths.yaml entry does; an unknown name gets an empty (match-all) extension set."""
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths, _ = folder_names_and_paths[folder_name]
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[map_legacy(folder_name)][0][:]


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> list[str]:
    """Every file under ``directory``, relative to it (links followed)."""
    if not os.path.isdir(directory):
        return []
    excluded = excluded_dir_names or []
    found = []
    for dirpath, subdirs, filenames in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        found += [os.path.relpath(os.path.join(dirpath, name), directory) for name in filenames]
    return found


def filter_files_extensions(files: Collection[str], extensions: Collection[str]) -> list[str]:
    return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)


def get_filename_list(folder_name: str) -> list[str]:
    """Files of every path of ``folder_name``, recursive and relative, filtered by the folder's extensions."""
    paths, extensions = folder_names_and_paths[map_legacy(folder_name)]
    found: set[str] = set()
    for path in paths:
        found.update(filter_files_extensions(recursive_search(path, excluded_dir_names=[".git"]), extensions))
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The first path of ``folder_name`` holding ``filename`` (a file), or None."""
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for path in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(path, filename)
        if os.path.isfile(full_path):
            return full_path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path
