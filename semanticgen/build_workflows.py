"""Writes the example workflows in ``workflows/`` (UI format 0.4): ``python -m semanticgen.build_workflows``.

The workflows are data that people open in ComfyUI; this script is how they are made, so node widgets
always follow the nodes' current inputs (widget order, the seed's control value, the upload button) and
the layout stays tidy. Edit here, run it, and commit the JSON it writes.

Template browser: ComfyUI (0.3.64, ``app/custom_node_manager.py``) lists every ``workflows/*.json`` by file
name and serves the folder at ``/api/workflow_templates/<pack>/``; the frontend (1.27.10) shows, for a
custom-node template, the thumbnail ``<name>.jpg`` from that folder, the file name as its title and the
file name with ``_``/``-`` as spaces as its description. It reads no index.json for a pack (and one in
``workflows/`` would be listed as a template called "index"), nor anything in the workflow. So this script
also writes ``<name>.jpg`` (256x256: four frames of what the workflow makes, rendered by the embedded
models; only when missing, as rendering takes a minute on a CPU: ``--thumbnails`` renders them again), and
puts a title and a one-line description in each workflow's ``extra.template`` (see ``TEMPLATES``), where a
frontend or a person can read them.
"""

from __future__ import annotations

import importlib
import json
import uuid
from pathlib import Path

from .runner import WORKFLOWS, input_specs, load_pack, widget_slots

FRONTEND_VERSION = "1.27.10"
HF = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
QWEN = "https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct/resolve/main"

# Where each part's real-weights files go, in the frontend's schema (name, url, directory; the url is
# required). The frontend offers the download when a workflow selects the file by name; "embedded" needs
# none. Stage 1 has no published real weights: a trained file goes in models/semanticgen (see the note).
MODELS = {
    "SemanticGenTextEncoderLoader": [
        {"name": "umt5_xxl_fp16.safetensors", "url": f"{HF}/text_encoders/umt5_xxl_fp16.safetensors",
         "directory": "text_encoders"}],
    "SemanticGenStage2Loader": [
        {"name": "wan2.1_t2v_1.3B_fp16.safetensors", "url": f"{HF}/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors",
         "directory": "diffusion_models"}],
    "SemanticGenVAELoader": [
        {"name": "wan_2.1_vae.safetensors", "url": f"{HF}/vae/wan_2.1_vae.safetensors", "directory": "vae"}],
    "SemanticGenSemanticEncoderLoader": [
        {"name": f"Qwen2.5-VL-3B-Instruct/model-0000{i}-of-00002.safetensors",
         "url": f"{QWEN}/model-0000{i}-of-00002.safetensors", "directory": "clip_vision"} for i in (1, 2)],
}

STAGE1_COLOR = {"color": "#223", "bgcolor": "#335"}
STAGE2_COLOR = {"color": "#232", "bgcolor": "#353"}
NOTE_COLOR = {"color": "#432", "bgcolor": "#653"}

OVERVIEW = """## SemanticGen: video generation in semantic space

**Stage 1 (blue)** diffuses a compact *semantic plan* of the whole video from the prompt: the features a
video-understanding encoder would see, compressed to a few channels. It decides layout, objects and
motion with full attention over the whole clip.

**Stage 2 (green)** renders VAE latents conditioned *in context* on the plan (plan tokens appended to the
video tokens), adding colour, texture and detail. The VAE decodes them to frames, a few at a time.

Every model here is **embedded** (trained for this pack, 64x64 at 8 fps, no download). It knows the
captions of its procedural world: coloured circles, squares, triangles and stars, textures, backgrounds,
motions such as *moving from left to right*, *bouncing*, *growing*."""

REAL_WEIGHTS = """## Real weights (optional)

Pick them in the loaders instead of `embedded`:

- **Text encoder:** `models/text_encoders/umt5_xxl_fp16.safetensors`, with google/umt5-xxl's tokenizer files in
  `models/text_encoders/umt5-xxl-tokenizer/`.
- **Stage 2:** a SemanticGen stage-2 file in `models/semanticgen/`, or the Wan2.1 DiT
  `models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors`: its in-context layers were never trained, so
  stage 2 renders it as plain Wan2.1 (full attention, no plan) and says so.
- **VAE:** `models/vae/wan_2.1_vae.safetensors`.
- **Stage 1 / semantic encoder:** SemanticGen files in `models/semanticgen/`; the Qwen2.5-VL-3B-Instruct
  checkpoint (shards, index and config.json) in `models/clip_vision/Qwen2.5-VL-3B-Instruct/`.

Wan-sized models want 832x480, 16 fps, 30-50 steps and a GPU."""


# Each template's title and one-line description (the workflow's ``extra.template``).
TEMPLATES = {
    "text_to_video": ("Text to video", "A prompt becomes a semantic plan (stage 1), then VAE latents (stage 2), "
                      "then an mp4."),
    "video_to_plan_rerender": ("Video to plan, re-rendered", "Take a video's semantic plan and render it under a "
                               "new prompt: layout and motion stay, colour and texture change."),
    "save_plan_then_render": ("Save a plan, render it later", "Stage 1 saves its plan to a small file; Load Plan "
                              "reads it back for stage 2."),
    "long_multi_shot": ("60-second multi-shot video", "Four timed shots planned at once, rendered in windows and "
                        "written to the mp4 as they are decoded."),
    "edit_plan_then_render": ("Edit the plan, then render", "Reverse the planned motion and re-plan its first "
                              "second with another prompt before rendering."),
    "best_of_n_videos": ("Best of N videos", "Make the video at several seeds, read each back and keep the one "
                         "that follows the prompt best."),
}


class Graph:
    """A UI-format workflow under construction."""

    def __init__(self):
        pack = load_pack()
        self.classes, self.display = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
        self.nodes, self.links, self.groups = [], [], []

    def node(self, node_type: str, pos, size, title: str | None = None, widgets: dict | None = None,
             color: dict | None = None) -> dict:
        node_id = len(self.nodes) + 1
        node = {"id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {}}
        if node_type in ("MarkdownNote", "Note"):
            node["widgets_values"] = [widgets["text"]]
        else:
            cls = self.classes[node_type]
            specs = {s.name: s for s in input_specs(cls)}
            values = dict(widgets or {})
            unknown = set(values) - set(specs)
            assert not unknown, f"{node_type} has no inputs {unknown}"
            node["inputs"] = [{"name": s.name, "type": s.type, "link": None} for s in specs.values() if not s.is_widget]
            node["outputs"] = [{"name": name, "type": t, "links": [], "slot_index": i} for i, (name, t) in
                               enumerate(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))]
            row = []
            for name, kind in widget_slots(cls):
                if kind == "control":  # the seed's control_after_generate: keep the seed as saved
                    row.append("fixed")
                elif kind == "upload":  # the upload button's (unused) value, as the frontend saves it
                    row.append("image")
                else:
                    spec = specs[name]
                    row.append(values.get(name, spec.options.get("default", spec.choices[0] if spec.choices else None)))
            node["widgets_values"] = row
            node["properties"] = {"cnr_id": "comfyui-semanticgen", "Node name for S&R": node_type}
            if node_type in MODELS:
                node["properties"]["models"] = MODELS[node_type]
        if title:
            node["title"] = title
        if color:
            node.update(color)
        self.nodes.append(node)
        return node

    def note(self, pos, size, text: str, title: str) -> dict:
        return self.node("MarkdownNote", pos, size, title=title, widgets={"text": text}, color=NOTE_COLOR)

    def link(self, src: dict, output: str, dst: dict, input_name: str) -> None:
        slot = next(i for i, o in enumerate(src["outputs"]) if o["name"] == output)
        out_type = src["outputs"][slot]["type"]
        inputs = dst["inputs"]
        index = next((i for i, inp in enumerate(inputs) if inp["name"] == input_name), None)
        if index is None:  # a widget turned into an input socket
            spec = next(s for s in input_specs(self.classes[dst["type"]]) if s.name == input_name)
            inputs.append({"name": input_name, "type": spec.type, "widget": {"name": input_name}, "link": None})
            index = len(inputs) - 1
        link_id = len(self.links) + 1
        inputs[index]["link"] = link_id
        src["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, src["id"], slot, dst["id"], index, out_type])

    def group(self, title: str, bounding, color: str) -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding), "color": color,
                            "font_size": 24, "flags": {}})

    def to_json(self, name: str, scale: float = 0.75, offset=(40, 340)) -> dict:
        title, description = TEMPLATES[name]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-semanticgen/{name}")),
            "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
            "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
            "extra": {"ds": {"scale": scale, "offset": list(offset)}, "frontendVersion": FRONTEND_VERSION,
                      "template": {"title": title, "description": description, "thumbnail": f"{name}.jpg"}},
            "version": 0.4,
        }


def _models(g: Graph, x: float, y: float, parts=("text", "stage1", "stage2", "vae")) -> dict:
    """The loaders, stacked in a column; returns them by part."""
    types = {"text": ("SemanticGenTextEncoderLoader", "Text encoder"),
             "stage1": ("SemanticGenStage1Loader", "Stage 1 model (planner)"),
             "stage2": ("SemanticGenStage2Loader", "Stage 2 model (renderer)"),
             "vae": ("SemanticGenVAELoader", "VAE"),
             "encoder": ("SemanticGenSemanticEncoderLoader", "Semantic encoder")}
    out = {}
    for i, part in enumerate(parts):
        node_type, title = types[part]
        out[part] = g.node(node_type, (x, y + 130 * i), (340, 82), title=title)
    return out


def _aligner(g: Graph, x: float, y: float, *users: dict) -> None:
    """The aligner loader, wired to stage 1 (and the edit node's regenerations); added last, so the other nodes
    keep their ids."""
    aligner = g.node("SemanticGenAlignerLoader", (x, y), (340, 82), title="Aligner (stage 1's alignment guidance)")
    for user in users:
        g.link(aligner, "aligner", user, "aligner")


def text_to_video(name: str = "text_to_video", overview: str = OVERVIEW, prompt: dict | None = None,
                  plan: dict | None = None, streamed: bool = False) -> dict:
    """Prompt -> stage 1 -> stage 2 -> decode -> mp4; ``prompt``/``plan``: widget values to set; ``streamed``:
    one VAE Decode to Video node, which writes the frames as they are decoded, instead of Decode + Save."""
    g = Graph()
    g.note((0, -290), (700, 230), overview, "What this workflow does")
    g.note((740, -290), (700, 230), REAL_WEIGHTS, "Real weights")
    m = _models(g, 20, 50)
    g.group("Models", (0, -20, 380, 700), "#3f789e")
    prompt = g.node("SemanticGenTextEncode", (420, 50), (400, 260), title="Prompt", widgets=prompt or {})
    g.group("Prompt", (400, -20, 440, 580), "#a1309b")
    stage1 = g.node("SemanticGenStage1Sample", (880, 50), (320, 380), title="Stage 1: plan", color=STAGE1_COLOR,
                    widgets=plan or {})
    g.group("Stage 1: plan", (860, -20, 360, 580), "#88A")
    stage2 = g.node("SemanticGenStage2Sample", (1260, 50), (320, 300), title="Stage 2: render", color=STAGE2_COLOR)
    g.group("Stage 2: render", (1240, -20, 360, 580), "#8A8")
    if streamed:
        decode = g.node("SemanticGenDecodeToVideo", (1640, 50), (320, 470), title="Decode to video",
                        widgets={"filename_prefix": f"SemanticGen/{name}"})
    else:
        decode = g.node("SemanticGenVAEDecode", (1640, 50), (320, 100), title="VAE decode")
        save = g.node("SemanticGenSaveVideo", (1640, 190), (320, 330), title="Save video",
                      widgets={"filename_prefix": f"SemanticGen/{name}"})
    g.group("Decode and save", (1620, -20, 360, 580), "#b58b2a")
    g.link(m["text"], "text_encoder", prompt, "text_encoder")
    g.link(m["stage1"], "stage1", stage1, "stage1")
    g.link(prompt, "conditioning", stage1, "conditioning")
    g.link(m["stage2"], "stage2", stage2, "stage2")
    g.link(stage1, "plan", stage2, "plan")
    g.link(prompt, "conditioning", stage2, "conditioning")
    g.link(m["vae"], "vae", decode, "vae")
    g.link(stage2, "latent", decode, "latent")
    if not streamed:
        g.link(decode, "images", save, "images")
    _aligner(g, 20, 570, stage1)
    return g.to_json(name)


LONG = """## A 60-second multi-shot video

Give each shot its time range in the prompt: `0-15 s: ...; 15-30 s: ...`. **Stage 1** plans the whole
minute at once with full attention (the plan is small: 2 steps a second of 4x4 tokens), each shot's text
conditioning its own span, with a cut between shots. **Stage 2** renders the plan in shifted windows of
2 s, so its cost grows linearly with the length. **Decode to video** decodes a few frames at a time and
writes them straight into the mp4, so the minute of frames is never held in memory.

The embedded models were trained on 4-second clips: a minute-long plan is far beyond their training, so
expect the shots to hold their colours and shapes better than their motion."""


def long_multi_shot() -> dict:
    shots = ("0-15 s: a red circle bouncing over blue stripes; 15-30 s: a large yellow star growing on a grey "
             "gradient; 30-45 s: a green square moving from left to right over purple noise; 45-60 s: a cyan "
             "triangle moving up on an orange gradient")
    return text_to_video("long_multi_shot", LONG, prompt={"prompt": shots}, plan={"length": 481}, streamed=True)


RERENDER = """## Video -> plan -> re-render

The semantic encoder reads the video at a low frame rate and stage 2's compressor turns its features into
a **plan**: layout, objects and motion, without colour or texture. Stage 2 then renders that plan under a
**new prompt**: the shapes keep their places and motion while colour and texture follow the new text
(the paper's Fig. 4 experiment).

Frames are resized to 64x64 at 8 fps for the embedded models. `semanticgen_example.mp4` ships with the
pack; upload your own with the button."""


def video_to_plan_rerender() -> dict:
    g = Graph()
    g.note((0, -270), (700, 210), RERENDER, "What this workflow does")
    g.note((740, -270), (700, 210), REAL_WEIGHTS, "Real weights")
    m = _models(g, 20, 50, parts=("encoder", "stage2", "text", "vae"))
    g.group("Models", (0, -20, 380, 660), "#3f789e")
    video = g.node("SemanticGenLoadVideo", (420, 50), (340, 420), title="Reference video",
                   widgets={"video": "semanticgen_example.mp4", "force_rate": 8.0, "width": 64, "height": 64,
                            "max_frames": 33})
    plan = g.node("SemanticGenSemanticEncode", (800, 50), (340, 200), title="Plan from video", color=STAGE1_COLOR)
    g.group("Reference video -> plan", (400, -20, 760, 660), "#88A")
    prompt = g.node("SemanticGenTextEncode", (1200, 50), (400, 220), title="New prompt",
                    widgets={"prompt": "a large green star leaving to the left over red noise"})
    stage2 = g.node("SemanticGenStage2Sample", (1200, 310), (400, 280), title="Stage 2: render under the new prompt",
                    color=STAGE2_COLOR)
    g.group("Stage 2: new prompt", (1180, -20, 440, 660), "#8A8")
    decode = g.node("SemanticGenVAEDecode", (1660, 50), (320, 100), title="VAE decode")
    save = g.node("SemanticGenSaveVideo", (1660, 190), (320, 330), title="Save video",
                  widgets={"filename_prefix": "SemanticGen/rerender"})
    g.group("Decode and save", (1640, -20, 360, 660), "#b58b2a")
    g.link(m["encoder"], "semantic_encoder", plan, "semantic_encoder")
    g.link(m["stage2"], "stage2", plan, "stage2")
    g.link(video, "images", plan, "images")
    g.link(video, "fps", plan, "fps")
    g.link(m["text"], "text_encoder", prompt, "text_encoder")
    g.link(m["stage2"], "stage2", stage2, "stage2")
    g.link(plan, "plan", stage2, "plan")
    g.link(prompt, "conditioning", stage2, "conditioning")
    g.link(m["vae"], "vae", decode, "vae")
    g.link(stage2, "latent", decode, "latent")
    g.link(decode, "images", save, "images")
    g.link(video, "fps", save, "fps")
    return g.to_json("video_to_plan_rerender")


SAVE_PLAN = """## Save a plan, render it later

**Top row:** stage 1 writes the plan of the prompt and **Save Plan** stores it in ComfyUI's output folder
(`SemanticGen/plan_00001.safetensors`, checksummed). Plans are small: keep the ones you like, render them
again with other seeds or prompts, or edit them.

**Bottom row:** **Load Plan** reads a plan file and stage 2 renders it. Here its path is linked from Save
Plan, so one run does both; to render an older plan, remove the link and type its path (relative to the
output folder). Mute the top row to skip stage 1."""


def save_plan_then_render() -> dict:
    g = Graph()
    g.note((0, -270), (760, 210), SAVE_PLAN, "What this workflow does")
    g.note((800, -270), (700, 210), REAL_WEIGHTS, "Real weights")
    m = _models(g, 20, 50)
    g.group("Models", (0, -20, 380, 700), "#3f789e")
    prompt = g.node("SemanticGenTextEncode", (420, 50), (400, 240), title="Prompt",
                    widgets={"prompt": "a green triangle bouncing on a grey background"})
    stage1 = g.node("SemanticGenStage1Sample", (860, 50), (320, 380), title="Stage 1: plan", color=STAGE1_COLOR)
    save_plan = g.node("SemanticGenSavePlan", (1220, 50), (340, 110), title="Save plan")
    g.group("1. Stage 1 -> save the plan", (400, -20, 1180, 480), "#88A")
    load_plan = g.node("SemanticGenLoadPlan", (420, 560), (400, 90), title="Load plan")
    stage2 = g.node("SemanticGenStage2Sample", (860, 560), (320, 300), title="Stage 2: render", color=STAGE2_COLOR)
    decode = g.node("SemanticGenVAEDecode", (1220, 560), (340, 100), title="VAE decode")
    save = g.node("SemanticGenSaveVideo", (1220, 700), (340, 330), title="Save video",
                  widgets={"filename_prefix": "SemanticGen/plan_render"})
    g.group("2. Load the plan -> stage 2", (400, 490, 1180, 570), "#8A8")
    g.link(m["text"], "text_encoder", prompt, "text_encoder")
    g.link(m["stage1"], "stage1", stage1, "stage1")
    g.link(prompt, "conditioning", stage1, "conditioning")
    g.link(stage1, "plan", save_plan, "plan")
    g.link(save_plan, "plan_path", load_plan, "plan_path")
    g.link(m["stage2"], "stage2", stage2, "stage2")
    g.link(load_plan, "plan", stage2, "plan")
    g.link(prompt, "conditioning", stage2, "conditioning")
    g.link(m["vae"], "vae", decode, "vae")
    g.link(stage2, "latent", decode, "latent")
    g.link(decode, "images", save, "images")
    _aligner(g, 20, 570, stage1)
    return g.to_json("save_plan_then_render", scale=0.62, offset=(60, 320))


EDIT_PLAN = """## Edit the plan, then render

Stage 1 writes the **plan**: layout and motion of the whole video in a few thousand numbers. **Edit Plan**
changes it before a single pixel is rendered. Its timeline shows the plan as thumbnails over time (tokens
coloured by PCA); drag across it to select steps, then use the buttons or the right-click menu: delete,
duplicate, reverse, interpolate, regenerate with a prompt, or drag the selection to move it. Every change
is written to the node's edit list (saved with the workflow); undo and redo work. The timeline shows the
plan of the last run: run the workflow once first.

Here the edits **play the planned motion backwards** and **re-plan the first second** under another prompt
with stage 1 (the rest of the plan is held). **Plan Preview** shows the edited plan; stage 2 renders it
with the edit node's conditioning, which gives the re-planned second its own prompt. Changing the edits
re-runs only the edit node and what follows it; regenerated spans are cached."""

EXAMPLE_EDITS = [{"op": "reverse"},
                 {"op": "regenerate", "start_s": 0, "end_s": 1, "prompt": "a blue star growing on a grey background",
                  "seed": 1}]


def edits_text(edits: list[dict]) -> str:
    """An edit list as the timeline editor writes it (one compact JSON object per line)."""
    return "[\n" + ",\n".join("  " + json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in edits) + "\n]"


def edit_plan_then_render() -> dict:
    g = Graph()
    g.note((0, -300), (820, 240), EDIT_PLAN, "What this workflow does")
    g.note((860, -300), (700, 240), REAL_WEIGHTS, "Real weights")
    m = _models(g, 20, 50)
    g.group("Models", (0, -20, 380, 700), "#3f789e")
    prompt = g.node("SemanticGenTextEncode", (420, 50), (400, 240), title="Prompt")
    stage1 = g.node("SemanticGenStage1Sample", (420, 330), (400, 380), title="Stage 1: plan", color=STAGE1_COLOR)
    g.group("Prompt -> stage 1", (400, -20, 440, 750), "#88A")
    edit = g.node("SemanticGenEditPlan", (880, 50), (640, 520), title="Edit plan",
                  widgets={"edits": edits_text(EXAMPLE_EDITS)}, color=STAGE1_COLOR)
    preview = g.node("SemanticGenPlanPreview", (880, 610), (640, 300), title="Plan preview")
    g.group("Edit the plan", (860, -20, 680, 950), "#a1309b")
    stage2 = g.node("SemanticGenStage2Sample", (1580, 50), (320, 300), title="Stage 2: render", color=STAGE2_COLOR)
    decode = g.node("SemanticGenVAEDecode", (1580, 390), (320, 100), title="VAE decode")
    save = g.node("SemanticGenSaveVideo", (1580, 530), (320, 330), title="Save video",
                  widgets={"filename_prefix": "SemanticGen/edited_plan"})
    g.group("Stage 2 -> video", (1560, -20, 360, 950), "#8A8")
    g.link(m["text"], "text_encoder", prompt, "text_encoder")
    g.link(m["stage1"], "stage1", stage1, "stage1")
    g.link(prompt, "conditioning", stage1, "conditioning")
    g.link(stage1, "plan", edit, "plan")
    g.link(m["stage1"], "stage1", edit, "stage1")
    g.link(prompt, "conditioning", edit, "conditioning")
    g.link(m["text"], "text_encoder", edit, "text_encoder")
    g.link(edit, "plan", preview, "plan")
    g.link(m["stage2"], "stage2", stage2, "stage2")
    g.link(edit, "plan", stage2, "plan")
    g.link(edit, "conditioning", stage2, "conditioning")  # the edited plan's prompts, the new shot's among them
    g.link(m["vae"], "vae", decode, "vae")
    g.link(stage2, "latent", decode, "latent")
    g.link(decode, "images", save, "images")
    _aligner(g, 20, 570, stage1, edit)
    return g.to_json("edit_plan_then_render", scale=0.6, offset=(60, 340))


BEST_OF = """## Best of N videos

**Best of N Videos** makes the prompt's video at N seeds (seed, seed + 1000, ...), each through stage 1,
stage 2 and the VAE, reads each back with the **semantic encoder** and keeps the one the **aligner** scores
as following the prompt best, above all in which way things move. Its outputs: the kept frames, its plan
(save it, edit it) and its seed, at which Stage 1 and Stage 2 make the same video again. The node shows
every candidate's score.

With the embedded default, best of 4 gets the direction of 55% of held-out objects right instead of 45%
(81% instead of 65% with one object in the scene), at four times the wait; colour and shape do not change."""


def best_of_n_videos() -> dict:
    g = Graph()
    g.note((0, -290), (700, 230), BEST_OF, "What this workflow does")
    g.note((740, -290), (700, 230), REAL_WEIGHTS, "Real weights")
    m = _models(g, 20, 50, parts=("text", "stage1", "stage2", "vae", "encoder"))
    g.group("Models", (0, -20, 380, 830), "#3f789e")
    prompt = g.node("SemanticGenTextEncode", (420, 50), (400, 260), title="Prompt",
                    widgets={"prompt": "a red circle moving from left to right over blue stripes"})
    g.group("Prompt", (400, -20, 440, 830), "#a1309b")
    best = g.node("SemanticGenBestOfN", (880, 50), (340, 560), title="Best of N videos", color=STAGE1_COLOR)
    g.group("Best of N", (860, -20, 380, 830), "#88A")
    preview = g.node("SemanticGenPlanPreview", (1280, 480), (320, 300), title="The kept video's plan")
    save = g.node("SemanticGenSaveVideo", (1280, 50), (320, 330), title="Save video",
                  widgets={"filename_prefix": "SemanticGen/best_of_n"})
    g.group("Save", (1260, -20, 360, 830), "#b58b2a")
    g.link(m["text"], "text_encoder", prompt, "text_encoder")
    for part, output in (("stage1", "stage1"), ("stage2", "stage2"), ("vae", "vae"), ("encoder", "semantic_encoder")):
        g.link(m[part], output, best, output)
    g.link(prompt, "conditioning", best, "conditioning")
    g.link(best, "images", save, "images")
    g.link(best, "plan", preview, "plan")
    _aligner(g, 20, 700, best)
    return g.to_json("best_of_n_videos")


BUILDERS = {"text_to_video": text_to_video, "long_multi_shot": long_multi_shot,
            "video_to_plan_rerender": video_to_plan_rerender, "save_plan_then_render": save_plan_then_render,
            "edit_plan_then_render": edit_plan_then_render, "best_of_n_videos": best_of_n_videos}


def write_example_video(path: Path) -> None:
    """The bundled reference clip: 33 frames, 64x64 at 8 fps, from the procedural world."""
    import torch

    from semanticgen_world import world

    video = importlib.import_module(f"{load_pack().__name__}.nodes.video")
    clip = world.sample_clip(seed=7, num_frames=33, height=64, width=64, fps=8.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    video.write_video(path, torch.from_numpy(clip.frames).float() / 255, 8.0, codec="vp9")
    (path.parent / (path.stem + ".txt")).write_text(clip.caption + "\n")


# -- thumbnails ----------------------------------------------------------------------------------

THUMB_SIZE = 256     # px, square: four frames in a 2x2 grid, 128 px each
THUMB_STEPS = 8      # sampling steps (the workflows use 10): enough for a thumbnail
THUMB_SEED = 0
THUMB_FRAMES = 33    # 4 s at 8 fps, the embedded models' training length
THUMB_QUALITY = 85   # JPEG


def _widget(wf: dict, title: str, name: str):
    """The value of input ``name`` on the node titled ``title`` in a built workflow."""
    from .runner import widget_slots

    node = next(n for n in wf["nodes"] if n.get("title") == title)
    slots = [s for s, _ in widget_slots(load_pack().NODE_CLASS_MAPPINGS[node["type"]])]
    return node["widgets_values"][slots.index(name)]


def thumbnail_frames(name: str, pipe=None) -> list:
    """Four frames (float ``[H, W, 3]`` in 0..1) showing what workflow ``name`` makes, rendered by the embedded
    models with the workflow's prompt, ``THUMB_STEPS`` steps and seed ``THUMB_SEED``:

    - text_to_video, save_plan_then_render: four moments of the 4-second video of its prompt;
    - edit_plan_then_render: the same after the workflow's edits (reversed, first second re-planned);
    - video_to_plan_rerender: top row the bundled example clip, bottom row its plan re-rendered under the
      workflow's new prompt;
    - long_multi_shot: a 4-second miniature of the minute (each shot 1 s, same texts), a frame from each shot;
    - best_of_n_videos: four moments of the video best of N (the node's default N) keeps.
    """
    from semanticgen_core.pipeline import SemanticGenPipeline
    from semanticgen_core.sampling import SamplingOptions

    pipe = pipe or SemanticGenPipeline.embedded(with_encoder=True)
    d = pipe.preset.defaults
    opts = SamplingOptions(steps=THUMB_STEPS, guidance=d["guidance"], seed=THUMB_SEED)
    wf = BUILDERS[name]()
    fps, size, n = d["fps"], (d["height"], d["width"]), THUMB_FRAMES
    picks = [round(i * (n - 1) / 3) for i in range(4)]
    if name == "video_to_plan_rerender":
        video = importlib.import_module(f"{load_pack().__name__}.nodes.video")
        ref, rate = video.read_video(WORKFLOWS / "media" / "semanticgen_example.mp4", fps, size[1], size[0], n)
        plan = pipe.encode_video(ref, rate)
        prompt = _widget(wf, "New prompt", "prompt")
        out = pipe.decode(pipe.render_latents(plan, opts, prompt=prompt), plan.num_frames)
        k = [0, plan.num_frames - 1]
        return [ref[k[0]], ref[k[1]], out[k[0]], out[k[1]]]
    prompt = _widget(wf, "Prompt", "prompt")
    if name == "best_of_n_videos":
        best, _ = pipe.best_of(prompt, n, fps, *size, opts, _widget(wf, "Best of N videos", "candidates"))
        return [best.frames[i] for i in picks]
    if name == "long_multi_shot":
        texts = [t.split(":", 1)[1].strip() for t in prompt.split(";")]
        prompt = "; ".join(f"{i}-{i + 1} s: {t}" for i, t in enumerate(texts))
        picks = [round((i + 0.5) * fps) for i in range(4)]
    plan = pipe.generate_plan(prompt, n, fps, *size, opts)
    if name == "edit_plan_then_render":
        from semanticgen_core.plan_ops import EditContext, apply_edits

        plan = apply_edits(plan, EXAMPLE_EDITS, EditContext(stage1=pipe.stage1, text_encoder=pipe.text_encoder,
                                                             opts=opts))
    frames = pipe.decode(pipe.render_latents(plan, opts), n)
    return [frames[i] for i in picks]


def thumbnail_image(frames: list):
    """Four frames -> the ``THUMB_SIZE`` square BGR uint8 image (2x2, in reading order)."""
    import cv2
    import numpy as np

    cell = THUMB_SIZE // 2
    tiles = [cv2.resize((f.clamp(0, 1).numpy() * 255).round().astype(np.uint8), (cell, cell),
                        interpolation=cv2.INTER_CUBIC) for f in frames]
    grid = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    return np.ascontiguousarray(grid[..., ::-1])


def write_thumbnail(name: str, pipe=None) -> Path:
    import cv2

    path = WORKFLOWS / f"{name}.jpg"
    ok, data = cv2.imencode(".jpg", thumbnail_image(thumbnail_frames(name, pipe)),
                            [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    assert ok
    path.write_bytes(data.tobytes())
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m semanticgen.build_workflows", description=__doc__.split("\n")[0])
    parser.add_argument("--thumbnails", action="store_true",
                        help="render every thumbnail again (by default only missing ones are rendered)")
    args = parser.parse_args(argv)
    for name, build in BUILDERS.items():
        path = WORKFLOWS / f"{name}.json"
        path.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    example = WORKFLOWS / "media" / "semanticgen_example.mp4"
    if not example.exists():
        write_example_video(example)
        print(f"wrote {example}")
    pipe = None
    for name in BUILDERS:
        if args.thumbnails or not (WORKFLOWS / f"{name}.jpg").exists():
            if pipe is None:
                from semanticgen_core.pipeline import SemanticGenPipeline

                pipe = SemanticGenPipeline.embedded(with_encoder=True)
            print(f"wrote {write_thumbnail(name, pipe)}")


if __name__ == "__main__":
    main()
