"""How close the Run Estimate is: ``estimate_run`` (what the DiTalker Run Estimate node shows before a run) against
the measured run of the same inputs and options, time and peak memory. Prints one JSON line.

    python bench/estimate.py [--checkpoint PATH] [--sentences 4] [--steps 20] [--seed 1]

The inputs are the adherence benchmark's long held-out case cut to ``--sentences`` sentences (several windows), on
the demo model; the run is the pipeline's own (every window sampled, the whole video decoded).
``time_ratio`` and ``peak_ratio`` are measured / estimated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.adherence import conditions_for  # noqa: E402
from bench.talking.data import long_case  # noqa: E402
from ditalker_core.demo import DEFAULT_OPTIONS, TRANSFORMER, DemoModels  # noqa: E402
from ditalker_core.pipeline import estimate_run  # noqa: E402
from ditalker_core.pipeline.estimate import peak_memory  # noqa: E402
from training.synthetic.cases import render_case  # noqa: E402


def run(checkpoint: str | Path, sentences: int, steps: int, seed: int) -> dict:
    models = DemoModels(checkpoint)
    conditions = conditions_for(models, render_case(long_case(seed, sentences)))
    options = replace(DEFAULT_OPTIONS, steps=steps, seed=seed)
    height, width = conditions.reference.shape[-2:]
    estimate = estimate_run(models.pipeline, conditions.num_frames, height, width, options)
    with peak_memory(torch.device("cpu")) as memory:
        start = time.perf_counter()
        frames = models.pipeline(conditions, options)
        measured = time.perf_counter() - start
    return {"frames": len(frames), "windows": estimate.windows, "estimated_seconds": round(estimate.total_seconds, 2),
            "measured_seconds": round(measured, 2), "time_ratio": round(measured / estimate.total_seconds, 3),
            "estimated_peak_mib": round(estimate.peak_bytes / 2**20, 1),
            "measured_peak_mib": round(memory.peak / 2**20, 1),
            "peak_ratio": round(memory.peak / estimate.peak_bytes, 3), "steps": steps, "seed": seed,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(TRANSFORMER), help="DiTalker file (default: the shipped demo)")
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--steps", type=int, default=DEFAULT_OPTIONS.steps)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.checkpoint, args.sentences, args.steps, args.seed)))


if __name__ == "__main__":
    main()
