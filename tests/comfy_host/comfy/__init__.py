"""Stand-in for ComfyUI's ``comfy`` package (see ``tests/comfy_host/__init__.py``)."""
