"""The fixtures' deterministic weight recipe (see ../shared/fixtures/*/README.md)."""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("DITALKER_PARITY_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def recipe_tensor(index: int, shape: list[int]) -> torch.Tensor:
    """Parameter number ``index`` of the sorted manifest, as the fixture recorder made it."""
    g = torch.Generator().manual_seed(index)
    scale = 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 0.1
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).float()


@torch.no_grad()
def fill_with_recipe(module: torch.nn.Module, shapes: dict[str, list[int]], kept: set[str],
                     plus_one: set[str] = frozenset()) -> None:
    """Write the recipe's values into ``module`` in place, key by key (no second copy in memory).

    ``shapes`` is the reference manifest; every key of it must exist in ``module`` with that shape.
    Keys in ``kept`` keep what the module built; keys in ``plus_one`` get 1.0 added (``ln1`` recipe).
    """
    own = module.state_dict(keep_vars=True)
    for i, key in enumerate(sorted(shapes)):
        if key in kept:
            continue
        target = own[key]
        assert list(target.shape) == list(shapes[key]), (key, target.shape, shapes[key])
        value = recipe_tensor(i, shapes[key])
        if key in plus_one:
            value += 1.0
        target.copy_(value)


@lru_cache(maxsize=None)
def vae_with_recipe(config_path: Path) -> torch.nn.Module:
    """A fixture VAE config with the recipe's weights (cached: tests only read it)."""
    from ditalker_core.models.vae import AutoencoderKLMagvit

    manifest = json.loads(config_path.read_text())
    model = AutoencoderKLMagvit.from_config(manifest["config"]).eval().requires_grad_(False)
    fill_with_recipe(model, manifest["state_dict_shapes"], set(manifest["buffers_not_randomized"]))
    return model
