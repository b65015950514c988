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

COMFYUI_PYTHON and COMFYUI_PYTHONPATH as in ``tests/web/comfyui_server.py``; COMFYUI_PORT sets the port
(default 8199).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "web"))
from cdp import Browser, WebSocket, find_chromium  # noqa: E402  (the browser tests' DevTools client)
from comfyui_server import PACK_DIR_NAME, comfyui_server, quiet_frontend  # noqa: E402
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PORT = int(os.environ.get("COMFYUI_PORT", "8199"))
URL = f"http://127.0.0.1:{PORT}"
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
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", PORT)) == 0:
            pytest.fail(f"port {PORT} is already in use: stop that server or set COMFYUI_PORT")
    with comfyui_server(Path(COMFYUI_DIR), ROOT, tiny_model_files["dir"] / "semanticgen",
                        tmp_path_factory.mktemp("comfyui-base"), PORT) as running:
        yield running


def queue(api: dict) -> tuple[str, list[dict]]:
    """POST a prompt and follow it on the websocket until it ends: (prompt_id, its messages)."""
    client_id = uuid.uuid4().hex
    ws = WebSocket("127.0.0.1", PORT, f"/ws?clientId={client_id}")
    try:
        prompt_id = post("/prompt", {"prompt": api, "client_id": client_id})["prompt_id"]
        messages = []
        for message in ws.messages(600):
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
        for message in ws.messages(600):
            if message["type"] == "progress" and message["data"].get("value", 0) >= 2:
                requested = time.time()
                post("/interrupt")
                break
        for message in ws.messages(60):
            if message["type"] in ("execution_interrupted", "execution_success", "execution_error"):
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


@pytest.fixture(scope="module")
def frontend(server):
    exe = find_chromium()
    if not exe:
        pytest.skip("no Chromium: checking the frontend's own conversion needs a headless browser")
    quiet_frontend(URL)
    browser = Browser.launch(exe, width=1760, height=880)
    try:
        page = browser.page
        page.goto(URL + "/")
        page.wait_for("!!(window.app && window.app.graph && window.app.canvas)", timeout=90, what="the ComfyUI frontend")
        for key, value in (("Comfy.Minimap.Visible", False), ("Comfy.Graph.CanvasInfo", False)):
            page.eval(f"window.app.ui.settings.setSettingValueAsync({json.dumps(key)}, {json.dumps(value)})")
        time.sleep(2)
        yield page
    finally:
        browser.close()


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
        folder = Path(os.environ["SEMANTICGEN_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{path.stem}.png").write_bytes(frontend.screenshot())
