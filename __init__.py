"""ComfyUI-DiTalker: ComfyUI loads this file; the nodes live in ``nodes/``, the library in ``ditalker_core/``.

Nothing ComfyUI-specific is imported here, so the repository root stays importable without ComfyUI (pytest,
the trainer); ComfyUI calls ``comfy_entrypoint`` after start-up.
"""


async def comfy_entrypoint():
    from .nodes import DiTalkerExtension

    return DiTalkerExtension()
