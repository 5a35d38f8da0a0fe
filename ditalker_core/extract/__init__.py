"""Condition extractors: audio, phonemes, 3DMM style, DWPose frames, emotion/reference, masks.

Each submodule is usable from plain Python and loads its weights from a local path. Each also
exposes ``add_arguments(parser)`` and ``run(args)`` for ``python -m ditalker_core.extract``.
"""

EXTRACTORS = ("audio", "phonemes", "style", "pose", "emotion", "masks")
