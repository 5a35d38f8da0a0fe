"""Stand-in for ComfyUI's ``comfy_api`` package (see ``tests/comfy_host/__init__.py``)."""
