"""Run ComfyUI workflows headless, through the pack's own node classes.

A workflow saved from the ComfyUI UI (format 0.4: ``nodes``, ``links``, ``widgets_values``) is converted
to the API format the way the frontend does it (``to_api``), checked the way the server checks it
(``validate``), and executed in dependency order from its output nodes (``execute``). ``run`` does all
three and reports timings, model loads and the files written.

The pack is imported as a package under a fixed name (``load_pack``), as ComfyUI imports a custom-node
folder; its ``nodes`` directory is never put on ``sys.path`` (ComfyUI has a top-level ``nodes`` of its own).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from semanticgen_core.errors import Interrupted

ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "comfyui_semanticgen"
WORKFLOWS = ROOT / "workflows"

# Nodes the frontend handles itself and never sends to the server.
NOTE_TYPES = {"Note", "MarkdownNote"}
VIRTUAL_TYPES = NOTE_TYPES | {"Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
MODE_MUTED, MODE_BYPASS = 2, 4


def load_pack(root: Path = ROOT):
    """Import the node pack as the package ``comfyui_semanticgen`` (once per process)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_NAME]
        raise
    return module


class WorkflowError(ValueError):
    """A workflow that cannot run: names the node (id, title, type) and input, and what to do."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        text = self.problems[0] if len(self.problems) == 1 else \
            f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class NodeError(RuntimeError):
    """A node raised while running; the message names the node, the cause is chained."""


# -- node specs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str            # "COMBO" for a list of choices
    options: dict
    choices: list | None
    required: bool

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control(self) -> bool:
        """The frontend adds a control_after_generate widget (an extra widgets_values entry) after it."""
        if self.type == "INT":
            return self.options.get("control_after_generate", self.name in ("seed", "noise_seed")) is not False
        return self.type == "COMBO" and bool(self.options.get("control_after_generate"))


def input_specs(cls) -> list[InputSpec]:
    specs = []
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (cls.INPUT_TYPES().get(section) or {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            if isinstance(kind, (list, tuple)):
                specs.append(InputSpec(name, "COMBO", options, list(kind), required))
            elif kind == "COMBO":
                specs.append(InputSpec(name, "COMBO", options, list(options.get("options", [])), required))
            else:
                specs.append(InputSpec(name, kind, options, None, required))
    return specs


def widget_slots(cls, optional: bool = True) -> list[tuple[str | None, str]]:
    """The entries of ``widgets_values`` in order, as (input name, kind): kind "value" for an input's
    widget, "control" for the control_after_generate combo the frontend adds after a seed (input name
    None), "upload" for the upload button it appends to the required inputs of a file combo.
    ``optional=False``: the required inputs' entries only (those come first)."""
    specs = input_specs(cls)
    slots: list[tuple[str | None, str]] = []
    for required in (True, False) if optional else (True,):
        for spec in specs:
            if spec.required == required and spec.is_widget:
                slots.append((spec.name, "value"))
                if spec.has_control:
                    slots.append((None, "control"))
        if required and any(s.required and s.type == "COMBO" and any(s.options.get(f) for f in UPLOAD_FLAGS)
                            for s in specs):
            slots.append((None, "upload"))
    return slots


def widget_layout(cls) -> list[str | None]:
    """Input names of the entries of ``widgets_values``, None for the frontend's extra widgets."""
    return [name for name, _ in widget_slots(cls)]


def types_match(a: str, b: str) -> bool:
    """ComfyUI's rule: equal, either is "*", or comma-separated unions that intersect."""
    if a == b or "*" in (a, b):
        return True
    return bool(set(a.split(",")) & set(b.split(",")))


# -- UI format -> API format -----------------------------------------------------------------------


def _where(node_id: str, title: str | None, node_type: str) -> str:
    return f"node {node_id} '{title or node_type}' ({node_type})"


def _links(workflow: dict) -> dict[int, tuple[str, int, str, int, str]]:
    out = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):  # workflow schema 1.0
            link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                    link.get("type", "*")]
        lid, src, src_slot, dst, dst_slot, ltype = link[:6]
        out[int(lid)] = (str(src), int(src_slot), str(dst), int(dst_slot), str(ltype))
    return out


def node_title(node: dict, display_names: dict) -> str:
    """A node's title as the UI shows it: its own title, else the display name of its type."""
    return node.get("title") or display_names.get(node.get("type"), node.get("type"))


def to_api(workflow: dict) -> dict[str, dict]:
    """Convert a UI-format workflow to the API format, as the frontend's graphToPrompt does.

    An API-format workflow is returned as is (copied). Raises WorkflowError listing every problem found.
    """
    if "nodes" not in workflow:
        if workflow and all(isinstance(v, dict) and "class_type" in v for v in workflow.values()):
            return copy.deepcopy(workflow)
        raise WorkflowError("not a ComfyUI workflow: expected the UI format (with 'nodes' and 'links', as saved "
                            "by ComfyUI) or the API format (node id -> {'class_type', 'inputs'}).")
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("this workflow contains subgraphs, which the headless runner does not run: unpack them "
                            "in ComfyUI (right-click > Unpack Subgraph) and save again.")
    pack = load_pack()
    classes = pack.NODE_CLASS_MAPPINGS
    display = pack.NODE_DISPLAY_NAME_MAPPINGS
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    links = _links(workflow)
    problems: list[str] = []

    def check_link_ends(lid: int) -> None:
        src, src_slot, dst, dst_slot, ltype = links[lid]
        src_node, dst_node = nodes.get(src), nodes.get(dst)
        if src_node is None or dst_node is None:
            problems.append(f"link {lid} joins missing node {src if src_node is None else dst}: the workflow file is damaged.")
            return
        outs, ins = src_node.get("outputs") or [], dst_node.get("inputs") or []
        if src_node["type"] not in VIRTUAL_TYPES and src_slot < len(outs) and \
                not types_match(str(outs[src_slot].get("type", "*")), ltype):
            problems.append(f"link {lid}: its type {ltype} differs from output {src_slot} of "
                            f"{_where(src, node_title(src_node, display), src_node['type'])} ({outs[src_slot].get('type')}).")
        if dst_node["type"] not in VIRTUAL_TYPES and dst_slot < len(ins) and \
                not types_match(str(ins[dst_slot].get("type", "*")), ltype):
            problems.append(f"link {lid}: its type {ltype} differs from input '{ins[dst_slot].get('name')}' of "
                            f"{_where(dst, node_title(dst_node, display), dst_node['type'])} ({ins[dst_slot].get('type')}).")

    for lid in links:
        check_link_ends(lid)

    def resolve(lid: int, seen: set) -> tuple[str, Any] | None:
        """Follow a link through reroutes and bypassed nodes: ("link", [src, slot]) or ("value", v), or None."""
        if lid in seen or lid not in links:
            return None
        seen.add(lid)
        src, slot, _, _, ltype = links[lid]
        node = nodes.get(src)
        if node is None or node.get("mode") == MODE_MUTED:
            return None
        if node["type"] == "Reroute":
            inp = (node.get("inputs") or [{}])[0]
            return resolve(inp.get("link"), seen) if inp.get("link") is not None else None
        if node["type"] == "PrimitiveNode":
            values = node.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if node.get("mode") == MODE_BYPASS:
            inputs = node.get("inputs") or []
            order = ([inputs[slot]] if slot < len(inputs) else []) + inputs
            for inp in order:
                if inp.get("link") is not None and types_match(str(inp.get("type", "*")), ltype):
                    return resolve(inp["link"], seen)
            return None
        return ("link", [src, slot])

    api: dict[str, dict] = {}
    for node_id, node in nodes.items():
        node_type = node.get("type")
        if node_type in VIRTUAL_TYPES or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        title = node_title(node, display)
        where = _where(node_id, title, node_type)
        cls = classes.get(node_type)
        if cls is None:
            problems.append(f"{where}: unknown node type {node_type!r}. The headless runner runs SemanticGen's own nodes "
                            f"({', '.join(sorted(classes))}); run workflows with other nodes in ComfyUI.")
            continue
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values")
        layout = widget_layout(cls)
        if isinstance(values, dict):
            inputs.update({k: v for k, v in values.items() if k in layout})
        else:
            values = list(values or [])
            # A workflow saved before the pack gave a node its optional widgets lacks their values: they keep
            # their defaults, as the frontend loads it.
            if not len(widget_slots(cls, optional=False)) <= len(values) <= len(layout):
                names = ", ".join(n or "(control/upload)" for n in layout) or "none"
                problems.append(f"{where}: has {len(values)} widget values but {node_type} takes {len(layout)} "
                                f"({names}); the workflow was saved with another version of the pack: re-create the node.")
            else:
                inputs.update({name: value for name, value in zip(layout, values) if name is not None})
        spec_names = {s.name for s in input_specs(cls)}
        for inp in node.get("inputs") or []:
            name = (inp.get("widget") or {}).get("name") or inp.get("name")
            if inp.get("link") is None:
                continue
            if name not in spec_names:
                problems.append(f"{where}: input '{name}' is linked but {node_type} has no such input: re-create the node.")
                continue
            target = resolve(inp["link"], set())
            if target is None:  # linked to a muted node or through a dead end: the widget value (if any) stays
                continue
            inputs[name] = target[1]
        api[node_id] = {"class_type": node_type, "inputs": inputs, "_meta": {"title": title}}
    if problems:
        raise WorkflowError(problems)
    return api


# -- validation ------------------------------------------------------------------------------------


def _check_value(spec: InputSpec, value: Any, has_validator: bool) -> tuple[Any, str | None]:
    """(the value as the node receives it, or a problem)."""
    o = spec.options
    if spec.type == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            return value, f"expects an integer, got {value!r}"
        value = int(value)
    elif spec.type == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return value, f"expects a number, got {value!r}"
        value = float(value)
    elif spec.type == "BOOLEAN":
        if not isinstance(value, bool):
            return value, f"expects true or false, got {value!r}"
    elif spec.type == "STRING":
        if not isinstance(value, str):
            return value, f"expects text, got {value!r}"
    elif spec.type == "COMBO" and not has_validator and value not in spec.choices:
        shown = ", ".join(map(repr, spec.choices[:12])) + (" ..." if len(spec.choices) > 12 else "")
        return value, f"{value!r} is not one of the choices ({shown})"
    if spec.type in ("INT", "FLOAT"):
        if "min" in o and value < o["min"]:
            return value, f"{value} is below the minimum {o['min']}"
        if "max" in o and value > o["max"]:
            return value, f"{value} is above the maximum {o['max']}"
    return value, None


def _output_type(api: dict, link: list) -> str | None:
    src = api.get(str(link[0]))
    if src is None:
        return None
    cls = load_pack().NODE_CLASS_MAPPINGS.get(src["class_type"])
    types = getattr(cls, "RETURN_TYPES", ())
    return types[link[1]] if 0 <= link[1] < len(types) else None


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and isinstance(value[1], int)


def validate(api: dict[str, dict]) -> dict[str, dict]:
    """Check an API-format workflow as the server would: known nodes, required inputs present, links to
    existing outputs of the right type, widget values in range, and each node's VALIDATE_INPUTS.
    Returns the inputs with values coerced (ints, floats); raises WorkflowError listing every problem."""
    classes = load_pack().NODE_CLASS_MAPPINGS
    problems: list[str] = []
    checked: dict[str, dict] = {}
    for node_id, node in api.items():
        node_type = node.get("class_type")
        where = _where(node_id, (node.get("_meta") or {}).get("title"), node_type)
        cls = classes.get(node_type)
        if cls is None:
            problems.append(f"{where}: unknown node type {node_type!r}; the headless runner runs SemanticGen's own nodes.")
            continue
        validator = getattr(cls, "VALIDATE_INPUTS", None)
        validated = set()
        if validator is not None:
            import inspect

            validated = set(inspect.signature(validator).parameters)
        specs = {s.name: s for s in input_specs(cls)}
        # Like the server, ignore inputs the node does not declare (the frontend sends some of its own,
        # e.g. "video-preview" for a video upload widget).
        inputs = {k: v for k, v in (node.get("inputs") or {}).items() if k in specs}
        constants = {}
        for name, spec in specs.items():
            if name not in inputs:
                if spec.required:
                    what = "link it" if not spec.is_widget else "give it a value"
                    problems.append(f"{where}: required input '{name}' ({spec.type}) is missing: {what}.")
                continue
            value = inputs[name]
            if is_link(value):
                out_type = _output_type(api, value)
                if str(value[0]) not in api:
                    problems.append(f"{where}: input '{name}' is linked to node {value[0]}, which is not in the workflow "
                                    "(deleted, muted or bypassed?).")
                elif out_type is None:
                    problems.append(f"{where}: input '{name}' is linked to output {value[1]} of node {value[0]}, which "
                                    "has no such output.")
                elif not types_match(out_type, spec.type):
                    problems.append(f"{where}: input '{name}' expects {spec.type} but is linked to a {out_type} output "
                                    f"(node {value[0]}, output {value[1]}).")
                continue
            if not spec.is_widget:
                problems.append(f"{where}: input '{name}' ({spec.type}) must be linked to another node's output.")
                continue
            value, problem = _check_value(spec, value, name in validated)
            if problem:
                problems.append(f"{where}: input '{name}': {problem}.")
            inputs[name] = constants[name] = value
        if validator is not None:
            args = {k: v for k, v in constants.items() if k in validated}
            result = validator(**args)
            if result is not True:
                problems.append(f"{where}: {result}")
        checked[node_id] = inputs
    if problems:
        raise WorkflowError(problems)
    return checked


def find_node(api: dict[str, dict], ref: str) -> str:
    """A node id from an id or a title (the UI title, else the display name)."""
    if ref in api:
        return ref
    matches = [i for i, n in api.items() if (n.get("_meta") or {}).get("title") == ref]
    if not matches:
        matches = [i for i, n in api.items() if n.get("class_type") == ref]
    if len(matches) == 1:
        return matches[0]
    listing = "; ".join(f"{i} '{(n.get('_meta') or {}).get('title', n['class_type'])}'" for i, n in api.items())
    if matches:
        raise WorkflowError(f"{ref!r} names {len(matches)} nodes ({', '.join(matches)}): use the node id. Nodes: {listing}")
    raise WorkflowError(f"no node with id or title {ref!r}. Nodes: {listing}")


def parse_value(spec: InputSpec, text: str) -> Any:
    if spec.type == "INT":
        return int(text)
    if spec.type == "FLOAT":
        return float(text)
    if spec.type == "BOOLEAN":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    return text


def apply_sets(api: dict[str, dict], sets: list[str] | dict) -> dict[str, dict]:
    """Apply ``NODE.INPUT=VALUE`` overrides (NODE: id or title; VALUE parsed by the input's type)."""
    api = copy.deepcopy(api)
    classes = load_pack().NODE_CLASS_MAPPINGS
    items = sets.items() if isinstance(sets, dict) else [_split_set(s) for s in sets]
    for target, value in items:
        ref, _, name = target.rpartition(".")
        if not ref or not name:
            raise WorkflowError(f"--set {target}={value}: expected NODE.INPUT=VALUE (NODE is a node id or title).")
        node_id = find_node(api, ref)
        node = api[node_id]
        specs = {s.name: s for s in input_specs(classes[node["class_type"]])}
        where = _where(node_id, (node.get("_meta") or {}).get("title"), node["class_type"])
        if name not in specs:
            raise WorkflowError(f"--set: {where} has no input '{name}' (it has: {', '.join(specs)}).")
        if isinstance(value, str):
            try:
                value = parse_value(specs[name], value)
            except ValueError as e:
                raise WorkflowError(f"--set: {where}, input '{name}' ({specs[name].type}): {e}") from None
        node["inputs"][name] = value
    return api


def _split_set(text: str) -> tuple[str, str]:
    target, sep, value = text.partition("=")
    if not sep:
        raise WorkflowError(f"--set {text}: expected NODE.INPUT=VALUE.")
    return target.strip(), value


# -- execution -------------------------------------------------------------------------------------


@dataclass
class NodeRun:
    node_id: str
    title: str
    class_type: str
    seconds: float


@dataclass
class RunResult:
    ui: dict[str, dict] = field(default_factory=dict)        # node id -> its "ui" output
    runs: list[NodeRun] = field(default_factory=list)          # in execution order
    files: list[Path] = field(default_factory=list)            # files the output nodes wrote
    outputs: dict[str, tuple] = field(default_factory=dict)    # node id -> what it returned (plans, latents...)
    loads: int = 0                                             # models read from disk during this run
    load_seconds: float = 0.0
    seconds: float = 0.0


def execution_order(api: dict[str, dict], checked: dict[str, dict]) -> list[str]:
    """Nodes that output nodes need, dependencies first (ids in numeric order where free)."""
    classes = load_pack().NODE_CLASS_MAPPINGS
    outputs = [i for i, n in api.items() if getattr(classes[n["class_type"]], "OUTPUT_NODE", False)]
    if not outputs:
        raise WorkflowError("nothing to run: the workflow has no output node (such as SemanticGen Save Video or "
                            "SemanticGen Save Plan).")
    order, state = [], {}

    def key(i):
        return (0, int(i)) if str(i).isdigit() else (1, str(i))

    def visit(node_id: str, path: list[str]) -> None:
        if state.get(node_id) == "done":
            return
        if state.get(node_id) == "active":
            raise WorkflowError(f"the workflow has a cycle: {' -> '.join(path + [node_id])}.")
        state[node_id] = "active"
        for value in sorted((v for v in checked[node_id].values() if is_link(v)), key=lambda v: key(v[0])):
            visit(str(value[0]), path + [node_id])
        state[node_id] = "done"
        order.append(node_id)

    for node_id in sorted(outputs, key=key):
        visit(node_id, [])
    return order


def execute(api: dict[str, dict], on_node: Callable[[NodeRun], None] | None = None) -> RunResult:
    """Validate and run an API-format workflow; returns what the output nodes reported. The nodes run under
    ``torch.inference_mode``, as ComfyUI runs them: no autograd, and tensors made there (models loaded by a
    node among them) are inference tensors, which no graph may save for backward."""
    import torch

    with torch.inference_mode():
        return _execute(api, on_node)


def _execute(api: dict[str, dict], on_node: Callable[[NodeRun], None] | None) -> RunResult:
    pack = load_pack()
    classes, comfy, cache = pack.NODE_CLASS_MAPPINGS, pack.nodes.comfy, pack.nodes.model_cache.CACHE
    checked = validate(api)
    order = execution_order(api, checked)
    result = RunResult()
    loads0, load_s0, start = cache.loads, cache.load_seconds, time.perf_counter()
    comfy.clear_interrupt()
    outputs: dict[str, tuple] = {}
    for node_id in order:
        node = api[node_id]
        cls = classes[node["class_type"]]
        title = (node.get("_meta") or {}).get("title") or node["class_type"]
        kwargs = {name: outputs[str(v[0])][v[1]] if is_link(v) else v for name, v in checked[node_id].items()}
        t0 = time.perf_counter()
        try:
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
        except Interrupted:
            raise
        except Exception as e:  # noqa: BLE001  (re-raised with the node named)
            raise NodeError(f"{_where(node_id, title, node['class_type'])} failed: {e}") from e
        run = NodeRun(node_id, title, node["class_type"], time.perf_counter() - t0)
        result.runs.append(run)
        if on_node is not None:
            on_node(run)
        if isinstance(out, dict):
            if out.get("ui"):
                result.ui[node_id] = out["ui"]
            out = out.get("result", ())
        outputs[node_id] = result.outputs[node_id] = tuple(out or ())
        for key in ("images", "plans"):
            for item in (result.ui.get(node_id) or {}).get(key, []):
                if item.get("type") == "output":
                    result.files.append(comfy.output_dir() / item.get("subfolder", "") / item["filename"])
    result.seconds = time.perf_counter() - start
    result.loads, result.load_seconds = cache.loads - loads0, cache.load_seconds - load_s0
    return result


def load_workflow(source: str | Path | dict) -> dict:
    if isinstance(source, dict):
        return source
    path = Path(source)
    if not path.is_file() and (WORKFLOWS / path).is_file():
        path = WORKFLOWS / path
    if not path.is_file() and (WORKFLOWS / f"{path}.json").is_file():
        path = WORKFLOWS / f"{path}.json"
    if not path.is_file():
        shipped = ", ".join(p.stem for p in sorted(WORKFLOWS.glob("*.json")))
        raise WorkflowError(f"workflow file {source} not found (shipped workflows: {shipped}).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WorkflowError(f"{path} is not valid JSON ({e}).") from None


def run(source: str | Path | dict, sets: list[str] | dict | None = None, models: str | Path | None = None,
        input: str | Path | None = None, output: str | Path | None = None,
        on_node: Callable[[NodeRun], None] | None = None) -> RunResult:
    """Load, convert, override, validate and execute a workflow. Folders apply outside ComfyUI."""
    pack = load_pack()
    pack.nodes.comfy.configure(models=models, input=input, output=output)
    api = apply_sets(to_api(load_workflow(source)), sets or [])
    return execute(api, on_node=on_node)
