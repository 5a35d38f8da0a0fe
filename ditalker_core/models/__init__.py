"""DiTalker model parts, named after the paper."""

from .configs import CONFIGS, VAE_CONFIGS, get_config, get_vae_config
from .transformer import DiTalkerTransformer3DModel, DiTalkerTransformerOutput, module_group

__all__ = ["CONFIGS", "VAE_CONFIGS", "DiTalkerTransformer3DModel", "DiTalkerTransformerOutput", "get_config",
           "get_vae_config", "module_group"]
