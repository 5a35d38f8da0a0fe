"""Model initialisation, resumable training states and exported weights.

A training state is a folder ``<output_dir>/checkpoints/step-<N>/``:

* ``trainable.safetensors``: the trained modules only, in our single-file format (frozen weights are not
  stored again: they come from the init files, which the state records);
* ``optimizer.pt`` (``torch.load(weights_only=True)``-safe), or DeepSpeed's own files under ``deepspeed/``;
* ``ema.safetensors`` when EMA is on;
* ``state.json``: step, data position, scheduler state, config, init files, and the Python/NumPy RNG states;
  ``rng.safetensors``: the torch CPU/CUDA RNG states.

It is written to ``step-<N>.tmp`` and renamed into place, so a run killed at any moment leaves either a complete
state or none; the newest complete one is resumed and stale ``.tmp`` folders are removed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ditalker_core.checkpoints import load_modules, load_transformer, save_checkpoint
from ditalker_core.errors import InputError
from ditalker_core.models import DiTalkerTransformer3DModel, get_config, module_group
from ditalker_core.models.transformer import DITALKER_MODULES

GROUPS = ("backbone", *DITALKER_MODULES)
_STEP_DIR = re.compile(r"^step-(\d+)$")


# ----------------------------------------------------------------------------- model
def model_config(config: dict[str, Any]) -> dict[str, Any]:
    return get_config(config["model"]["config"], **(config["model"]["overrides"] or {}))


def build_model(config: dict[str, Any]) -> DiTalkerTransformer3DModel:
    """The transformer from ``model.init`` (fresh if None) with ``model.init_modules`` loaded on top, then the
    ``model.reinit`` modules back at their fresh initialisation (e.g. a scale adapter whose gates closed)."""
    kwargs = model_config(config)
    init = config["model"]["init"]
    model = load_transformer(init, config=kwargs, force_config=True) if init else DiTalkerTransformer3DModel(**kwargs)
    for path in config["model"]["init_modules"] or []:
        load_modules(model, path)
    reinit = set(config["model"]["reinit"] or [])
    if reinit - set(GROUPS):
        raise InputError(f"model.reinit has unknown modules {sorted(reinit - set(GROUPS))}; choose from {list(GROUPS)}")
    if reinit:
        fresh = DiTalkerTransformer3DModel(**kwargs).state_dict()
        model.load_state_dict({k: v for k, v in fresh.items() if module_group(k) in reinit}, strict=False)
    return model


def select_trainable(model: torch.nn.Module, groups: Iterable[str]) -> list[str]:
    """Freeze everything but ``groups``; returns the names of the trainable parameters."""
    groups = set(groups)
    unknown = groups - set(GROUPS)
    if unknown:
        raise InputError(f"model.trainable has unknown modules {sorted(unknown)}; choose from {list(GROUPS)}")
    present = {module_group(name) for name, _ in model.named_parameters()}
    absent = groups - present
    if absent:
        raise InputError(f"model.trainable names {sorted(absent)}, which this model config does not build; "
                         f"enable them in model.overrides or remove them")
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(module_group(name) in groups)
        if param.requires_grad:
            names.append(name)
    return names


def set_train_mode(model: torch.nn.Module) -> None:
    """Train mode for modules being trained; eval mode (no dropout) for modules that are entirely frozen."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def export(model: torch.nn.Module, path: Path, groups: Optional[Iterable[str]]) -> Path:
    """Our single-file format; ``groups`` None = every module, else only those (a small phase file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path, modules=groups)
    return path


# ----------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of the trainable parameters (warm-up decay ``min(decay, (1+n)/(10+n))``)."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in named_params.items()}

    @torch.no_grad()
    def update(self, named_params: dict[str, torch.nn.Parameter]) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, param in named_params.items():
            self.shadow[name].lerp_(param.detach().float(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, value in self.shadow.items():
            params[name].copy_(value.to(params[name].dtype))


# ----------------------------------------------------------------------------- training states
def list_states(root: Path) -> list[tuple[int, Path]]:
    """Complete training states under ``root`` (``step-<N>`` folders), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    py = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {"python": [py[0], list(py[1]), py[2]], "numpy": numpy_state}, tensors


def _set_rng_state(info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, state, gauss = info["python"]
    random.setstate((version, tuple(state), gauss))
    numpy_state = info["numpy"]
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_state(accelerator: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any, ema: Optional[EMA],
               root: Path, step: int, info: dict[str, Any], groups: Iterable[str], keep: int) -> Path:
    """Write the training state of ``step`` atomically (see module docstring); keep the ``keep`` newest."""
    final = root / f"step-{step:09d}"
    tmp = root / f"step-{step:09d}.tmp"
    deepspeed = accelerator.distributed_type.name == "DEEPSPEED"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if deepspeed:  # every rank writes its optimizer shard; frozen weights are left out
        model.save_checkpoint(str(tmp / "deepspeed"), tag="state", exclude_frozen_parameters=True)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_checkpoint(unwrapped, tmp / "trainable.safetensors", modules=groups)
        if not deepspeed:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
        rng_info, rng_tensors = _rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        state = {**info, "step": step, "scheduler": scheduler.state_dict(), "rng": rng_info,
                 "ema_updates": ema.updates if ema is not None else None}
        (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str))
        os.replace(tmp, final)
        for _, old in list_states(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def remove_incomplete(root: Path) -> None:
    """Delete the ``.tmp`` folders an interrupted save left behind."""
    for stale in root.glob("step-*.tmp") if root.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)


def find_resume(root: Path, resume: Any) -> Optional[Path]:
    """``auto``: the newest complete state (None if there is none); a path: that state; None/false: none."""
    if not resume:
        return None
    if resume == "auto":
        states = list_states(root)
        return states[-1][1] if states else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise InputError(f"checkpoint.resume={resume}: {path} is not a training state (no state.json)")
    return path


def load_state(accelerator: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any, ema: Optional[EMA],
               path: Path) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote; returns its ``state.json``."""
    state = json.loads((path / "state.json").read_text())
    unwrapped = accelerator.unwrap_model(model)
    load_modules(unwrapped, path / "trainable.safetensors")
    if accelerator.distributed_type.name == "DEEPSPEED":
        model.load_checkpoint(str(path / "deepspeed"), tag="state", load_module_strict=False,
                              load_lr_scheduler_states=False)
    else:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        if not (path / "ema.safetensors").is_file():
            raise InputError(f"{path} was saved without EMA; resume with train.ema.enabled=false")
        ema.shadow = {k: v.to(next(iter(ema.shadow.values())).device) for k, v in
                      load_file(str(path / "ema.safetensors")).items()}
        ema.updates = int(state["ema_updates"] or 0)
    _set_rng_state(state["rng"], load_file(str(path / "rng.safetensors")))
    return state
