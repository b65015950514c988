#!/usr/bin/env bash
# Standalone set-up (outside ComfyUI): a virtual environment in .venv with a CPU torch pinned to 2.13.0,
# the pack's requirements and the test tools. Inside ComfyUI, install requirements.txt only.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements.txt pytest
