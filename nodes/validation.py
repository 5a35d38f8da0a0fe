"""Inputs refused at /prompt, before anything runs, in one message per node that names the input and the fix.

ComfyUI (v0.3.x) checks a V3 node's numbers against min/max, but not a combo value against its options, nor NaN,
and a missing model file would only fail when its node runs. It does call each node's ``validate_inputs`` for
every node of a queued prompt and returns all their errors in one HTTP 400, so one queue press reports every
problem of a graph. A node's ``validate_inputs`` names the widgets it checks (ComfyUI then leaves their range
check to it, hence the ranges here too) and returns ``check(cls, values)``; linked widgets arrive as None and are
checked when they run.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable, Iterator, Optional

from comfy_api.latest import io

from ..ditalker_core.checkpoints import check_kind
from ..ditalker_core.errors import InputError, MissingModelError, WrongWeightsError
from . import folders

NONE = "none"

# Which node loads each kind of weights (ditalker_core.checkpoints.WEIGHT_KINDS), for a file picked in another.
KIND_NODES = {"transformer": "Load DiTalker Model", "vae": "Load DiTalker VAE", "t5": "DiTalker Emotion (t5)",
              "clip_vision": "DiTalker Reference (clip_vision)", "whisper": "DiTalker Audio Encode (whisper)",
              "wav2vec2": "DiTalker Phonemes (aligner)", "3dmm": "DiTalker Style Encode (recon_model)"}
# What each model input must hold.
EXPECTED_KIND = {"checkpoint": "transformer", "vae": "vae", "t5": "t5", "clip_vision": "clip_vision",
                 "whisper": "whisper", "aligner": "wav2vec2", "recon_model": "3dmm"}


def wrong_weights_message(error: WrongWeightsError) -> str:
    """The core's message plus the node that takes the file."""
    return f"{error} ({KIND_NODES[error.kind]} takes it)"


@contextlib.contextmanager
def wrong_weights_named(input_name: str) -> Iterator[None]:
    """At load time (pickled files are told apart only there): a wrong kind of file in the same words as at
    /prompt."""
    try:
        yield
    except WrongWeightsError as error:
        raise InputError(f"{input_name}: {wrong_weights_message(error)}") from error


def model_problem(input_name: str, name: str) -> Optional[str]:
    """A model input's file or folder: missing (file, folder, source) or of another kind (which node takes it)."""
    if name == NONE:
        return None
    try:
        check_kind(folders.resolve_input(input_name, name), EXPECTED_KIND[input_name])
    except MissingModelError as error:
        return f"{input_name}: {error}"
    except WrongWeightsError as error:
        return f"{input_name}: {wrong_weights_message(error)}"
    return None


def _range(spec: Any) -> str:
    return f"from {spec.min} to {spec.max}" if spec.max is not None else f"of at least {spec.min}"


def widget_problems(schema: io.Schema, values: dict[str, Any]) -> list[str]:
    """Combo values not among the options, numbers that are NaN or out of range, missing or wrong models."""
    problems = []
    for spec in schema.inputs or []:
        value = values.get(spec.id)
        if value is None:
            continue
        if spec.id in folders.MODEL_INPUTS:
            problems.append(model_problem(spec.id, value))
        elif isinstance(spec, io.Combo.Input) and value not in spec.options:
            problems.append(f"{spec.id} '{value}' is not one of its choices ({', '.join(map(str, spec.options))})")
        elif isinstance(spec, (io.Float.Input, io.Int.Input)):
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{spec.id} is {value}: give a number {_range(spec)}")
            elif (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
                problems.append(f"{spec.id} is {value}: give a number {_range(spec)}")
    return [problem for problem in problems if problem]


def check(node: type[io.ComfyNode], values: dict[str, Any],
          rules: Iterable[Callable[[], None]] = ()) -> bool | str:
    """``validate_inputs``' answer: True, or every problem of the node in one message. ``rules`` are the
    core's own checks (raising InputError), run only on values that arrived."""
    problems = widget_problems(node.define_schema(), values)
    for rule in rules:
        try:
            rule()
        except InputError as error:
            problems.append(str(error))
    return True if not problems else "; ".join(problems)
