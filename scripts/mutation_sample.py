"""Mutation strength per module from a seeded random sample of its mutants, when running all of them is too slow.

    .venv/bin/python scripts/mutation_sample.py [--per-module 40] [--seed 0] [--max-children 2] [--no-run] [MODULE ...]

mutmut (``[tool.mutmut]`` in ``pyproject.toml``) makes every mutant (on the first call); this draws
``--per-module`` of each module's (all of them where it has fewer), runs only those, and prints one JSON line per
module: the counts by outcome, the share caught (killed or timed out) with its 95 % Wilson interval over the
module's mutants, and the survivors' names (``mutmut show NAME`` prints one) to judge equivalent or not. Modules
are dotted prefixes (``training.dataset``); none given: every module mutmut mutated. A sample is a fixed function
of the seed and the mutant list, so a rerun checks the same mutants (mutmut keeps results it already has);
``--no-run`` reports the part of the sample checked so far (the shares are over the checked mutants).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
CAUGHT = ("killed", "timeout")
BATCH = 200  # mutant names per mutmut call (command-line length)


def statuses() -> dict[str, str]:
    """Every mutant mutmut made -> its outcome so far (``not checked`` before a run)."""
    listing = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    result = {}
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            result[name] = status
    return result


def make_mutants() -> None:
    """mutmut has no make-only command: a run filtered to a name no mutant has makes every mutant and maps the
    tests to the functions they reach (minutes), then stops on the empty filter."""
    made = subprocess.run([MUTMUT, "run", "no_such_mutant*"], cwd=ROOT, capture_output=True, text=True)
    if "nothing matches" not in made.stdout + made.stderr:
        raise SystemExit(f"mutmut could not make the mutants:\n{made.stdout[-2000:]}{made.stderr[-2000:]}")


def module_of(name: str) -> str:
    """``training.dataset.x_read__mutmut_3`` / ``...xǁClassǁmethod__mutmut_3`` -> ``training.dataset``."""
    return name.rpartition(".")[0]


def draw(names: list[str], count: int, seed: int) -> list[str]:
    return sorted(random.Random(seed).sample(sorted(names), min(count, len(names))))


def wilson(caught: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a proportion from a sample (Wilson score; sound near 0 and 1, unlike the normal one)."""
    if not total:
        return 0.0, 1.0
    p = caught / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def summary(module: str, population: int, sample: list[str], status: dict[str, str]) -> dict:
    counts: dict[str, int] = defaultdict(int)
    for name in sample:
        counts[status[name]] += 1
    caught = sum(counts[s] for s in CAUGHT)
    checked = len(sample) - counts["not checked"]
    low, high = wilson(caught, checked)
    return {"module": module, "mutants": population, "sampled": len(sample), **dict(sorted(counts.items())),
            "caught": round(caught / max(checked, 1), 3), "interval_95": [round(low, 3), round(high, 3)],
            "survivors": [n for n in sample if status[n] not in (*CAUGHT, "not checked")]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="dotted module prefixes (default: every mutated module)")
    parser.add_argument("--per-module", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--no-run", action="store_true", help="report the sample's results so far; run nothing")
    args = parser.parse_args(argv)

    status = statuses()
    if not status:
        make_mutants()
        status = statuses()
    by_module: dict[str, list[str]] = defaultdict(list)
    for name in status:
        by_module[module_of(name)].append(name)
    unknown = [m for m in args.modules if m not in by_module]
    if unknown:
        raise SystemExit(f"no mutants in {unknown}; mutated modules: {sorted(by_module)}")
    samples = {m: draw(by_module[m], args.per_module, args.seed) for m in (args.modules or sorted(by_module))}

    pending = [] if args.no_run else [n for sample in samples.values() for n in sample if status[n] == "not checked"]
    for first in range(0, len(pending), BATCH):
        subprocess.run([MUTMUT, "run", "--max-children", str(args.max_children), *pending[first:first + BATCH]],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    status = statuses()
    for module, sample in samples.items():
        print(json.dumps(summary(module, len(by_module[module]), sample, status), ensure_ascii=False))


if __name__ == "__main__":
    main()
