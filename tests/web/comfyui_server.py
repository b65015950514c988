"""A real ComfyUI server for the tests that need one (COMFYUI_DIR points at a ComfyUI checkout).

It runs on the CPU with a fresh base directory whose custom_nodes links this pack and whose
models/semanticgen holds the tests' tiny models. COMFYUI_PYTHON picks the interpreter that has ComfyUI's
requirements (default: this one); COMFYUI_PYTHONPATH is prepended to the server's PYTHONPATH (e.g. a stub
package). COMFYUI_FRONTEND_ROOTS lists frontends to serve instead of ComfyUI's own (``frontend_roots``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PACK_DIR_NAME = "ComfyUI-SemanticGen"


@contextlib.contextmanager
def comfyui_server(comfy_dir: Path, pack: Path, models: Path, base: Path, port: int, front_end_root: str | None = None):
    """Start ComfyUI on ``port``; yields ``{"url", "base", "log", "process"}`` once it answers, and stops it
    (printing the end of its log) afterwards. ``models``: the folder to serve as models/semanticgen;
    ``front_end_root``: a frontend's static folder to serve (``--front-end-root``; default: ComfyUI's own)."""
    if not (comfy_dir / "main.py").is_file():
        pytest.fail(f"COMFYUI_DIR={comfy_dir} is not a ComfyUI checkout (no main.py)")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(pack, target_is_directory=True)
    (base / "models").mkdir()
    (base / "models" / "semanticgen").symlink_to(models, target_is_directory=True)
    for sub in ("input", "output", "user", "temp"):
        (base / sub).mkdir()
    env = dict(os.environ)
    if os.environ.get("COMFYUI_PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ["COMFYUI_PYTHONPATH"], env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    url, log_path = f"http://127.0.0.1:{port}", base / "server.log"
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    start = time.time()
    args = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
            "--base-directory", str(base)]
    if front_end_root:
        args += ["--front-end-root", str(front_end_root)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, cwd=comfy_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=30).read()
                break
            except OSError:
                if time.time() - start > 180:
                    pytest.fail(f"ComfyUI did not answer in 180 s:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.5)
        print(f"\nComfyUI ready in {time.time() - start:.1f} s ({python})")
        yield {"url": url, "base": base, "log": log_path, "process": process}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        print(f"\n--- ComfyUI log (last lines) ---\n{log_path.read_text()[-3000:]}")


def frontend_roots() -> list[str | None]:
    """The frontends to test in: COMFYUI_FRONTEND_ROOTS (``static`` folders of unpacked
    comfyui-frontend-package wheels, os.pathsep-separated), or [None]: the one ComfyUI serves by itself."""
    return [root for root in os.environ.get("COMFYUI_FRONTEND_ROOTS", "").split(os.pathsep) if root] or [None]


def frontend_name(root: str | None) -> str:
    """A test id for a frontend root: its wheel's version (from the dist-info beside the package), or its path."""
    if root is None:
        return "bundled"
    for folder in Path(root).resolve().parents:
        for info in sorted(folder.glob("comfyui_frontend_package-*.dist-info")):
            return "frontend-" + info.name[len("comfyui_frontend_package-"):-len(".dist-info")]
    return Path(root).name


def quiet_frontend(url: str) -> None:
    """Server-side settings that keep the frontend's tutorial, minimap and canvas info out of the way."""
    for key, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False),
                       ("Comfy.Graph.CanvasInfo", False)):
        request = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()
