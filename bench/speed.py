"""What each speed setting costs in adherence: time per window and the adherence figures of the same held-out
cases, all in one run. Prints one JSON line.

    python bench/speed.py [--checkpoint PATH] [--cases 2] [--seed 1] [--steps 20] [--settings NAME ...]

Settings (``SETTINGS``), every one from diffusers' machinery or the pipeline's own options: the baseline (the
demo's sampling: DPM-Solver++ 20 steps, denoise 0.7), diffusers' FirstBlockCache and MagCache at three thresholds
each (MagCache measures its ratios on an untimed warm-up) and TaylorSeer at two intervals, fewer steps with each
scheduler, bf16 weights, bf16 autocast (the Speed node's precision), the VAE in bf16 (its loader's dtype),
``compile_repeated_blocks`` (one compiled block; its compile time is spent on an untimed warm-up) and combinations;
one untimed run before all, and one before each setting that changes a model, so no setting pays first-call costs.
``ratio`` = baseline seconds per window / the setting's; ``transformer_seconds_per_window`` is the part spent in
the transformer, the only part a step cache, fewer steps or another precision can shorten (the rest is the VAE
and the conditions).
Cases, probes and scores are the adherence benchmark's (``bench/adherence.py``, ``bench/talking/``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.adherence import conditions_for, generate, score, summarize  # noqa: E402
from bench.talking.data import benchmark_cases  # noqa: E402
from bench.talking.probes import load_probe, read_video  # noqa: E402
from ditalker_core.checkpoints import keep_in_fp32  # noqa: E402
from ditalker_core.demo import DEFAULT_OPTIONS, TRANSFORMER, DemoModels  # noqa: E402
from ditalker_core.pipeline import SamplingOptions  # noqa: E402
from ditalker_core.pipeline.scheduling import SCHEDULERS  # noqa: E402
from ditalker_core.pipeline.speed import Speedups  # noqa: E402
from training.synthetic.cases import render_case  # noqa: E402


@dataclass(frozen=True)
class Setting:
    options: dict[str, Any] = field(default_factory=dict)  # SamplingOptions fields changed
    model: Callable[[torch.nn.Module], torch.nn.Module] | None = None  # a changed copy of the transformer
    vae: Callable[[torch.nn.Module], torch.nn.Module] | None = None  # a changed copy of the VAE
    warm_up: bool = False  # one untimed run first (compilation, MagCache ratios, a new model copy's first calls)


def _bf16(model: torch.nn.Module) -> torch.nn.Module:
    """bf16 weights as the loader gives them (its ``_keep_in_fp32_modules`` in float32)."""
    return keep_in_fp32(torch.nn.Module.to(copy.deepcopy(model), torch.bfloat16))


def _vae_bf16(vae: torch.nn.Module) -> torch.nn.Module:
    """The VAE as its loader gives it with dtype bf16 (the VAE loader node's ``dtype``)."""
    return torch.nn.Module.to(copy.deepcopy(vae), torch.bfloat16)


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy to compile: compiled blocks stay compiled on their model, and would be in every later setting."""
    return copy.deepcopy(model)


def _cache(threshold: float, kind: str = "first_block") -> dict[str, Any]:
    return {"speed": Speedups(kind, threshold)}


def _taylorseer(interval: int) -> dict[str, Any]:
    return {"speed": Speedups("taylorseer", interval=interval)}


SETTINGS = {
    "baseline": Setting(),
    "first_block_0.05": Setting(_cache(0.05)),
    "first_block_0.1": Setting(_cache(0.1)),
    "first_block_0.2": Setting(_cache(0.2)),
    "mag_0.05": Setting(_cache(0.05, "mag"), warm_up=True),
    "mag_0.1": Setting(_cache(0.1, "mag"), warm_up=True),
    "mag_0.3": Setting(_cache(0.3, "mag"), warm_up=True),
    "taylorseer_2": Setting(_taylorseer(2)),
    "taylorseer_3": Setting(_taylorseer(3)),
    **{f"{name}_{steps}_steps": Setting({"scheduler": name, "steps": steps})  # the scheduler x steps grid
       for name in SCHEDULERS for steps in (20, 10, 6, 4) if (name, steps) != ("dpm++", 20)},
    "bf16": Setting(model=_bf16),
    "autocast_bf16": Setting({"speed": Speedups(precision="bf16")}),
    "compiled_blocks": Setting({"speed": Speedups(compile=True)}, model=_copy, warm_up=True),
    "dpm++_10_steps+first_block_0.1": Setting({"steps": 10, **_cache(0.1)}),
    "dpm++_10_steps+mag_0.1": Setting({"steps": 10, **_cache(0.1, "mag")}, warm_up=True),
    "compiled_blocks+first_block_0.1": Setting({"speed": Speedups("first_block", 0.1, compile=True)}, model=_copy,
                                               warm_up=True),
    "vae_bf16": Setting(vae=_vae_bf16, warm_up=True),
    "dpm++_10_steps+vae_bf16": Setting({"steps": 10}, vae=_vae_bf16, warm_up=True),
    "dpm++_6_steps+vae_bf16": Setting({"steps": 6}, vae=_vae_bf16, warm_up=True),
    "dpm++_10_steps+mag_0.1+vae_bf16": Setting({"steps": 10, **_cache(0.1, "mag")}, vae=_vae_bf16, warm_up=True),
    "dpm++_10_steps+taylorseer_2+vae_bf16": Setting({"steps": 10, **_taylorseer(2)}, vae=_vae_bf16, warm_up=True),
}


@contextlib.contextmanager
def models_of(models: DemoModels, setting: Setting) -> Iterator[None]:
    """The setting's transformer and VAE in the pipeline for the body (the loaded ones untouched)."""
    pipeline = models.pipeline
    transformer, vae = pipeline.transformer, pipeline.vae
    pipeline.transformer = setting.model(transformer) if setting.model else transformer
    pipeline.vae = setting.vae(vae) if setting.vae else vae
    try:
        yield
    finally:
        pipeline.transformer, pipeline.vae = transformer, vae


@contextlib.contextmanager
def transformer_clock(model: torch.nn.Module) -> Iterator[list[float]]:
    """Seconds spent inside the transformer's forward calls during the body (forward hooks)."""
    spent, started = [0.0], [0.0]
    handles = [model.register_forward_pre_hook(lambda *_: started.__setitem__(0, time.perf_counter())),
               model.register_forward_hook(lambda *_: spent.__setitem__(0, spent[0] + time.perf_counter()
                                                                       - started[0]))]
    try:
        yield spent
    finally:
        for handle in handles:
            handle.remove()


def measure(models: DemoModels, probe: Any, rendered: list, conditions: list, setting: Setting,
            options: SamplingOptions) -> dict[str, float]:
    """Seconds per window over the cases (all, and inside the transformer) and their adherence scores."""
    options = replace(options, **setting.options)
    with models_of(models, setting):
        if setting.warm_up:
            generate(models, conditions[0], options)
        seconds, windows, scores = 0.0, 0, []
        with transformer_clock(models.pipeline.transformer) as transformer_seconds:
            for case, condition in zip(rendered, conditions):
                start = time.perf_counter()
                frames = generate(models, condition, options)
                seconds += time.perf_counter() - start
                windows += len(models.pipeline.plan(condition.num_frames, options.overlap))
                reference = read_video(probe, case.reference[None])
                scores.append(score(read_video(probe, frames), reference, case))
    summary = summarize(scores, rendered)
    return {"seconds_per_window": seconds / windows, "transformer_seconds_per_window": transformer_seconds[0] / windows,
            **{k: summary[k] for k in ("lip_sync", "style", "emotion_accuracy", "identity")}}


def run(checkpoint: str | Path, cases: int, seed: int, steps: int, names: list[str]) -> dict[str, Any]:
    started = time.time()
    models, probe = DemoModels(checkpoint), load_probe()
    options = replace(DEFAULT_OPTIONS, steps=steps, seed=seed)
    rendered = [render_case(case) for case in benchmark_cases(cases, seed)]
    conditions = [conditions_for(models, case) for case in rendered]
    generate(models, conditions[0], options)  # untimed: first-call costs (allocator, kernels) on no setting
    results = []
    for name in ["baseline", *[n for n in names if n != "baseline"]]:
        figures = measure(models, probe, rendered, conditions, SETTINGS[name], options)
        results.append({"name": name, **{k: round(v, 4) for k, v in figures.items()}})
    base, base_transformer = results[0]["seconds_per_window"], results[0]["transformer_seconds_per_window"]
    for result in results:
        result["ratio"] = round(base / result["seconds_per_window"], 3)
        result["transformer_ratio"] = round(base_transformer / result["transformer_seconds_per_window"], 3)
    return {"settings": results, "cases": cases, "seed": seed, "steps": steps, "checkpoint": str(checkpoint),
            "threads": torch.get_num_threads(), "seconds": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(TRANSFORMER), help="DiTalker file (default: the shipped demo)")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=DEFAULT_OPTIONS.steps)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args(argv)
    print(json.dumps(run(args.checkpoint, args.cases, args.seed, args.steps, args.settings)))


if __name__ == "__main__":
    main()
