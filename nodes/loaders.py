"""Loader nodes: the DiTalker transformer and the MagViT VAE, handed to ComfyUI's memory manager."""

from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from ..ditalker_core.checkpoints import load_transformer, load_vae
from ..ditalker_core.models import CONFIGS, get_config
from . import folders
from .validation import check, wrong_weights_named
from .sockets import MODEL, VAE

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice != "auto":
        return DTYPES[choice]
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if mm.should_use_fp16(device) else torch.float32


class _Held(torch.nn.Module):
    """A plain module around a diffusers model: ModelPatcher sets ``.device``, a read-only property there."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


class ManagedModel:
    """A model ComfyUI may offload between runs; ``get()`` puts it on the compute device."""

    def __init__(self, module: torch.nn.Module, offload: bool):
        device = mm.get_torch_device()
        self.offload = offload
        self.patcher = ModelPatcher(_Held(module), load_device=device,
                                    offload_device=mm.unet_offload_device() if offload else device)

    @property
    def module(self) -> torch.nn.Module:
        return self.patcher.model.inner

    def get(self) -> torch.nn.Module:
        mm.load_models_gpu([self.patcher], force_full_load=True)
        return self.module


class DiTalkerModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerModelLoader", display_name="Load DiTalker Model", category="DiTalker/loaders",
            description="Loads a DiTalker transformer (or an EasyAnimateV3 I2V transformer, whose DiTalker "
                        "modules then start untrained) from models/ditalker.",
            inputs=[
                io.Combo.Input("checkpoint", options=folders.files("ditalker"),
                               tooltip="A file in models/ditalker: a DiTalker checkpoint (carries its config) or "
                                       "an upstream EasyAnimateV3/official DiTalker state dict."),
                io.Combo.Input("config", options=sorted(CONFIGS), default="xl",
                               tooltip="Model size for upstream files without our metadata; a DiTalker file "
                                       "carries its own config, which wins."),
                io.Combo.Input("dtype", options=["auto", "bf16", "fp16", "fp32"], default="auto",
                               tooltip="Compute precision; auto picks bf16/fp16 where the device supports it."),
                io.Boolean.Input("offload", default=True,
                                 tooltip="Let ComfyUI move the model to system RAM between runs."),
            ],
            outputs=[MODEL.Output(display_name="model",
                                  tooltip="The DiTalker transformer, for the Sampler and Run Estimate.")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str, config: str, dtype: str) -> bool | str:
        return check(cls, dict(checkpoint=checkpoint, config=config, dtype=dtype))

    @classmethod
    def execute(cls, checkpoint: str, config: str, dtype: str, offload: bool) -> io.NodeOutput:
        path = folders.resolve_input("checkpoint", checkpoint)
        device = mm.get_torch_device()
        with wrong_weights_named("checkpoint"):
            model = load_transformer(path, config=get_config(config), dtype=pick_dtype(dtype, device),
                                     device=mm.unet_offload_device() if offload else device)
        return io.NodeOutput(ManagedModel(model, offload))


class DiTalkerVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerVAELoader", display_name="Load DiTalker VAE", category="DiTalker/loaders",
            description="Loads the EasyAnimateV3 MagViT slice VAE from models/vae (a file, or the released vae/ "
                        "folder with its config.json).",
            inputs=[
                io.Combo.Input("vae", options=folders.files("vae") + folders.model_dirs("vae"),
                               tooltip="A VAE file or folder in models/vae."),
                io.Combo.Input("dtype", options=["auto", "bf16", "fp16", "fp32"], default="auto",
                               tooltip="Encode/decode precision. bf16 made the VAE about 10x faster on a CPU "
                                       "with bf16 matrix units (AMX) and left lip sync, style and emotion as in "
                                       "float32 (README, Speed table: vae_bf16); on other CPUs bf16 is slow. auto "
                                       "picks bf16/fp16 where ComfyUI does."),
                io.Boolean.Input("tiling", default=True,
                                 tooltip="Tile frames larger than 384 px (the V3 rule) to bound memory."),
            ],
            outputs=[VAE.Output(display_name="vae",
                                tooltip="The MagViT VAE, for the Sampler, Decode and Run Estimate.")],
        )

    @classmethod
    def validate_inputs(cls, vae: str, dtype: str) -> bool | str:
        return check(cls, dict(vae=vae, dtype=dtype))

    @classmethod
    def execute(cls, vae: str, dtype: str, tiling: bool) -> io.NodeOutput:
        device = mm.get_torch_device()
        with wrong_weights_named("vae"):
            model = load_vae(folders.resolve_input("vae", vae), dtype=pick_dtype(dtype, device))
        model.use_tiling = tiling
        return io.NodeOutput(ManagedModel(model, offload=True))
