#!/usr/bin/env bash
# Creates .venv (once) and installs the pack's requirements into it. Idempotent, so the
# README's commands can both start with it on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# A CPU torch is enough for the tiny model and the tests; a GPU host keeps its own torch.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -r requirements.txt -r requirements-test.txt
.venv/bin/pip install -q --no-deps -r requirements-nodeps.txt
