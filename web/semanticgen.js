// ComfyUI glue for the plan timeline editor (the editor itself is in plan_editor/, free of ComfyUI).
//
// On every "SemanticGen Edit Plan" node: a DOM widget with the timeline under the node's `edits` text
// widget. Every change in the timeline is written to `edits` (what the server runs and what a saved
// workflow keeps); text typed into `edits` is read back into the timeline; the node's execution message
// (`semanticgen_plan`: thumbnails of its input and output plans) updates the strip. Between runs the
// server's preview route (plan_editor/sync.js) answers for the edits as they change, for a workflow being
// opened, and for a run in which ComfyUI took the node from its cache (no execution message comes then).

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { PlanEditor, parseEdits } from "./plan_editor/core.js";
import { PREVIEW_ROUTE, PreviewSync } from "./plan_editor/sync.js";
import { mountPlanEditor } from "./plan_editor/view.js";

const NODE_TYPE = "SemanticGenEditPlan";
const WIDGET_NAME = "plan_timeline";
const TIMELINE_HEIGHT = 188; // toolbar, strip, status and padding (166 px) + the frontend's DOM-widget margins

// The workflow's root graph (the one that is saved and queued; `app.graph` in frontends without `rootGraph`).
const rootGraph = () => app.rootGraph ?? app.graph;

// The id ComfyUI runs a node under, as `executed` / `execution_cached` name it: its id in the root graph, or
// the path of ids through subgraph nodes ("12:9"). A subgraph used twice runs its nodes twice; the
// timeline (one per node) follows the first use.
function executionId(node) {
  const root = rootGraph();
  if (!root || node.graph === root) return String(node.id);
  const find = (graph, path) => {
    for (const outer of graph?._nodes ?? []) {
      if (!outer.subgraph) continue;
      const here = [...path, outer.id];
      if (outer.subgraph === node.graph) return [...here, node.id].join(":");
      const inner = find(outer.subgraph, here);
      if (inner) return inner;
    }
    return null;
  };
  return find(root, []) ?? String(node.id);
}

function nodeByExecutionId(id) {
  const path = String(id).split(":");
  let graph = rootGraph();
  for (const outer of path.slice(0, -1)) graph = graph?.getNodeById?.(outer)?.subgraph;
  return graph?.getNodeById?.(path.at(-1)) ?? null;
}

function editsOf(widget) {
  try {
    return parseEdits(widget.value);
  } catch {
    return null; // being typed: keep the timeline as it is
  }
}

function attachTimeline(node) {
  const edits = node.widgets?.find((w) => w.name === "edits");
  if (!edits || node.semanticgen) return;
  const editor = new PlanEditor({ edits: editsOf(edits) ?? [] });
  const root = document.createElement("div");
  const view = mountPlanEditor(root, editor);
  const sync = new PreviewSync(editor, {
    nodeId: () => executionId(node),
    // the workflow's id, which the frontend also sends with each prompt (extra_pnginfo): a saved workflow keeps
    // it, so a reload or the same file opened again finds the plan its last run left on the server
    workflowId: () => rootGraph()?.id ?? "",
    post: async (body) => {
      const response = await api.fetchApi(PREVIEW_ROUTE, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      return { status: response.status, body: await response.json().catch(() => null) };
    },
  });

  let writing = false; // the timeline is writing the widget
  let reading = false; // the widget (typed text) is updating the timeline: leave the text as typed
  editor.subscribe((reason) => {
    if (reason !== "edits" || reading) return;
    const text = editor.text;
    if (edits.value === text) return;
    writing = true;
    try {
      edits.value = text; // the setter also calls the widget's callback
    } finally {
      writing = false;
    }
    node.setDirtyCanvas?.(true, true);
    app.graph?.change?.();
  });

  const syncFromWidget = (undoable) => {
    const parsed = editsOf(edits);
    if (!parsed) return;
    reading = true;
    try {
      if (undoable) editor.setEdits(parsed);
      else editor.reset(parsed);
    } finally {
      reading = false;
    }
  };
  const callback = edits.callback;
  edits.callback = function (...args) {
    const result = callback?.apply(this, args);
    if (!writing) syncFromWidget(true);
    return result;
  };

  const widget = node.addDOMWidget(WIDGET_NAME, "semanticgen_plan_timeline", root, {
    serialize: false, // not a value: widgets_values and the prompt keep only `edits`
    hideOnZoom: false,
    getMinHeight: () => TIMELINE_HEIGHT + view.otherHeight(),
    getMaxHeight: () => TIMELINE_HEIGHT + view.otherHeight(),
    getValue: () => undefined,
    setValue: () => {},
  });
  widget.serialize = false;
  node.semanticgen = { editor, view, widget, sync, syncFromWidget };

  // the other plan's strip comes and goes with the node's `other` input: grow the node to show it
  let otherHeight = 0;
  editor.subscribe(() => {
    if (view.otherHeight() === otherHeight) return;
    otherHeight = view.otherHeight();
    node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
    node.setDirtyCanvas?.(true, true);
  });

  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    sync.destroy();
    view.destroy();
    return onRemoved?.apply(this, args);
  };
  if (node.size[0] < 560) node.setSize([560, Math.max(node.size[1], 420)]);
}

app.registerExtension({
  name: "SemanticGen.PlanTimeline",

  setup() {
    // a cached node sends no `executed` message: ask the server for the plan its output holds
    api.addEventListener("execution_cached", ({ detail }) => {
      for (const id of detail?.nodes || []) nodeByExecutionId(id)?.semanticgen?.sync.cached([id]);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      attachTimeline(this);
      return result;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (...args) {
      const result = onConfigure?.apply(this, args);
      this.semanticgen?.syncFromWidget(false); // a loaded workflow: its edits, with a fresh undo history
      // the server may know its plan (a run in an earlier page or tab); asked once the whole workflow is
      // configured (a node in a subgraph is configured before the subgraph node that gives its execution id)
      this.semanticgen?.sync.schedule();
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output, ...rest) {
      const result = onExecuted?.apply(this, [output, ...rest]);
      const payload = output?.semanticgen_plan?.[0];
      if (payload && this.semanticgen) this.semanticgen.editor.setPayload(payload);
      return result;
    };
  },
});
