"""``python -m ditalker_core.report CONFIG [--json]``: parameter count of the backbone and each DiTalker module.

The model is built on the meta device, so even ``xl`` (2.1 B parameters) reports instantly without memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import torch

from .models import DiTalkerTransformer3DModel, get_config, module_group
from .models.configs import CONFIGS


def parameter_report(config_name: str) -> dict[str, int]:
    """``{"backbone": n, "<module>": n, ..., "total": n}`` counting parameters (not the fixed tables)."""
    with torch.device("meta"):
        model = DiTalkerTransformer3DModel(**get_config(config_name))
    counts: Counter[str] = Counter()
    for name, parameter in model.named_parameters():
        counts[module_group(name)] += parameter.numel()
    report = {"backbone": counts.pop("backbone", 0), **dict(sorted(counts.items()))}
    report["total"] = sum(report.values())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditalker_core.report", description=__doc__)
    parser.add_argument("config", choices=sorted(CONFIGS), help="named model configuration")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    report = parameter_report(args.config)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"DiTalker model '{args.config}': parameters by module")
    for group, count in report.items():
        print(f"  {group:<24} {count:>15,}  ({count / 1e6:,.2f} M)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
