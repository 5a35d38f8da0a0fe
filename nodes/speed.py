"""DiTalker Speed: diffusers' step caches, attention kernel and compiled blocks, and the compute precision, as one
settings value for the sampler's and the run estimate's optional ``speed`` input (their other inputs stay as they
are)."""

from __future__ import annotations

from comfy_api.latest import io

from ..ditalker_core.pipeline.speed import CACHES, PRECISIONS, Speedups
from .sockets import SPEED
from .validation import check

ATTENTION = ["native", "flash", "sage", "xformers"]


class DiTalkerSpeed(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTalkerSpeed", display_name="DiTalker Speed", category="DiTalker",
            description="Faster sampling with diffusers' own machinery: step caches (First Block Cache, MagCache, "
                        "TaylorSeer) skip the blocks on steps whose output they can replay or extrapolate; the "
                        "attention kernel, compiled blocks and the compute precision are switchable. Applied only "
                        "while the sampler runs; the loaded model is unchanged. What each costs in lip sync: "
                        "README, Speed.",
            inputs=[
                io.Combo.Input("step_cache", options=list(CACHES), default="off",
                               tooltip="first_block: skip every block after the first on steps where the first "
                                       "block's output changed less than cache_threshold (diffusers' "
                                       "FirstBlockCache). mag: skip every block while the output's predicted "
                                       "change stays under cache_threshold (diffusers' MagCache; the first "
                                       "window run with a model, scheduler and step count measures its "
                                       "ratios and skips nothing). taylorseer: run the blocks on the first three "
                                       "steps and then every cache_interval-th, extrapolate the others (diffusers' "
                                       "TaylorSeer, lite). Cost in lip sync per setting: README, Speed table."),
                io.Float.Input("cache_threshold", default=0.05, min=0.0, max=1.0, step=0.01,
                               tooltip="first_block: relative change of the first block's output that forces a "
                                       "full step; mag: accumulated error allowed before a full step. Higher is "
                                       "faster and less faithful; 0 never skips. Not used by taylorseer."),
                io.Combo.Input("attention", options=ATTENTION, default="native",
                               tooltip="Attention kernel (diffusers' dispatcher). flash, sage and xformers need "
                                       "their packages installed; without them the sampler warns and uses "
                                       "native."),
                io.Boolean.Input("compile", default=False,
                                 tooltip="Compile one transformer block with torch.compile and reuse it for all "
                                         "(diffusers' compile_repeated_blocks): the first window pays the compile "
                                         "time and the blocks stay compiled on that model; the output is the same "
                                         "(README Speed table). Where torch.compile cannot run: a warning, eager "
                                         "blocks."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="auto: the loaded weights' dtype. bf16 / fp16: the transformer's matmuls "
                                       "in that precision (torch.autocast; norms stay float32, the weights are "
                                       "untouched): on a GPU about half the time, within 1 % (bf16) and 0.1 % "
                                       "(fp16) of float32 on the demo model."),
                io.Int.Input("cache_interval", default=3, min=1, max=10,
                             tooltip="taylorseer only: a full step every cache_interval steps (1 never skips; "
                                     "higher is faster and less faithful)."),
            ],
            outputs=[SPEED.Output(display_name="speed",
                                  tooltip="For the speed input of DiTalker Sampler and DiTalker Run Estimate.")],
        )

    @classmethod
    def validate_inputs(cls, step_cache: str, cache_threshold: float, attention: str, precision: str = "auto",
                        cache_interval: int = 3) -> bool | str:
        return check(cls, dict(step_cache=step_cache, cache_threshold=cache_threshold, attention=attention,
                               precision=precision, cache_interval=cache_interval))

    @classmethod
    def execute(cls, step_cache: str, cache_threshold: float, attention: str, compile: bool = False,
                precision: str = "auto", cache_interval: int = 3) -> io.NodeOutput:
        return io.NodeOutput(Speedups(step_cache, cache_threshold, attention, compile, precision, cache_interval))
