"""DiTalker in plain PyTorch: the model, its condition extractors and the sampling pipeline.

Nothing in this package imports ComfyUI; the node pack in ``nodes/`` and the trainer in
``training/`` are thin users of it.
"""

__version__ = "0.1.0"
