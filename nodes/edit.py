"""Editing a semantic plan: apply a list of edits to it, and look at it as images.

``SemanticGenEditPlan`` applies a JSON edit list (its ``edits`` widget, which the timeline editor in
``web/`` writes, so a saved workflow carries the edits) with ``semanticgen_core.plan_ops.apply_edits``,
and sends the frontend thumbnails of its input and output plans (a strip, one thumbnail per plan step) so
the editor shows the last execution. ``SemanticGenPlanPreview`` shows a plan as images, one per plan step,
and outputs them as a core IMAGE batch.

Both draw a plan with the plan-preview decoder of its model family when there is one
(``semanticgen_core.plan_preview``: the embedded default ships one; a preview file trained for another
preset is found in models/semanticgen), so a thumbnail shows the planned objects, colours and positions;
otherwise (or in the preview node's ``pca`` mode) the tokens are projected to RGB by PCA.

What is reused when a workflow runs again after an edit:

* ComfyUI re-executes a node only when its inputs (widget values, and the signatures of the nodes it is
  linked to) change. Changing the edit list re-runs the edit node and what depends on it (preview, stage
  2, decode, save); the loaders, the text encoding and stage 1 upstream are not run again.
* Inside the edit node, regenerated spans are cached (``REGENERATED``) by the plan before the edit, the
  edit, its sampling options, and the identity of stage 1, the conditioning and the text encoder. Adding,
  removing or changing edits *after* a ``regenerate`` therefore does not sample it again, and undoing
  back to an earlier list reuses what was sampled. The result is the same tensor a re-run would give
  (sampling is seeded), so the reuse is exact. Cheap edits (cut, move, ...) are simply re-applied.
* Stage 2 itself re-renders whenever the edit list changes (its input signature changed), even if the
  resulting plan is unchanged; ``plan_ops.plan_fingerprint`` is the key a stage-2 result cache would use.

The instant preview: each Edit Plan node remembers (``PLANS``, by workflow id and node id) the plans of its
last execution and what its regenerations were keyed by. ``POST /semanticgen/edit_plan/preview``
(``preview_request``) applies an edit list to that plan without queueing anything, so the timeline shows
every edit as it is made, and fills again after a page reload or when ComfyUI serves the node from its cache
(it then executes nothing and sends no UI message). Regenerations already sampled come back exact; new ones hold their span and are
reported ``pending`` until the workflow runs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import threading
import uuid
from collections import OrderedDict

import torch

from semanticgen_core.errors import SemanticGenError
from . import comfy
from .loaders import ready
from .model_cache import LoadedModel, _file_key
from .sampling import usable_aligner
from .text import TextConditioning

EDITS_TOOLTIP = (
    "The edits, as a JSON list applied in order; the timeline above writes it (select steps with the mouse, "
    "then use the buttons or the right-click menu), or type it. Times are seconds of the plan as the edits "
    "before left it. Operations: cut {start_s, end_s}; move {start_s, end_s, to_s}; reverse {[start_s, end_s]}; "
    "repeat {[start_s, end_s, times]}; interpolate {[start_s, end_s, from_s, to_s, mode: linear|slerp]}; "
    "regenerate {[start_s, end_s, prompt, seed, steps, guidance, shift, sampler]} (needs stage1 and "
    "conditioning); splice {source: self|other, at_s, [start_s, end_s]}; concatenate {source}; "
    "blend {source, weight, [start_s, end_s, mode]}.")
UI_KEY = "semanticgen_plan"
log = logging.getLogger(__name__)

# Regenerated plans, keyed by what determines them (see the module docstring); small (a plan is KBs).
REGENERATED: OrderedDict = OrderedDict()
REGENERATED_MAX = 32
# The last execution of each Edit Plan node, by (workflow id, node id): node ids repeat across workflows.
PLANS: OrderedDict = OrderedDict()
PLANS_MAX = 32
PREVIEW_ROUTE = "/semanticgen/edit_plan/preview"
_lock = threading.Lock()


class _LRU:
    """A bounded, locked view of an OrderedDict, most recently used last: the regenerate cache (as
    ``apply_edits`` uses it) and the plans the preview route works on."""

    def __init__(self, store: OrderedDict, limit: int):
        self.store, self.limit = store, limit

    def __contains__(self, key) -> bool:
        return key in self.store

    def __getitem__(self, key):
        with _lock:
            self.store.move_to_end(key)
            return self.store[key]

    def __setitem__(self, key, value) -> None:
        with _lock:
            self.store[key] = value
            self.store.move_to_end(key)  # a key set again is the most recent, not where it was first set
            while len(self.store) > self.limit:
                self.store.popitem(last=False)


class ConditioningText:
    """The text-encoder interface (``encode(prompts) -> (embeddings, mask)``) over a conditioning wire:
    its prompt (each shot's, for a timed prompt) and negative prompt come from the wire; other prompts need a
    real text encoder."""

    def __init__(self, conditioning: TextConditioning | None, encoder=None):
        self.conditioning, self.encoder = conditioning, encoder
        self.name = encoder.name if encoder is not None else (conditioning.encoder if conditioning else "none")
        self.known: dict[str, torch.Tensor] = {}  # prompt -> its row [1, L, D] on the wire
        if conditioning is not None:
            from semanticgen_core.shots import split_shots

            c = conditioning
            if c.cond.ndim == 4:  # one row per shot
                self.known.update({text: c.cond[:, k] for k, (_, _, text) in enumerate(split_shots(c.prompt))})
                self.known.setdefault(c.negative_prompt, c.uncond[:, 0])
            else:
                self.known.update({c.prompt: c.cond})
                self.known.setdefault(c.negative_prompt, c.uncond)

    def can_encode(self, prompts: list[str]) -> bool:
        return self.encoder is not None or all(p in self.known for p in prompts)

    def encode(self, prompts: list[str]):
        rows, c = [], self.conditioning
        for p in prompts:
            if p in self.known:
                rows.append(self.known[p].float().cpu())
            elif self.encoder is not None:
                rows.append(self.encoder.encode([p])[0].float().cpu())
            else:
                have = f"the conditioning's prompt {c.prompt!r}" if c is not None else "no conditioning"
                raise SemanticGenError(
                    f"regenerate: the prompt {p!r} needs encoding, but the edit node has {have} and no text encoder: "
                    "connect SemanticGen Load Text Encoder to the edit node's text_encoder input.")
        length = max(r.shape[1] for r in rows)
        rows = [torch.nn.functional.pad(r, (0, 0, 0, length - r.shape[1])) for r in rows]  # zero past the tokens
        return torch.cat(rows), None


def edited_conditioning(plan, conditioning: TextConditioning | None,
                        text_encoder: LoadedModel | None) -> TextConditioning | None:
    """Stage 2's conditioning for an edited plan: ``conditioning`` itself while the plan's shots are its
    prompt's; otherwise one shot per segment of the plan, each embedded from the wire where the conditioning
    holds that prompt and by the text encoder where an edit brought a new one (a regenerated span's prompt, or
    another plan's). None without a conditioning; the input conditioning, with a warning, when a new prompt
    needs a text encoder and none is connected."""
    from semanticgen_core.shots import format_shots, parse_shots

    if conditioning is None:
        return None
    try:
        if parse_shots(conditioning.prompt, plan.duration_s) == plan.segments:
            return conditioning
    except SemanticGenError:  # the conditioning's shots do not fit the edited plan's length
        pass
    prompts = [seg.prompt for seg in plan.segments]
    text = ConditioningText(conditioning)
    if not text.can_encode(prompts) and text_encoder is not None:  # loaded only when a prompt is new
        text = ConditioningText(conditioning, text_encoder.ready()["text_encoder"])
    if not text.can_encode(prompts):
        log.warning("SemanticGen Edit Plan: the edited plan's shots have prompts the conditioning does not hold "
                    "(%s): connect SemanticGen Load Text Encoder to the edit node's text_encoder input so that its "
                    "conditioning output carries them; until then it passes the conditioning through",
                    ", ".join(repr(p) for p in prompts if p not in text.known))
        return conditioning
    rows, _ = text.encode(prompts + [conditioning.negative_prompt] * len(prompts))  # one length: guidance batches them
    cond, uncond = rows[:len(prompts)], rows[len(prompts):]
    if len(prompts) > 1:
        cond, uncond = cond[None], uncond[None]  # [1, S, L, D]: a row per shot
    return TextConditioning(cond=cond, uncond=uncond, prompt=format_shots(plan.segments),
                            negative_prompt=conditioning.negative_prompt, encoder=text.name)


def _tensor_key(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _model_key(model: LoadedModel | None) -> str:
    if model is None:
        return "-"
    try:
        from pathlib import Path

        ident = _file_key(Path(model.path))
    except OSError:
        ident = "?"
    return f"{model.kind}:{model.path}:{ident}:{model.dtype}"


# -- thumbnails for the frontend -------------------------------------------------------------------


def _png_data_url(rgb: torch.Tensor) -> str:
    """``[H, W, 3]`` in 0..1 -> a PNG data URL."""
    import cv2

    image = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()[..., ::-1]
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise SemanticGenError("could not encode the plan thumbnails as PNG")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _svg_data_url(rgb: torch.Tensor, width: int, height: int) -> str:
    """``[H, W, 3]`` in 0..1 as an SVG data URL of intrinsic size ``width`` x ``height`` that holds the PNG at
    its full resolution: the editor crops the strip in token units (``grid``), and the browser draws the
    cropped part from the full-resolution picture."""
    png = _png_data_url(rgb)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" preserveAspectRatio="none"><image x="0" y="0" '
           f'width="{width}" height="{height}" preserveAspectRatio="none" href="{png}" xlink:href="{png}"/></svg>')
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("ascii")).decode("ascii")


@functools.lru_cache(maxsize=8)
def _preview_file(path: str, mtime_ns: int):
    from semanticgen_core.plan_preview import load_preview

    return load_preview(path)


def preview_decoder(plan):
    """The plan-preview decoder for this plan's model family, or ``(None, why)``: the embedded default's for
    its plans, else the first preview file in models/semanticgen trained for the plan's preset."""
    from pathlib import Path

    from semanticgen_core import embedded
    from semanticgen_core.plan_preview import embedded_preview, matches

    candidates = []
    if plan.compressor == embedded.NAME:
        try:
            candidates.append(embedded_preview())
        except SemanticGenError as e:
            return None, str(e)
    try:
        from semanticgen_core.model_files import read_metadata

        from .loaders import semanticgen_kind

        for name in comfy.list_models(comfy.SEMANTICGEN_FOLDER):
            path = comfy.model_path(comfy.SEMANTICGEN_FOLDER, name)
            if path is None or semanticgen_kind(Path(path)) != "preview":
                continue
            if json.loads(read_metadata(path).get("preset", "{}")).get("name") == plan.compressor:
                candidates.append(_preview_file(str(path), Path(path).stat().st_mtime_ns))
    except Exception:  # noqa: BLE001  (a broken model folder must not break the preview: PCA stays)
        log.exception("SemanticGen: looking for a plan-preview decoder failed")
    for model in candidates:
        if matches(model, plan):
            return model.modules["preview"], None
    return None, (f"no plan-preview decoder for plans of {plan.compressor!r} ({plan.tokens.shape[-1]} channels): "
                  "showing the PCA view. Train one with `python -m semanticgen_core.trainer preview --cache CACHE "
                  "--stage2 FILE --out DIR` and put DIR/preview.safetensors in models/semanticgen.")


def decoded_frames(plan):
    """The plan drawn by its preview decoder ``[T, k h, k w, 3]`` in 0..1, or ``(None, why)``."""
    from semanticgen_core.plan_preview import preview_frames

    decoder, why = preview_decoder(plan)
    if decoder is None:
        return None, why
    return preview_frames(decoder, plan.tokens), None


def plan_payload(plan, basis=None) -> dict:
    """What the timeline editor needs to show a plan: its time base and segments, and a strip of its steps
    side by side: the preview decoder's frames when the plan's family has one (an SVG of one unit per token
    holding the frames at full resolution, so the editor's crops by ``grid`` stay right), else a PNG of one
    pixel per token coloured by ``basis``, the PCA of the node's input plan. ``preview`` says which."""
    from semanticgen_core.plan_ops import pca_rgb

    steps, h, w = plan.grid
    frames, _ = decoded_frames(plan)
    if frames is not None:
        _, fh, fw, _ = frames.shape
        strip = _svg_data_url(frames.permute(1, 0, 2, 3).reshape(fh, steps * fw, 3), steps * w, h)
    else:
        rgb = pca_rgb(plan.tokens, basis)                 # [T, h, w, 3]
        strip = _png_data_url(rgb.permute(1, 0, 2, 3).reshape(h, steps * w, 3))
    return {"fps": plan.fps, "video_fps": plan.video_fps, "num_frames": plan.num_frames,
            "duration_s": plan.duration_s, "steps": steps, "grid": [steps, h, w],
            "channels": plan.tokens.shape[-1], "height": plan.height, "width": plan.width,
            "segments": plan.metadata()["segments"], "encoder": plan.encoder, "compressor": plan.compressor,
            "edits_in_history": len(plan.history), "strip": strip,
            "preview": "decoded" if frames is not None else "pca"}


def editor_payload(plan, result, edits: list, other=None, pending: list[int] = ()) -> dict:
    """The edit node's message to the editor: input, output (and other) plans in the input's colours, the
    edit list that turned the input into the output, and which of its regenerations were not sampled
    (``pending``: positions in ``edits``; a preview holds their spans)."""
    from semanticgen_core.plan_ops import pca_basis

    basis = pca_basis(plan.tokens)
    same_space = other is not None and other.tokens.shape[-1] == plan.tokens.shape[-1]
    return {"input": plan_payload(plan, basis), "output": plan_payload(result, basis),
            "other": plan_payload(other, basis) if same_space else None, "edits": edits,
            "pending": list(pending)}


# -- the instant preview ---------------------------------------------------------------------------


def workflow_id(extra_pnginfo) -> str:
    """The id of the workflow a prompt came from (the frontend saves it as the workflow's ``id``, a UUID, and
    sends the workflow with every prompt), or "" for a prompt queued without one (the API format)."""
    workflow = extra_pnginfo.get("workflow") if isinstance(extra_pnginfo, dict) else None
    ident = workflow.get("id") if isinstance(workflow, dict) else None
    return str(ident) if ident else ""


def remember_plan(node_id: str, plan, other=None, context=None, workflow: str = "", edits=None) -> None:
    """Keep what an Edit Plan node's execution saw, for previews of later edits: its input plans, its edit
    list, and the key, options and negative prompt its regenerations were cached under (so a preview finds
    them). ``workflow``: the workflow's id (``workflow_id``), so another workflow's node of the same id is
    not shown this plan."""
    entry = {"plan": plan, "other": other, "edits": edits, "cache_key": getattr(context, "cache_key", ""),
             "opts": getattr(context, "opts", None), "negative_prompt": getattr(context, "negative_prompt", "")}
    _LRU(PLANS, PLANS_MAX)[(str(workflow or ""), str(node_id))] = entry


def _cached_entry(workflow: str, node_id: str, edits: list):
    """For a node ComfyUI served from its cache: the latest execution of this node id in any workflow, if it
    ran these edits. ComfyUI keeps one output per node id and reuses it only for the same inputs, so that
    execution is the one whose output was reused, even when the workflow's id changed since (a workflow
    saved without an id gets a new one each time it is opened)."""
    with _lock:
        latest = next((e for (_, n), e in reversed(PLANS.items()) if n == node_id), None)
    if latest is None or latest["edits"] != edits:
        return None
    _LRU(PLANS, PLANS_MAX)[(workflow, node_id)] = latest  # this workflow's previews find it from now on
    return latest


class NoPlanYet(LookupError):
    pass


def preview_edits(node_id: str, edits, workflow: str = "", cached: bool = False) -> dict:
    """The editor payload of node ``node_id``'s last input plan in workflow ``workflow`` with ``edits``
    applied, sampling nothing (see ``plan_ops.EditContext.preview``). ``cached``: ComfyUI just served the node
    from its cache (``_cached_entry``). Raises ``NoPlanYet`` when the node has not run in this workflow since
    the server started, ``SemanticGenError`` for a bad edit list."""
    from semanticgen_core.plan_ops import EditContext, apply_edits, parse_edits

    workflow, node_id = str(workflow or ""), str(node_id)
    checked = parse_edits(edits)
    with _lock:
        entry = PLANS.get((workflow, node_id))
    if entry is None and cached:
        entry = _cached_entry(workflow, node_id, checked)
    if entry is None:
        raise NoPlanYet(f"the Edit Plan node {node_id} has not run in this workflow since the server started: run "
                        "the workflow once.")
    context = EditContext(sources={"other": entry["other"]}, preview=True, opts=entry["opts"],
                          negative_prompt=entry["negative_prompt"], cache=_LRU(REGENERATED, REGENERATED_MAX),
                          cache_key=entry["cache_key"])
    result = apply_edits(entry["plan"], checked, context)
    return editor_payload(entry["plan"], result, checked, entry["other"], context.pending)


def preview_request(body) -> tuple[int, dict]:
    """The preview route without its web framework: ``{"workflow_id", "node_id", "edits", "cached"}`` ->
    (HTTP status, JSON body). ``workflow_id``: the workflow's ``id`` (what the frontend sends with a prompt);
    ``node_id``: the id the node runs under ("12:9" inside a subgraph). A node that has not run yet is an
    answer, not a failed request: 200 with ``{"input": null, "error": why}`` (a 404 would be a red line in
    the browser's console each time a workflow is opened before its first run)."""
    if not isinstance(body, dict) or "node_id" not in body:
        return 400, {"error": 'send {"workflow_id": "<the workflow\'s id>", "node_id": "<the Edit Plan node\'s id>", '
                              '"edits": [...]}'}
    try:
        return 200, preview_edits(str(body["node_id"]), body.get("edits", []), body.get("workflow_id") or "",
                                  bool(body.get("cached")))
    except NoPlanYet as e:
        return 200, {"input": None, "error": str(e)}
    except SemanticGenError as e:
        return 400, {"error": str(e)}


def register_routes() -> None:
    """Add the preview route to ComfyUI's server (does nothing outside ComfyUI)."""
    server = comfy.prompt_server()
    if server is None:
        return
    import asyncio

    from aiohttp import web

    @server.routes.post(PREVIEW_ROUTE)
    async def _preview(request):
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the request body is not JSON"}, status=400)
        # off the event loop: the preview decoder runs torch (well under a second for the embedded default)
        status, data = await asyncio.get_running_loop().run_in_executor(None, preview_request, body)
        return web.json_response(data, status=status)


def format_edits(edits: list[dict]) -> str:
    """The edit list as the editor writes it: one compact JSON object per line."""
    if not edits:
        return "[]"
    return "[\n" + ",\n".join("  " + json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in edits) + "\n]"


# -- nodes -----------------------------------------------------------------------------------------


class SemanticGenEditPlan:
    CATEGORY = "SemanticGen/plan"
    FUNCTION = "edit"
    RETURN_TYPES = ("SEMANTIC_PLAN", "SEMANTICGEN_CONDITIONING")
    RETURN_NAMES = ("plan", "conditioning")
    OUTPUT_TOOLTIPS = ("The edited plan (its history lists the edits); render it with stage 2.",
                       "The edited plan's prompts, for Stage 2: the conditioning input as it is, or, where an edit "
                       "gave a span a new prompt, a shot per prompt (new ones encoded by the text encoder).")
    DESCRIPTION = ("Edits a semantic plan before anything is rendered: cut, move, reverse, repeat, interpolate or "
                   "regenerate time ranges (with stage 1, optionally under a new prompt), or splice, concatenate and "
                   "blend another plan. The timeline shows the plan as thumbnails over time; select steps with the "
                   "mouse and use the buttons or the right-click menu. The edit list is saved with the workflow.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "plan": ("SEMANTIC_PLAN", {"tooltip": "The plan to edit (from stage 1, Plan from Video or Load "
                                                      "Plan)."}),
                "edits": ("STRING", {"multiline": True, "default": "[]", "tooltip": EDITS_TOOLTIP}),
            },
            "optional": {
                "other": ("SEMANTIC_PLAN", {"tooltip": "A second plan for splice, concatenate and blend "
                                                       "(source \"other\"); it must come from the same model family "
                                                       "and video size."}),
                "stage1": ("SEMANTICGEN_STAGE1", {"tooltip": "Stage 1, for regenerate edits (re-samples a span while "
                                                             "the rest of the plan is held)."}),
                "conditioning": ("SEMANTICGEN_CONDITIONING", {"tooltip": "Text embeddings of the plan's prompt (and the "
                                                                         "negative prompt), for regenerate edits."}),
                "text_encoder": ("SEMANTICGEN_TEXT_ENCODER", {"tooltip": "For regenerate edits with a new prompt: "
                                                                         "encodes it (the conditioning holds only "
                                                                         "its own prompt)."}),
                "aligner": ("SEMANTICGEN_ALIGNER", {"tooltip": "From SemanticGen Load Aligner: regenerate edits "
                                                               "sample with stage 1's alignment guidance, at the "
                                                               "model's default weight, as Stage 1 does."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, edits=None):
        if edits is None:  # linked from another node: checked when it runs
            return True
        from semanticgen_core.plan_ops import parse_edits

        try:
            parse_edits(edits)
        except SemanticGenError as e:
            return f"edit list: {e}"
        return True

    def edit(self, plan, edits: str = "[]", other=None, stage1: LoadedModel | None = None,
             conditioning: TextConditioning | None = None, text_encoder: LoadedModel | None = None,
             aligner: LoadedModel | None = None, unique_id: str | None = None, extra_pnginfo: dict | None = None):
        from semanticgen_core.plan_ops import EditContext, apply_edits, parse_edits

        comfy.check_interrupt()
        checked = parse_edits(edits)
        context = EditContext(sources={"other": other}, should_stop=comfy.should_stop)
        regenerates = [k for k, e in enumerate(checked, 1) if e["op"] == "regenerate"]
        if regenerates:
            context = self._regenerate_context(context, plan, regenerates, stage1, conditioning, text_encoder,
                                               aligner)
        result = apply_edits(plan, checked, context)
        if unique_id is not None:
            remember_plan(unique_id, plan, other, context, workflow_id(extra_pnginfo), checked)
        return {"ui": {UI_KEY: [editor_payload(plan, result, checked, other)]},
                "result": (result, edited_conditioning(result, conditioning, text_encoder))}

    @staticmethod
    def _regenerate_context(context, plan, regenerates, stage1, conditioning, text_encoder, aligner=None):
        from semanticgen_core.sampling import SamplingOptions

        which = f"edit{'s' if len(regenerates) > 1 else ''} {', '.join(map(str, regenerates))}"
        if stage1 is None or (conditioning is None and text_encoder is None):
            raise SemanticGenError(
                f"the edit list regenerates a span ({which}): connect SemanticGen Load Stage 1 to the edit node's "
                "stage1 input, and SemanticGen Text Encode to its conditioning input (plus SemanticGen Load Text "
                "Encoder to text_encoder for a new prompt).")
        ready(stage1, aligner)
        dit = stage1["stage1"]
        family = stage1.preset.name if stage1.preset is not None else stage1.name
        if family != plan.compressor:
            raise SemanticGenError(
                f"regenerate ({which}): this plan lives in the space of compressor {plan.compressor!r} but stage 1 "
                f"({stage1.name}) writes plans for {family!r}: use the stage 1 of the plan's model family.")
        if conditioning is not None:
            conditioning.check(dit.config.text_dim, f"stage 1 ({stage1.name})")
        encoder = text_encoder.ready()["text_encoder"] if text_encoder is not None else None
        defaults = stage1.preset.defaults if stage1.preset is not None else {}
        context.stage1 = dit
        context.text_encoder = ConditioningText(conditioning, encoder)
        context.negative_prompt = conditioning.negative_prompt if conditioning is not None else ""
        context.aligner = usable_aligner(aligner, stage1)
        alignment = float(defaults.get("alignment", 0.0)) if context.aligner is not None else None
        stop = float(defaults.get("alignment_stop", 0.0))
        context.opts = SamplingOptions(steps=int(defaults.get("steps", 20)),
                                       guidance=float(defaults.get("guidance", 4.0)), seed=int(plan.seed or 0),
                                       alignment=alignment, alignment_stop=stop)
        context.progress = comfy.Progress("regenerate", context.opts.steps)
        cond_key = (_tensor_key(conditioning.cond, conditioning.uncond) + conditioning.prompt + "\0" +
                    conditioning.negative_prompt) if conditioning is not None else "-"
        context.cache = _LRU(REGENERATED, REGENERATED_MAX)
        aligner_key = f"{_model_key(aligner)}@{alignment:g}/{stop:g}" if context.aligner is not None else "-"
        context.cache_key = f"{_model_key(stage1)}|{cond_key}|{_model_key(text_encoder)}|{aligner_key}"
        return context


class SemanticGenPlanPreview:
    CATEGORY = "SemanticGen/plan"
    FUNCTION = "preview"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("One image per plan step (the preview decoder's drawing, or the PCA view), upscaled, as a core "
                       "IMAGE batch.",)
    DESCRIPTION = ("Shows a semantic plan as images, one per plan step. decoded: a small network trained for the plan's "
                   "model family draws what the plan says (objects, colours, positions, motion; not texture) as "
                   "low-resolution frames. pca: the tokens projected to RGB by PCA (one basis for the whole plan, so a "
                   "colour means the same thing at every step); used when no preview decoder fits the plan.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "plan": ("SEMANTIC_PLAN", {"tooltip": "The plan to show."}),
            "size": ("INT", {"default": 256, "min": 16, "max": 4096, "step": 16,
                             "tooltip": "Longer side of each image in pixels."}),
        }, "optional": {
            "mode": (["decoded", "pca"], {"default": "decoded",
                                          "tooltip": "decoded: the plan drawn as frames by the preview decoder of its "
                                                     "model family (the embedded default ships one; falls back to pca "
                                                     "with a note when there is none). pca: tokens coloured by PCA, "
                                                     "one square per token."}),
        }}

    def preview(self, plan, size: int = 256, mode: str = "decoded"):
        from semanticgen_core.plan_ops import pca_rgb

        note = None
        if mode == "decoded":
            frames, note = decoded_frames(plan)
            if frames is not None:
                _, fh, fw, _ = frames.shape
                scale = max(1, size // max(fh, fw))
                images = torch.nn.functional.interpolate(
                    frames.permute(0, 3, 1, 2), size=(fh * scale, fw * scale), mode="bilinear",
                    align_corners=False).clamp(0, 1).permute(0, 2, 3, 1).contiguous()
                return {"ui": {"images": _save_temp_pngs(images)}, "result": (images,)}
            log.warning("SemanticGen Plan Preview: %s", note)
        elif mode != "pca":
            raise SemanticGenError(f"unknown preview mode {mode!r}: decoded or pca")
        rgb = pca_rgb(plan.tokens)  # [T, h, w, 3]
        _, h, w = plan.grid
        scale = max(1, size // max(h, w))
        images = rgb.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2).contiguous()
        ui = {"images": _save_temp_pngs(images)}
        if note:
            ui["text"] = [note]
        return {"ui": ui, "result": (images,)}


def _save_temp_pngs(images: torch.Tensor) -> list[dict]:
    """Write ``[B, H, W, 3]`` images as PNGs in the temp folder, for the node's preview in the UI."""
    import cv2

    folder = comfy.temp_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"semanticgen_plan_{uuid.uuid4().hex[:8]}"
    out = []
    for k, image in enumerate(images):
        name = f"{stem}_{k:05d}.png"
        data = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()[..., ::-1]
        if not cv2.imwrite(str(folder / name), data):
            raise SemanticGenError(f"could not write the plan preview {folder / name}")
        out.append({"filename": name, "subfolder": "", "type": "temp"})
    return out
