"""Held-out benchmark cases: sentences from the held-out split, identities and styles from seeds the training
set never used, emotions and head trajectories balanced over the cases, and speaking manners spread evenly so
their correlation can be measured."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from training.synthetic.cases import Case, sample_case
from training.synthetic.tracks import EMOTIONS, Style

MOVING = ("nod", "shake", "tilt", "mix")
_STREAM = 7919  # keeps benchmark seeds apart from the training set's (seed, clip) streams


def benchmark_cases(count: int, seed: int) -> list[Case]:
    rng = np.random.default_rng([seed, _STREAM])
    emotions = [EMOTIONS[i % len(EMOTIONS)] for i in rng.permutation(max(count, len(EMOTIONS)))][:count]
    manners = rng.permutation(np.linspace(0.6, 1.4, count)) if count > 1 else np.array([1.0])
    cases = []
    for i in range(count):
        case = sample_case(np.random.default_rng([seed, _STREAM, i]), "held_out", emotions[i])
        style = replace(case.style, trajectory=MOVING[i % len(MOVING)], mouth_amplitude=float(manners[i]))
        cases.append(replace(case, style=style))
    return cases


def long_case(seed: int, sentences: int = 14) -> Case:
    """One case of several held-out English sentences (about 30 s of speech or more) nodding slowly."""
    case = sample_case(np.random.default_rng([seed, _STREAM, 10**6]), "held_out", "happy", sentences, "en")
    return replace(case, voice="en-us", rate=165, style=Style("nod", 0.5, 12.0, 1.0, 0.2))
