// The timeline's link to the server's preview route: no ComfyUI, no DOM (the host passes `post`).
//
// POST /semanticgen/edit_plan/preview {workflow_id, node_id, edits} applies the edit list to the plan the
// node last ran on in that workflow (node ids repeat across workflows) and answers the executed message's
// shape plus `pending` (regenerates not sampled yet), without queueing the workflow. The timeline asks after
// each edit (debounced, latest wins), when a workflow is opened, and when ComfyUI reports the node cached (no
// `executed` message comes then; `cached: true` lets the server find the run whose output was reused). An
// answer without a plan (`input: null`: the node has not run in this workflow since the server started)
// leaves the timeline as it is; a 400 names the bad edit.

import { parseEdits } from "./core.js";

export const PREVIEW_ROUTE = "/semanticgen/edit_plan/preview";

export class PreviewSync {
  /**
   * @param {PlanEditor} editor
   * @param {object} options
   *   nodeId: () => string, the id the Edit Plan node runs under (asked at each request: it is set when a
   *     workflow loads)
   *   workflowId: () => string, the id of the workflow it is in ("" for none)
   *   post: async (body) => ({status, body}), POSTs the JSON body to PREVIEW_ROUTE
   *   delay: ms to wait after an edit before asking (further edits restart the wait)
   */
  constructor(editor, { nodeId, workflowId = () => "", post, delay = 150 }) {
    this.editor = editor;
    this.nodeId = nodeId;
    this.workflowId = workflowId;
    this.post = post;
    this.delay = delay;
    this.seq = 0; // the latest request; answers to earlier ones are dropped
    this.timer = null;
    this.requests = 0; // sent so far
    this.status = null; // the HTTP status of the latest answer used
    this.unsubscribe = editor.subscribe((reason) => {
      // an edit, or a run that used other edits than the timeline's (edited while it ran)
      if (reason === "edits" || reason === "reset" || (reason === "payload" && !editor.executedCurrent)) this.schedule();
    });
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), this.delay);
  }

  /** Ask now. asRun: the node was cached in a run, so its output is this answer (unless a regenerate is pending). */
  async refresh({ asRun = false } = {}) {
    clearTimeout(this.timer);
    const editor = this.editor;
    if (editor.hasPlan && editor.simulation.error) return; // the status shows why; the server would refuse it too
    const edits = editor.edits;
    const mine = ++this.seq;
    this.requests++;
    let answer;
    try {
      answer = await this.post({ workflow_id: String(this.workflowId() ?? ""), node_id: String(this.nodeId()), edits,
                                 ...(asRun && { cached: true }) });
    } catch (e) {
      console.debug("SemanticGen: the plan preview request failed", e);
      return;
    }
    if (mine !== this.seq || !answer) return; // a newer request is on its way
    const { status, body } = answer;
    this.status = status;
    if (status === 200 && body && body.input) {
      if (asRun && !(body.pending || []).length) editor.setPayload({ ...body, edits: parseEdits(edits) });
      else editor.setPreview(body, edits);
    } else if (status === 400 && body && body.error) {
      editor.setServerError(edits, body.error);
    } // `input: null`: no plan on the server for this node yet; anything else: a server without the route
  }

  /** ComfyUI's execution_cached event lists the node ids it did not execute. */
  cached(nodeIds) {
    if ((nodeIds || []).map(String).includes(String(this.nodeId()))) return this.refresh({ asRun: true });
    return null;
  }

  destroy() {
    clearTimeout(this.timer);
    this.seq++;
    this.unsubscribe();
  }
}
