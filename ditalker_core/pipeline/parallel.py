"""Sequence parallel sampling: one video's token sequence split over N processes by diffusers' context
parallelism (the transformer's ``_cp_plan``: each process holds a run of latent frames; Ulysses all-to-all in
the motion modules' attentions across frames). Every process runs the same pipeline; process 0 writes.

    python -m ditalker_core.demo --nproc 2 ...     (re-launches itself under torchrun)
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import torch

from ..errors import InputError


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch(nproc: int, module: str, argv: list[str]) -> NoReturn:
    """Start ``python -m module argv`` in ``nproc`` processes with torchrun (one machine) in place of this one;
    ``--nproc`` itself is left out of ``argv`` (torchrun would read it as its own option; the processes know
    their number from torchrun)."""
    kept = [a for i, a in enumerate(argv) if not a.startswith("--nproc") and not (i and argv[i - 1] == "--nproc")]
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={nproc}", "-m", module, *kept])


def process_device() -> str:
    """This process's device: its own GPU under torchrun, else the CPU."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def join(transformer: torch.nn.Module) -> int:
    """Join the process group and split ``transformer``'s sequence over it; returns this process's rank."""
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    world = int(os.environ["WORLD_SIZE"])
    heads = transformer.config.num_attention_heads
    frames = transformer.config.audio_frames // 4
    if heads % world or frames % world:
        raise InputError(f"--nproc {world}: the model's {heads} attention heads and {frames} latent frames per "
                         f"window must both divide by the number of processes; choose a divisor of both")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
    except ZeroDivisionError as error:  # diffusers: rank % torch.accelerator.device_count()
        raise InputError(f"--nproc {world} needs one accelerator per process: diffusers' context parallelism "
                         f"places process r on accelerator r and this machine has none ({error}); run without "
                         f"--nproc") from error
    return dist.get_rank()
