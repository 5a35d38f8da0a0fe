"""One process of the 2-process context-parallel check (tests/test_model.py starts it with torchrun, gloo).

Every process builds the same tiny model (grouped audio, every module, non-trivial weights) and inputs from fixed
seeds, enables diffusers' context parallelism with the model's ``_cp_plan`` (Ulysses over 2 processes) and
runs one forward; process 0 saves the output to argv[1].
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_model import CONTEXT_PARALLEL_FRAMES, inputs, randomize, tiny  # noqa: E402

# diffusers 0.42 places each process on torch.accelerator device ``rank % device_count()``, which divides by zero
# on a machine without one; the CPU is the device here, so it is told it has one.
torch.accelerator.device_count = lambda: 1

dist.init_process_group("gloo")
model = tiny(audio_token_groups=CONTEXT_PARALLEL_FRAMES)
randomize(model)
model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=dist.get_world_size()))
with torch.no_grad():
    sample = model(**inputs(model, frames=CONTEXT_PARALLEL_FRAMES)).sample
if dist.get_rank() == 0:
    torch.save(sample, sys.argv[1])
dist.destroy_process_group()
