"""DiTalker model parts, named after the paper."""

from .configs import CONFIGS, get_config
from .transformer import DiTalkerTransformer3DModel, DiTalkerTransformerOutput, module_group

__all__ = ["CONFIGS", "DiTalkerTransformer3DModel", "DiTalkerTransformerOutput", "get_config", "module_group"]
