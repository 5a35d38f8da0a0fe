"""``python -m ditalker_core.extract {audio,phonemes,style,pose,emotion,masks} INPUT --out PATH``.

Writes the official DiTalker on-disk formats so datasets and inference inputs can be prepared
without ComfyUI. Each sub-command lives in the extractor module of the same name.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import EXTRACTORS

_MODULES = {"audio": "audio", "phonemes": "phonemes", "style": "style3dmm", "pose": "pose",
            "emotion": "emotion", "masks": "masks"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ditalker_core.extract", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in EXTRACTORS:
        module = importlib.import_module(f"ditalker_core.extract.{_MODULES[name]}")
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("input", help="input file or folder")
        p.add_argument("--out", required=True, help="output path")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args._run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
