"""Train DiTalker (one phase per config): ``python training/train.py --config training/configs/phase1.yaml``.

Multi-GPU: ``accelerate launch training/train.py --config ...``; DeepSpeed ZeRO-2: add ``--use_deepspeed
--deepspeed_config_file training/configs/deepspeed_zero2.json`` to ``accelerate launch``. Dotted overrides follow
the config: ``model.config=tiny data.metadata=PATH data.resolution=128 output_dir=PATH train.max_steps=N``.
A run resumes from the newest complete state in ``<output_dir>/checkpoints`` (``checkpoint.resume``).

Every optimisation step is reproducible: its noise, timesteps, masks, condition dropout and model dropout are
drawn from generators seeded by (seed, process, step, micro-step), and data samples by (seed, record, draw).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

if __package__ in (None, ""):  # run as a script (`python training/train.py`, `accelerate launch ...`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from ditalker_core.errors import InputError
from training.checkpointing import (EMA, build_model, export, find_resume, load_state, remove_incomplete,
                                    save_state, select_trainable, set_train_mode)
from training.conditioning import FrozenModels, StepRandom, load_frozen, prepare_inputs
from training.config import load_config
from training.dataset import ClipDataset, ResumableSampler, clips_without_sound, read_metadata
from training.losses import (GaussianDiffusion, dino_tokens, identity_loss, reconstruction_losses, region_loss,
                             repa_chunk, sync_losses)
from training.validation import write_sample

logger = logging.getLogger("training")


def step_random(seed: int, rank: int, batch: int, step: int, micro: int) -> StepRandom:
    """The draws of one micro-step for process ``rank`` (samples ``rank * batch ...`` of the global batch); also
    reseeds torch's global RNG (dropout) per process."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, micro, 2, rank]).generate_state(1)[0]))
    return StepRandom.of_step(seed, step, micro, rank * batch, batch)


def compute_losses(model: torch.nn.Module, batch: dict[str, Any], frozen: FrozenModels,
                   diffusion: GaussianDiffusion, config: dict[str, Any], cfg: dict[str, Any],
                   draws: StepRandom, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted total loss and every enabled term (unweighted) for one micro-batch; ``cfg``: the model config."""
    weights = config["losses"]
    latents, kwargs, keep = prepare_inputs(batch, frozen, config, cfg["clip_tokens"], draws, device)
    latents = latents.float()
    _, _, frames, height, width = latents.shape
    noise = draws.randn(latents.shape).to(device)
    mode = config["diffusion"]["timestep_sampling"]
    t = torch.cat([diffusion.sample_timesteps(1, g, mode) for g in draws.samples]).to(device)
    x_t = diffusion.q_sample(latents, t, noise)

    repa_index = None
    grid = (height // cfg["patch_size"], width // cfg["patch_size"])
    if weights["id"]["weight"]:
        repa_index, repa_frame, repa_tokens = repa_chunk(frames, grid, cfg["repa_tokens"], draws.shared)
    output = model(x_t, t, repa_index=repa_index, **kwargs)
    eps_hat, var_values = output.sample.float().chunk(2, dim=1)

    terms: dict[str, torch.Tensor] = {}
    terms["rec"], terms["eye"] = reconstruction_losses(eps_hat, noise, batch["eye_mask"].to(device))
    total = weights["rec"]["weight"] * terms["rec"] + weights["eye"]["weight"] * terms["eye"]
    if weights["lip"]["weight"]:
        terms["lip"] = region_loss((eps_hat - noise) ** 2, batch["lip_mask"].to(device))
        total = total + weights["lip"]["weight"] * terms["lip"]
    if weights["vb"]["weight"]:
        terms["vb"] = diffusion.vb_terms(latents, x_t, t, eps_hat.detach(), var_values).mean()
        total = total + weights["vb"]["weight"] * terms["vb"]
    if weights["id"]["weight"]:
        # Latent frame f of an even-length clip starts at video frame 4f (the VAE packs 4 frames per latent).
        frame = batch["pixel_values"][:, 4 * repa_frame].to(device).float() / 127.5 - 1
        target = dino_tokens(frozen.dinov2, frame, grid)[:, repa_tokens]
        terms["id"] = identity_loss(output.repa, target)
        total = total + weights["id"]["weight"] * terms["id"]
    if weights["sync"]["weight"]:
        x0_hat = diffusion.predict_x0(x_t, t, eps_hat)
        terms["sync_l2"], terms["syncnet"] = sync_losses(
            frozen.vae, frozen.syncnet, latents, x0_hat, batch["face_mask"].to(device), batch["mel"].to(device),
            keep["audio"].to(device), draws.shared, weights["sync"]["frames"])
        total = total + weights["sync"]["weight"] * (terms["sync_l2"]
                                                     + weights["sync"]["syncnet_weight"] * terms["syncnet"])
    return total, terms


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per logged step) and, if installed, TensorBoard."""

    def __init__(self, output_dir: Path, resume_step: int, tensorboard: bool):
        self.path = output_dir / "metrics.jsonl"
        if self.path.is_file():  # a resumed run rewrites the steps after its state
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(output_dir / "tensorboard"))
            except ImportError:
                logger.warning("tensorboard is not installed (pip install tensorboard); logging to %s only",
                               self.path)

    def write(self, step: int, values: dict[str, float]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def build_optimizer(params: list[torch.nn.Parameter], train: dict[str, Any]) -> torch.optim.Optimizer:
    kwargs = dict(lr=train["lr"], betas=tuple(train["adam_betas"]), weight_decay=train["weight_decay"],
                  eps=train["adam_eps"])
    if train["use_8bit_adam"]:
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise ImportError("train.use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from error
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def make_accelerator(train: dict[str, Any]) -> Any:
    """The Accelerator for the config: mixed precision (float32 on a CPU), accumulation, DDP/DeepSpeed options."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    precision = train["mixed_precision"]
    if precision == "fp16" and not torch.cuda.is_available():  # bf16 autocast runs on a CPU, fp16 does not
        logger.warning("no CUDA device: training in float32 (train.mixed_precision=fp16 needs a GPU; bf16 runs "
                       "on a CPU)")
        precision = "no"
    accelerator = Accelerator(  # cpu=True lets torchrun start several CPU processes (gloo)
        cpu=not torch.cuda.is_available(), gradient_accumulation_steps=train["grad_accum"], mixed_precision=precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=train["find_unused_parameters"])])
    if accelerator.state.deepspeed_plugin is not None:  # fill the config's "auto" values from ours
        deepspeed_config = accelerator.state.deepspeed_plugin.deepspeed_config
        deepspeed_config["train_micro_batch_size_per_gpu"] = train["batch_size"]
        deepspeed_config["gradient_clipping"] = float(train["max_grad_norm"] or 0.0)
    if train["allow_tf32"] and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    if accelerator.device.type == "cpu":  # Adam drives tiny values into denormals, which make CPU matmuls crawl
        torch.set_flush_denormal(True)
    return accelerator


def prepare_model(config: dict[str, Any]) -> tuple[torch.nn.Module, list[str], list[str]]:
    """Build the model, freeze all but the trained modules -> (model, trained groups, trainable names)."""
    model = build_model(config)
    groups = list(config["model"]["trainable"])
    weights = config["losses"]
    if "repa_head" in groups and not weights["id"]["weight"]:
        logger.info("identity loss is off: the REPA head stays frozen")
        groups.remove("repa_head")
    if weights["id"]["weight"] and not model.config.enable_repa:
        raise InputError("losses.id needs the REPA head: set model.overrides.enable_repa=true")
    if model.config.audio_frames % 8:
        raise InputError(f"model audio_frames={model.config.audio_frames} must be a multiple of 8 (the VAE "
                         f"encodes chunks of 8 frames)")
    trainable_names = select_trainable(model, groups)
    set_train_mode(model)
    if config["model"]["gradient_checkpointing"]:
        model.enable_gradient_checkpointing()
    return model, groups, trainable_names


def run(config: dict[str, Any]) -> Path:
    """Train one phase; returns the exported transformer file."""
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    train, weights = config["train"], config["losses"]
    accelerator = make_accelerator(train)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = accelerator.device
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    output_dir = Path(config["output_dir"])
    states_dir = output_dir / "checkpoints"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(config, indent=1))
    seed = int(train["seed"])
    torch.manual_seed(seed)
    model, groups, trainable_names = prepare_model(config)
    model_cfg = dict(model.config)

    # Data.
    records = read_metadata(config["data"]["metadata"], config["data"]["root"])
    silent = clips_without_sound(records) if weights["sync"]["weight"] else []
    if silent:
        raise InputError(f"the sync loss reads each clip's sound, but {len(silent)} of {len(records)} clips have no "
                         f"sound track and no audio_path ({', '.join(str(p) for p in silent[:3])}"
                         f"{' ...' if len(silent) > 3 else ''}): add the sound (a 16 kHz wav as audio_path in the "
                         f"metadata, or remux it into the video), or set losses.sync.weight=0")
    dataset = ClipDataset(records, model_cfg["audio_frames"], int(config["data"]["resolution"]), seed,
                          model_cfg["style_max_len"], config["data"]["style_clip"],
                          with_mel=bool(weights["sync"]["weight"]), memory_cache=bool(config["data"]["memory_cache"]))
    validation = None  # the record sampled for validation videos (main process only)
    if config["validation"]["every"] and accelerator.is_main_process:
        held_out = config["validation"]["metadata"]
        validation = (read_metadata(held_out, config["data"]["root"]) if held_out else records)[
            int(config["validation"]["record"])]
    texts = [r.text for r in records] + ([validation.text] if validation else [])
    with accelerator.main_process_first():  # the main process fills the T5 cache, the others read it
        frozen = load_frozen(config, texts, device, weight_dtype)

    params = dict(model.named_parameters())
    optimizer = build_optimizer([params[name] for name in trainable_names], train)
    scheduler = get_scheduler(train["lr_scheduler"], optimizer, num_warmup_steps=train["warmup_steps"],
                              num_training_steps=train["max_steps"])
    ema = EMA({n: params[n] for n in trainable_names}, train["ema"]["decay"]) if train["ema"]["enabled"] else None
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = [params[name] for name in trainable_names]

    step, samples = 0, 0
    if accelerator.is_main_process:
        remove_incomplete(states_dir)
    accelerator.wait_for_everyone()
    resume = find_resume(states_dir, config["checkpoint"]["resume"])
    if resume:
        state = load_state(accelerator, model, optimizer, scheduler, ema, Path(resume))
        step, samples = state["step"], state["samples"]
        logger.info("resumed from %s (step %d)", resume, step)
    per_micro = train["batch_size"] * accelerator.num_processes
    sampler = ResumableSampler(len(dataset), seed, train["batch_size"], accelerator.process_index,
                               accelerator.num_processes, start=samples // per_micro)
    loader = torch.utils.data.DataLoader(dataset, batch_size=train["batch_size"], sampler=sampler,
                                         num_workers=config["data"]["num_workers"],
                                         persistent_workers=config["data"]["num_workers"] > 0)
    batches = iter(loader)
    diffusion = GaussianDiffusion(**{k: config["diffusion"][k] for k in ("num_timesteps", "beta_start",
                                                                        "beta_end")})
    metrics = MetricsLog(output_dir, step, config["log"]["tensorboard"]) if accelerator.is_main_process else None
    progress = tqdm(total=train["max_steps"], initial=step, disable=not accelerator.is_main_process, desc="train")
    info = {"config": config, "init": config["model"]["init"], "init_modules": config["model"]["init_modules"]}

    while step < train["max_steps"]:
        started = time.time()
        sums: dict[str, float] = defaultdict(float)
        for micro in range(train["grad_accum"]):
            batch = next(batches)
            draws = step_random(seed, accelerator.process_index, train["batch_size"], step, micro)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    total, terms = compute_losses(model, batch, frozen, diffusion, config, model_cfg, draws,
                                                  device)
                accelerator.backward(total)
                if accelerator.sync_gradients and train["max_grad_norm"]:
                    norm = accelerator.clip_grad_norm_(trainable, train["max_grad_norm"])
                    if norm is not None:  # (DeepSpeed clips inside its engine and reports nothing)
                        sums["grad_norm"] += float(norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sums["loss"] += float(total.detach()) / train["grad_accum"]
            for name, value in terms.items():
                sums[name] += float(value.detach()) / train["grad_accum"]
        scheduler.step()
        step += 1
        samples += per_micro * train["grad_accum"]
        if ema is not None:
            ema.update({n: params[n] for n in trainable_names})

        values = {k: float(v) for k, v in zip(sums, accelerator.reduce(
            torch.tensor(list(sums.values()), device=device), reduction="mean").tolist())}
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {values}")
        progress.update(1)
        progress.set_postfix(loss=f"{values['loss']:.4f}")
        if metrics is not None and (step % config["log"]["every"] == 0 or step == 1 or step == train["max_steps"]):
            metrics.write(step, {**values, "lr": scheduler.get_last_lr()[0], "seconds": time.time() - started})
        if validation is not None and step % config["validation"]["every"] == 0:
            unwrapped = accelerator.unwrap_model(model).eval()
            with accelerator.autocast():
                write_sample(unwrapped, frozen, validation, config["validation"], int(config["data"]["resolution"]),
                             output_dir / "validation" / f"step-{step:09d}.mp4")
            set_train_mode(unwrapped)
        if config["checkpoint"]["every"] and (step % config["checkpoint"]["every"] == 0
                                              or step == train["max_steps"]):
            save_state(accelerator, model, optimizer, scheduler, ema, states_dir, step, {**info, "samples": samples},
                       groups, config["checkpoint"]["keep"])
    progress.close()

    accelerator.wait_for_everyone()
    path = output_dir / "transformer.safetensors"
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        export_groups = groups if config["checkpoint"]["trained_only"] else None
        export(unwrapped, path, export_groups)
        if ema is not None:
            ema.copy_to(unwrapped)
            export(unwrapped, output_dir / "transformer_ema.safetensors", export_groups)
        metrics.close()
        logger.info("wrote %s", path)
    accelerator.end_training()
    return path


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training/configs/phase{1,2,3}.yaml or your own")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. train.max_steps=100")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> Path:
    args = parse_args(argv)
    return run(load_config(args.config, args.overrides))


if __name__ == "__main__":
    main()
