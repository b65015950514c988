"""Integration with a real ComfyUI server; runs only where COMFYUI_DIR points at a ComfyUI checkout.

Starts ComfyUI on the CPU (``main.py --cpu``) with a fresh base directory whose custom_nodes links this
pack and whose models/semanticgen holds tiny random models, then: /object_info lists our nodes,
/workflow_templates lists our workflows, and each shipped workflow, converted to the API format, runs
through POST /prompt while the websocket reports progress, with its outputs in /history. Also: a missing
model file is refused with our message (not "Value not in list"), and POST /interrupt stops a run.

    COMFYUI_DIR=/path/to/ComfyUI pytest tests/test_comfyui_integration.py -s

Where Chromium is installed (or CHROMIUM names it), the frontend itself loads each workflow and converts it
with its own graphToPrompt: the result must equal the runner's conversion, and re-saving keeps our
widget values; SEMANTICGEN_SCREENSHOT_DIR=DIR also saves a screenshot of each workflow there.

COMFYUI_PYTHON picks the interpreter that has ComfyUI's requirements (default: this one), COMFYUI_PYTHONPATH
is prepended to the server's PYTHONPATH (e.g. a stub package), COMFYUI_PORT sets the port (default 8199).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "web"))
from cdp import WebSocket, find_chromium  # noqa: E402  (the browser tests' DevTools client)
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PORT = int(os.environ.get("COMFYUI_PORT", "8199"))
URL = f"http://127.0.0.1:{PORT}"
PACK_DIR_NAME = "ComfyUI-SemanticGen"
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))

pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run this test")


# -- the server ------------------------------------------------------------------------------------


def get(path: str):
    with urllib.request.urlopen(URL + path, timeout=30) as r:
        return json.loads(r.read())


def post(path: str, body: dict | None = None):
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(URL + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


@pytest.fixture(scope="module")
def server(pack, tiny_model_files, tmp_path_factory):
    comfy_dir = Path(COMFYUI_DIR)
    if not (comfy_dir / "main.py").is_file():
        pytest.fail(f"COMFYUI_DIR={comfy_dir} is not a ComfyUI checkout (no main.py)")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", PORT)) == 0:
            pytest.fail(f"port {PORT} is already in use: stop that server or set COMFYUI_PORT")
    base = tmp_path_factory.mktemp("comfyui-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(ROOT, target_is_directory=True)
    (base / "models").mkdir()
    (base / "models" / "semanticgen").symlink_to(tiny_model_files["dir"] / "semanticgen", target_is_directory=True)
    for sub in ("input", "output", "user", "temp"):
        (base / sub).mkdir()
    env = dict(os.environ)
    if os.environ.get("COMFYUI_PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ["COMFYUI_PYTHONPATH"], env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    log_path = base / "server.log"
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(PORT), "--disable-auto-launch",
               "--base-directory", str(base)]
    start = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=comfy_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() - start > 180:
                    pytest.fail(f"ComfyUI did not answer in 180 s:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.5)
        print(f"\nComfyUI ready in {time.time() - start:.1f} s ({python})")
        yield {"base": base, "log": log_path, "process": process}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"\n--- ComfyUI log (last lines) ---\n{log_path.read_text()[-3000:]}")


def queue(api: dict) -> tuple[str, list[dict]]:
    """POST a prompt and follow it on the websocket until it ends: (prompt_id, its messages)."""
    client_id = uuid.uuid4().hex
    ws = WebSocket("127.0.0.1", PORT, f"/ws?clientId={client_id}")
    try:
        prompt_id = post("/prompt", {"prompt": api, "client_id": client_id})["prompt_id"]
        messages = []
        while True:
            message = ws.receive()
            if message is None:
                continue
            data = message.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            messages.append(message)
            kind = message["type"]
            if kind in ("execution_error", "execution_interrupted", "execution_success"):
                return prompt_id, messages
            if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return prompt_id, messages
    finally:
        ws.close()


def history(prompt_id: str, timeout: float = 30.0) -> dict:
    """The prompt's /history entry (stored just after the websocket reports the end)."""
    deadline = time.time() + timeout
    while True:
        entry = get(f"/history/{prompt_id}").get(prompt_id)
        if entry is not None or time.time() > deadline:
            return entry
        time.sleep(0.2)


def tiny_api(path: Path, tiny_models, tiny_sets, **kw) -> dict:
    from semanticgen import runner

    api = runner.to_api(json.loads(path.read_text()))
    return runner.apply_sets(api, tiny_sets(api, tiny_models, **kw))


# -- tests -----------------------------------------------------------------------------------------


def test_object_info_lists_our_nodes(pack, server):
    info = get("/object_info")
    ours = {k: v for k, v in info.items() if k.startswith("SemanticGen")}
    print(f"\n/object_info: {len(info)} nodes, {len(ours)} SemanticGen: {', '.join(sorted(ours))}")
    assert set(ours) == set(pack.NODE_CLASS_MAPPINGS)
    stage1 = ours["SemanticGenStage1Loader"]
    assert stage1["category"] == "SemanticGen/loaders" and stage1["output"] == ["SEMANTICGEN_STAGE1"]
    assert stage1["input"]["required"]["model_name"][0] == ["embedded", "tiny_stage1.safetensors"]  # models/semanticgen
    assert ours["SemanticGenStage2Sample"]["output"] == ["LATENT"]


def test_workflow_templates_list_our_workflows(server):
    templates = get("/workflow_templates")
    print(f"\n/workflow_templates: {templates}")
    assert sorted(templates[PACK_DIR_NAME]) == [p.stem for p in WORKFLOWS]
    for path in WORKFLOWS:
        served = get(f"/api/workflow_templates/{PACK_DIR_NAME}/{path.name}")
        assert served == json.loads(path.read_text())


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_through_the_server(server, tiny_models, tiny_sets, path):
    import cv2

    api = tiny_api(path, tiny_models, tiny_sets)
    start = time.time()
    prompt_id, messages = queue(api)
    kinds = [m["type"] for m in messages]
    errors = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert not errors, errors[0].get("exception_message")
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    entry = history(prompt_id)
    assert entry["status"]["status_str"] == "success"
    videos = [item for out in entry["outputs"].values() for item in out.get("images", [])
              if item["filename"].endswith(".mp4")]
    assert len(videos) == 1
    video = server["base"] / "output" / videos[0]["subfolder"] / videos[0]["filename"]
    cap = cv2.VideoCapture(str(video))
    frames = 0
    while cap.read()[0]:
        frames += 1
    lengths = [n["inputs"]["length"] for n in api.values() if n["class_type"] == "SemanticGenStage1Sample"]
    assert frames == (lengths[0] if lengths else 9)  # 61 for the 60 s multi-shot workflow (at 1 fps here)
    print(f"\n{path.stem}: {time.time() - start:.1f} s, {kinds.count('executed')} output nodes, "
          f"{len(progress)} progress messages, outputs: "
          + ", ".join(f"{i['subfolder']}/{i['filename']}" for out in entry["outputs"].values()
                      for key in ("images", "plans") for i in out.get(key, [])))
    assert progress, "sampling and decoding report progress"


def test_missing_model_file_is_refused_with_where_it_goes(server, tiny_models, tiny_sets):
    from semanticgen import runner

    api = runner.apply_sets(tiny_api(ROOT / "workflows" / "text_to_video.json", tiny_models, tiny_sets), {"VAE.model_name": "wan_2.1_vae.safetensors"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        post("/prompt", {"prompt": api})
    body = json.loads(refused.value.read())
    messages = [e["details"] for n in body["node_errors"].values() for e in n["errors"]]
    print(f"\nrefused: {messages}")
    assert any("wan_2.1_vae.safetensors" in m and "models/vae" in m for m in messages)
    assert not any("Value not in list" in e["message"] for n in body["node_errors"].values() for e in n["errors"])


def test_interrupt_stops_a_run_and_the_next_one_works(server, tiny_models, tiny_sets):
    api = tiny_api(ROOT / "workflows" / "text_to_video.json", tiny_models, tiny_sets, steps=400)  # text_to_video, long enough to interrupt
    client_id = uuid.uuid4().hex
    ws = WebSocket("127.0.0.1", PORT, f"/ws?clientId={client_id}")
    try:
        prompt_id = post("/prompt", {"prompt": api, "client_id": client_id})["prompt_id"]
        while True:
            message = ws.receive()
            if message and message["type"] == "progress" and message["data"].get("value", 0) >= 2:
                requested = time.time()
                post("/interrupt")
                break
        while True:
            message = ws.receive()
            if message and message["type"] in ("execution_interrupted", "execution_success", "execution_error"):
                break
    finally:
        ws.close()
    assert message["type"] == "execution_interrupted", message
    print(f"\ninterrupted {time.time() - requested:.2f} s after POST /interrupt (node {message['data'].get('node_id')})")
    assert time.time() - requested < 10
    _, messages = queue(tiny_api(ROOT / "workflows" / "text_to_video.json", tiny_models, tiny_sets, steps=3))
    assert "execution_error" not in [m["type"] for m in messages]
    assert prompt_id


# -- the frontend (headless Chromium over the DevTools protocol) ------------------------------------


class DevTools:
    def __init__(self, ws: WebSocket):
        self.ws, self.next_id = ws, 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = self.ws.receive()
            if message and message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression: str, wait: bool = True):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=wait, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(json.dumps(result["exceptionDetails"])[:2000])
        return result["result"].get("value")


@pytest.fixture(scope="module")
def frontend(server, tmp_path_factory):
    exe = find_chromium()
    if not exe:
        pytest.skip("no Chromium: checking the frontend's own conversion needs a headless browser")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False),
                       ("Comfy.Graph.CanvasInfo", False)):
        post(f"/settings/{key}", value)
    profile = tmp_path_factory.mktemp("chromium")
    browser = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
                                f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5) as r:
                    pages = [p for p in json.loads(r.read()) if p["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("Chromium's DevTools endpoint did not come up")
            time.sleep(0.3)
        ws = WebSocket("127.0.0.1", port, pages[0]["webSocketDebuggerUrl"].split(str(port), 1)[1], timeout=120)
        tools = DevTools(ws)
        tools.call("Emulation.setDeviceMetricsOverride", width=1760, height=880, deviceScaleFactor=1, mobile=False)
        tools.call("Page.navigate", url=URL + "/")
        deadline = time.time() + 90
        while not tools.eval("!!(window.app && window.app.graph && window.app.canvas)", wait=False):
            if time.time() > deadline:
                pytest.fail("the ComfyUI frontend did not start in the browser")
            time.sleep(0.5)
        for key, value in (("Comfy.Minimap.Visible", False), ("Comfy.Graph.CanvasInfo", False)):
            tools.eval(f"window.app.ui.settings.setSettingValueAsync({json.dumps(key)}, {json.dumps(value)})")
        time.sleep(2)
        yield tools
        ws.close()
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_frontend_converts_our_workflows_as_the_runner_does(frontend, path):
    from semanticgen import runner

    workflow = json.loads(path.read_text())
    frontend.eval(f"window.app.loadGraphData({json.dumps(workflow)}, true, true, {json.dumps(path.stem)})")
    time.sleep(1.5)
    prompt = frontend.eval("window.app.graphToPrompt().then(p => p.output)")
    for node in prompt.values():
        node["inputs"].pop("video-preview", None)  # the video upload's preview widget (the server ignores it)
    assert prompt == runner.to_api(workflow)
    saved = json.loads(frontend.eval("JSON.stringify(window.app.graph.serialize())", wait=False))
    ours = {n["id"]: n.get("widgets_values") for n in workflow["nodes"]}
    assert {n["id"]: n.get("widgets_values") for n in saved["nodes"]} == ours  # re-saving keeps our layout
    print(f"\n{path.stem}: the frontend's graphToPrompt equals the runner's conversion ({len(prompt)} nodes)")
    if os.environ.get("SEMANTICGEN_SCREENSHOT_DIR"):
        shot = frontend.call("Page.captureScreenshot", format="png")
        folder = Path(os.environ["SEMANTICGEN_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{path.stem}.png").write_bytes(base64.b64decode(shot["data"]))
