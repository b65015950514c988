// The plan timeline editor's logic, as a plain ES module: no ComfyUI, no DOM.
//
// State: the edit list (exactly the JSON list that semanticgen_core.plan_ops.apply_edits reads), the
// selection (a range of plan steps of the plan as the edits leave it, and one of the other plan's, to
// splice in), undo/redo stacks, and the server's answers: the node's last run and the preview route's,
// each exact for the edit list it was made with. The editor also simulates the edits on a symbolic plan
// (which step of the input or other plan each step shows, its frames and prompt) with the same
// arithmetic as plan_ops.py, so the timeline follows every change at once (until the server's answer
// for it arrives) and the times it writes are the ones Python maps back to the same steps.

export const OPS = {
  cut: { required: ["start_s", "end_s"], optional: [] },
  splice: { required: ["source", "at_s"], optional: ["start_s", "end_s"] },
  concatenate: { required: ["source"], optional: [] },
  move: { required: ["start_s", "end_s", "to_s"], optional: [] },
  reverse: { required: [], optional: ["start_s", "end_s"] },
  repeat: { required: [], optional: ["start_s", "end_s", "times"] },
  interpolate: { required: [], optional: ["start_s", "end_s", "from_s", "to_s", "mode"] },
  blend: { required: ["source", "weight"], optional: ["start_s", "end_s", "mode"] },
  regenerate: {
    required: [],
    optional: ["start_s", "end_s", "prompt", "seed", "steps", "guidance", "shift", "sampler"],
  },
};

const TOL = 1e-6; // plan steps, as plan_ops._TOL
const EPS_S = 1e-6; // seconds, as plan._EPS_S

export class EditError extends Error {}

// -- the symbolic plan -------------------------------------------------------------------------------
// { fps, video_fps, num_frames, segments: [{start_s, end_s, prompt}], steps: [ref] } where a ref says
// what a step shows: {src: "input"|"other", index} (a step of that plan), {mix: [refA, refB], w, mode}
// (interpolate, blend), or {regen: ref, prompt, seed, edit} (re-sampled by stage 1 when the node runs;
// `edit` is the index of the regenerate in the edit list, which the preview route's `pending` names).

export function basePlan(meta, src = "input") {
  return {
    fps: meta.fps,
    video_fps: meta.video_fps,
    num_frames: meta.num_frames,
    segments: (meta.segments || []).map((s) => ({ start_s: s.start_s, end_s: s.end_s, prompt: s.prompt })),
    steps: Array.from({ length: meta.steps }, (_, index) => ({ src, index })),
    meta,
  };
}

export const durationOf = (plan) => plan.num_frames / plan.video_fps;

const fmt = (x) => `${+x.toFixed(6)}`;
const covers = (plan) => `0..${fmt(durationOf(plan))} s (${plan.steps.length} steps of ${fmt(1 / plan.fps)} s)`;

function seconds(value, name, op) {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new EditError(`${op}: ${name} must be a time in seconds (a number), got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** Steps [i0, i1) covered by start_s..end_s (plan_ops.step_range). */
export function stepRange(plan, start_s = null, end_s = null, op = "edit") {
  const steps = plan.steps.length;
  const duration = durationOf(plan);
  const start = start_s == null ? 0 : seconds(start_s, "start_s", op);
  const end = end_s == null ? duration : seconds(end_s, "end_s", op);
  const slack = TOL / plan.fps;
  if (start < -slack || end > duration + slack) {
    throw new EditError(`${op}: the range ${fmt(start)}..${fmt(end)} s is outside the plan, which covers ${covers(plan)}.`);
  }
  if (!(start < end)) throw new EditError(`${op}: the range ${fmt(start)}..${fmt(end)} s is empty.`);
  const i0 = Math.min(Math.max(0, Math.floor(start * plan.fps + TOL)), steps - 1);
  const i1 = end * plan.fps >= duration * plan.fps - TOL ? steps : Math.min(steps, Math.ceil(end * plan.fps - TOL));
  return [i0, Math.max(i1, i0 + 1)];
}

/** The step boundary nearest to a time (plan_ops.boundary_at). */
export function boundaryAt(plan, t, name = "at_s", op = "edit") {
  const steps = plan.steps.length;
  const duration = durationOf(plan);
  seconds(t, name, op);
  if (t < -TOL / plan.fps || t > duration + TOL / plan.fps) {
    throw new EditError(`${op}: ${name}=${fmt(t)} s is outside the plan, which covers ${covers(plan)}.`);
  }
  if (t * plan.fps >= duration * plan.fps - TOL) return steps;
  return Math.min(steps, Math.max(0, Math.floor(t * plan.fps + 0.5)));
}

/** Video time {start_s, end_s} of steps [i0, i1) (plan_ops.step_times): what the editor writes. */
export function stepTimes(plan, i0, i1) {
  return { start_s: i0 / plan.fps, end_s: i1 >= plan.steps.length ? durationOf(plan) : i1 / plan.fps };
}

/** The time the editor writes for a step boundary (0..T). */
export const boundaryTime = (plan, b) => (b >= plan.steps.length ? durationOf(plan) : b / plan.fps);

function indexAt(plan, t, name, op) {
  seconds(t, name, op);
  if (!(t >= 0 && t <= durationOf(plan))) {
    throw new EditError(`Time ${fmt(t)} s is outside the plan, which covers 0..${fmt(durationOf(plan))} s.`);
  }
  return Math.min(Math.trunc(t * plan.fps), plan.steps.length - 1);
}

function frameAt(plan, i) {
  if (i >= plan.steps.length) return plan.num_frames;
  return Math.min(plan.num_frames, Math.floor((i * plan.video_fps) / plan.fps + 0.5));
}

export function stepFrames(plan) {
  return plan.steps.map((_, i) => frameAt(plan, i + 1) - frameAt(plan, i));
}

export function segmentAt(plan, t) {
  const duration = durationOf(plan);
  for (const seg of plan.segments) {
    if ((seg.start_s <= t && t < seg.end_s) || (t === seg.end_s && seg.end_s >= duration - EPS_S)) return seg;
  }
  return null;
}

export function stepPrompts(plan) {
  return plan.steps.map((_, i) => {
    const seg = segmentAt(plan, i / plan.fps);
    return seg ? seg.prompt : null;
  });
}

function framesValid(n, steps, videoFps, fps) {
  const expected = (n / videoFps) * fps;
  return steps - 1 < expected && expected <= steps + 1;
}

export function fitFrames(n, steps, videoFps, fps) {
  if (n >= 1 && framesValid(n, steps, videoFps, fps)) return n;
  const lo = Math.max(1, Math.floor(((steps - 1) * videoFps) / fps) - 1);
  const hi = Math.floor(((steps + 1) * videoFps) / fps) + 2;
  let best = null;
  for (let c = lo; c <= hi; c++) {
    if (framesValid(c, steps, videoFps, fps) && (best === null || Math.abs(c - n) < Math.abs(best - n))) best = c;
  }
  if (best === null) throw new EditError(`no frame count fits ${steps} steps`);
  return best;
}

export function segmentsFromPrompts(prompts, fps, duration) {
  const segments = [];
  let k = 0;
  while (k < prompts.length) {
    let j = k;
    while (j + 1 < prompts.length && prompts[j + 1] === prompts[k]) j++;
    if (prompts[k] !== null) {
      segments.push({ start_s: k / fps, end_s: j + 1 >= prompts.length ? duration : (j + 1) / fps, prompt: prompts[k] });
    }
    k = j + 1;
  }
  return segments;
}

const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

function rebuild(plan, owners, { refs = null, prompts = null } = {}) {
  const info = new Map();
  const get = (p) => {
    if (!info.has(p)) info.set(p, [stepFrames(p), stepPrompts(p)]);
    return info.get(p);
  };
  const steps = owners.length;
  const total = owners.reduce((sum, [p, i]) => sum + get(p)[0][i], 0);
  const frames = fitFrames(total, steps, plan.video_fps, plan.fps);
  const newPrompts = prompts ?? owners.map(([p, i]) => get(p)[1][i]);
  let segments;
  if (steps === plan.steps.length && frames === plan.num_frames && sameList(newPrompts, get(plan)[1])) {
    segments = plan.segments.map((s) => ({ ...s }));
  } else {
    segments = segmentsFromPrompts(newPrompts, plan.fps, frames / plan.video_fps);
  }
  return {
    fps: plan.fps,
    video_fps: plan.video_fps,
    num_frames: frames,
    segments,
    steps: refs ?? owners.map(([p, i]) => p.steps[i]),
    meta: plan.meta,
  };
}

const range = (a, b) => Array.from({ length: Math.max(0, b - a) }, (_, k) => a + k);
const ownersOf = (plan, indices) => indices.map((i) => [plan, i]);

function checkCompatible(plan, other, op) {
  const a = plan.meta || {};
  const b = other.meta || {};
  const grid = (m) => `${m.grid?.[1]}x${m.grid?.[2]} tokens of ${m.channels} channels`;
  if (a.grid && b.grid && (a.grid[1] !== b.grid[1] || a.grid[2] !== b.grid[2] || a.channels !== b.channels)) {
    throw new EditError(`${op}: the plans have different grids: this one has ${grid(a)}, the other ${grid(b)}.`);
  }
  if (a.compressor !== undefined && a.compressor !== b.compressor) {
    throw new EditError(`${op}: the plans come from different compressors (${a.compressor} and ${b.compressor}).`);
  }
  for (const name of ["fps", "video_fps"]) {
    if (plan[name] !== other[name]) throw new EditError(`${op}: the plans have different ${name}.`);
  }
}

function interpolationWeights(plan, i0, i1, given) {
  const pa = i0 === 0 && !given[0] ? i0 : i0 - 1;
  const pb = i1 === plan.steps.length && !given[1] ? i1 - 1 : i1;
  return range(i0, i1).map((k) => (pb === pa ? 0 : (k - pa) / (pb - pa)));
}

// -- operations on the symbolic plan (mirrors of plan_ops) --------------------------------------------

export function applyEdit(plan, edit, sources = {}, index = null) {
  const op = edit.op;
  const T = plan.steps.length;
  const source = (name) => {
    if (name === "self") return plan;
    if (sources[name]) return sources[name];
    throw new EditError(`source '${name}' is not connected (available: 'self'${Object.keys(sources).map((k) => `, '${k}'`).join("")}).`);
  };
  if (op === "cut") {
    const [i0, i1] = stepRange(plan, edit.start_s, edit.end_s, "cut");
    if (i1 - i0 >= T) throw new EditError(`cut: removing ${fmt(edit.start_s)}..${fmt(edit.end_s)} s would leave an empty plan.`);
    return rebuild(plan, ownersOf(plan, range(0, T).filter((i) => i < i0 || i >= i1)));
  }
  if (op === "splice") {
    const src = source(edit.source);
    checkCompatible(plan, src, "splice");
    const at = boundaryAt(plan, edit.at_s, "at_s", "splice");
    const [j0, j1] = stepRange(src, edit.start_s, edit.end_s, "splice (in the source plan)");
    return rebuild(plan, [...ownersOf(plan, range(0, at)), ...ownersOf(src, range(j0, j1)), ...ownersOf(plan, range(at, T))]);
  }
  if (op === "concatenate") {
    const src = source(edit.source);
    checkCompatible(plan, src, "concatenate");
    return rebuild(plan, [...ownersOf(plan, range(0, T)), ...ownersOf(src, range(0, src.steps.length))]);
  }
  if (op === "move") {
    const [i0, i1] = stepRange(plan, edit.start_s, edit.end_s, "move");
    const to = boundaryAt(plan, edit.to_s, "to_s", "move");
    if (i0 < to && to < i1) throw new EditError(`move: to_s=${fmt(edit.to_s)} s lies inside the moved range.`);
    const rest = range(0, T).filter((i) => i < i0 || i >= i1);
    const where = to <= i0 ? to : to - (i1 - i0);
    return rebuild(plan, ownersOf(plan, [...rest.slice(0, where), ...range(i0, i1), ...rest.slice(where)]));
  }
  if (op === "reverse") {
    const [i0, i1] = stepRange(plan, edit.start_s, edit.end_s, "reverse");
    return rebuild(plan, ownersOf(plan, [...range(0, i0), ...range(i0, i1).reverse(), ...range(i1, T)]));
  }
  if (op === "repeat") {
    const times = edit.times ?? 2;
    if (!Number.isInteger(times) || times < 1 || times > 1000) throw new EditError(`repeat: times must be a whole number from 1 to 1000.`);
    const [i0, i1] = stepRange(plan, edit.start_s, edit.end_s, "repeat");
    const copies = [];
    for (let k = 1; k < times; k++) copies.push(...range(i0, i1));
    return rebuild(plan, ownersOf(plan, [...range(0, i1), ...copies, ...range(i1, T)]));
  }
  if (op === "interpolate") {
    const mode = edit.mode ?? "linear";
    const [i0, i1] = stepRange(plan, edit.start_s, edit.end_s, "interpolate");
    const a = edit.from_s != null ? indexAt(plan, edit.from_s, "from_s", "interpolate") : Math.max(i0 - 1, 0);
    const b = edit.to_s != null ? indexAt(plan, edit.to_s, "to_s", "interpolate") : Math.min(i1, T - 1);
    const weights = interpolationWeights(plan, i0, i1, [edit.from_s != null, edit.to_s != null]);
    const refs = plan.steps.slice();
    const [A, B] = [plan.steps[a], plan.steps[b]];
    weights.forEach((w, k) => (refs[i0 + k] = { mix: [A, B], w, mode }));
    return rebuild(plan, ownersOf(plan, range(0, T)), { refs });
  }
  if (op === "blend") {
    const src = source(edit.source);
    checkCompatible(plan, src, "blend");
    const [i0, i1] = stepRange(plan, edit.start_s, edit.end_s, "blend");
    if (src.steps.length < i1) throw new EditError(`blend: the other plan has ${src.steps.length} steps but the range needs steps up to ${i1}.`);
    const refs = plan.steps.slice();
    for (const k of range(i0, i1)) refs[k] = { mix: [plan.steps[k], src.steps[k]], w: edit.weight, mode: edit.mode ?? "linear" };
    return rebuild(plan, ownersOf(plan, range(0, T)), { refs });
  }
  if (op === "regenerate") {
    const [i0, i1] = stepRange(plan, edit.start_s, edit.end_s, "regenerate");
    const prompts = stepPrompts(plan);
    const refs = plan.steps.slice();
    for (const k of range(i0, i1)) {
      if (edit.prompt != null) prompts[k] = edit.prompt;
      refs[k] = { regen: plan.steps[k], prompt: prompts[k], seed: edit.seed ?? null, edit: index };
    }
    return rebuild(plan, ownersOf(plan, range(0, T)), { refs, prompts });
  }
  throw new EditError(`unknown operation ${JSON.stringify(op)}; known operations: ${Object.keys(OPS).sort().join(", ")}.`);
}

/** Check an edit list (text or array) as plan_ops.parse_edits does; returns a copy. */
export function parseEdits(edits) {
  if (edits == null) return [];
  if (typeof edits === "string") {
    if (!edits.trim()) return [];
    try {
      edits = JSON.parse(edits);
    } catch (e) {
      throw new EditError(`the edit list is not valid JSON (${e.message}).`);
    }
  }
  if (!Array.isArray(edits)) throw new EditError("the edit list must be a JSON list of edits.");
  return edits.map((edit, k) => {
    const where = `edit ${k + 1} of ${edits.length}`;
    if (edit === null || typeof edit !== "object" || Array.isArray(edit)) throw new EditError(`${where}: each edit must be an object such as {"op": "reverse"}.`);
    const spec = OPS[edit.op];
    if (!spec) throw new EditError(`${where}: unknown operation ${JSON.stringify(edit.op)}. Known operations: ${Object.keys(OPS).sort().join(", ")}.`);
    const args = Object.keys(edit).filter((key) => key !== "op");
    const unknown = args.filter((key) => !spec.required.includes(key) && !spec.optional.includes(key));
    if (unknown.length) throw new EditError(`${where} (${edit.op}): unknown argument ${unknown.join(", ")}.`);
    const missing = spec.required.filter((key) => !(key in edit));
    if (missing.length) throw new EditError(`${where} (${edit.op}): missing argument ${missing.join(", ")}.`);
    return JSON.parse(JSON.stringify(edit));
  });
}

/** The plan as the edits leave it: {plan, error, failedAt} (failedAt: index of the edit that failed). */
export function simulate(inputMeta, edits, otherMeta = null) {
  let plan = basePlan(inputMeta, "input");
  const sources = otherMeta ? { other: basePlan(otherMeta, "other") } : {};
  for (let k = 0; k < edits.length; k++) {
    try {
      plan = applyEdit(plan, edits[k], sources, k);
    } catch (e) {
      if (!(e instanceof EditError)) throw e;
      return { plan, error: `edit ${k + 1} of ${edits.length} (${edits[k].op}): ${e.message}`, failedAt: k };
    }
  }
  return { plan, error: null, failedAt: -1 };
}

/** The edit list as the editor writes it into the node's widget: one compact JSON object per line. */
export function formatEdits(edits) {
  if (!edits.length) return "[]";
  return "[\n" + edits.map((e) => "  " + JSON.stringify(e)).join(",\n") + "\n]";
}

export const editsEqual = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** True when a step's ref holds a regenerate that the preview did not sample (`pending`: a Set of edit indices). */
export function isPending(ref, pending) {
  if (ref.regen) return pending.has(ref.edit) || isPending(ref.regen, pending);
  if (ref.mix) return ref.mix.some((r) => isPending(r, pending));
  return false;
}

// -- the editor ------------------------------------------------------------------------------------

export class PlanEditor {
  /**
   * @param {object} options
   *   edits: the initial edit list (array or JSON text)
   *   payload: the edit node's last execution ({input, output, other, edits, pending}), or null before a run
   *   newSeed: () => integer, the seed written into regenerate edits (default: random)
   */
  constructor({ edits = [], payload = null, newSeed = null } = {}) {
    this._edits = parseEdits(edits);
    this.payload = payload; // the newest plans from the server (a run's or a preview's): input, other, strips
    this.run = payload; // the node's last execution: its output is exact for run.edits
    this.preview = null; // the preview route's answer for preview.edits (regenerates in `pending` not sampled)
    this.serverError = null; // {edits, error}: the preview route refused this edit list
    this.selection = null; // {start, end}: steps [start, end) of the current plan
    this.otherSelection = null; // {start, end}: steps of the other plan, to splice in
    this.undoStack = [];
    this.redoStack = [];
    this.listeners = new Set();
    this.newSeed = newSeed || (() => Math.floor(Math.random() * 2 ** 31));
    this._sim = null;
  }

  // -- state ----------------------------------------------------------------------------------------
  get edits() {
    return JSON.parse(JSON.stringify(this._edits));
  }

  get text() {
    return formatEdits(this._edits);
  }

  get hasPlan() {
    return !!(this.payload && this.payload.input);
  }

  /** {plan, error, failedAt}: the input plan with the edits applied (null plan before the first run). */
  get simulation() {
    if (!this.hasPlan) return { plan: null, error: null, failedAt: -1 };
    if (!this._sim) this._sim = simulate(this.payload.input, this._edits, this.payload.other);
    return this._sim;
  }

  get plan() {
    return this.simulation.plan;
  }

  /** The other plan (symbolic), or null when the node's `other` input is not connected. */
  get otherPlan() {
    return this.payload && this.payload.other ? basePlan(this.payload.other, "other") : null;
  }

  /** True when the node's last execution used exactly this edit list (its output strip is current). */
  get executedCurrent() {
    return !!(this.run && this.run.output && editsEqual(this.run.edits || [], this._edits));
  }

  /** True when the preview route answered for exactly this edit list. */
  get previewCurrent() {
    return !!(this.preview && this.preview.output && editsEqual(this.preview.edits || [], this._edits));
  }

  /** The server's answer whose output is this edit list's plan (drawn exactly), or null (the strip simulates). */
  get shown() {
    return this.executedCurrent ? this.run : this.previewCurrent ? this.preview : null;
  }

  /** Indices of the regenerate edits the shown output has not sampled (their span holds the plan as it was). */
  get pending() {
    return new Set(this.shown?.pending || []);
  }

  /** "run": the strip is the last run's output; "preview": the preview route's; "edited": simulated. */
  get state() {
    return this.executedCurrent ? "run" : this.previewCurrent ? "preview" : "edited";
  }

  /** The preview route's error for this edit list, or null. */
  get error() {
    return this.serverError && editsEqual(this.serverError.edits, this._edits) ? this.serverError.error : null;
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  _emit(reason) {
    this._sim = null;
    for (const fn of this.listeners) fn(reason, this);
  }

  /** New thumbnails and plans from the node's execution (the strip updates; the edits stay). */
  setPayload(payload) {
    this.payload = this.run = payload;
    this.preview = this.serverError = null;
    this._sim = null;
    this._clampSelection();
    this._emit("payload");
  }

  /** The preview route's answer for `edits` (the list the request sent): the node's last input plan with them applied. */
  setPreview(preview, edits) {
    this.payload = this.preview = { ...preview, edits: parseEdits(edits) };
    this.serverError = null;
    this._sim = null;
    this._clampSelection();
    this._emit("preview");
  }

  /** The preview route refused `edits` with this message (shown while the edit list stays the same). */
  setServerError(edits, error) {
    this.serverError = { edits: parseEdits(edits), error };
    this._emit("preview");
  }

  /** Replace the edit list from outside (a workflow loaded, the text typed): undoable unless reset. */
  setEdits(edits, { undoable = true } = {}) {
    const parsed = parseEdits(edits);
    if (editsEqual(parsed, this._edits)) return false;
    if (undoable) {
      this.undoStack.push(this._snapshot());
      this.redoStack = [];
    } else {
      this.undoStack = [];
      this.redoStack = [];
    }
    this._edits = parsed;
    this._sim = null;
    this._clampSelection();
    this._emit("edits");
    return true;
  }

  /** Start over from this edit list, with no undo history (a workflow was loaded). */
  reset(edits) {
    this._edits = parseEdits(edits);
    this.undoStack = [];
    this.redoStack = [];
    this.selection = null;
    this._sim = null;
    this._emit("reset");
  }

  _snapshot() {
    return { edits: this._edits, selection: this.selection && { ...this.selection } };
  }

  _restore(state) {
    this._edits = state.edits;
    this.selection = state.selection;
    this._sim = null;
    this._clampSelection();
  }

  _clampSelection() {
    const clamp = (sel, T) => {
      const start = Math.min(sel.start, T - 1);
      const end = Math.min(sel.end, T);
      return end > start ? { start, end } : null;
    };
    const plan = this.plan;
    if (this.selection && plan) this.selection = clamp(this.selection, plan.steps.length);
    const other = this.otherPlan;
    if (this.otherSelection) this.otherSelection = other ? clamp(this.otherSelection, other.steps.length) : null;
  }

  // -- selection ------------------------------------------------------------------------------------
  /** Select steps a..b (inclusive, any order). */
  select(a, b = a) {
    const plan = this.plan;
    if (!plan) return;
    const T = plan.steps.length;
    const lo = Math.max(0, Math.min(a, b));
    const hi = Math.min(T - 1, Math.max(a, b));
    this.selection = { start: lo, end: hi + 1 };
    this._emit("selection");
  }

  clearSelection() {
    if (this.selection) {
      this.selection = null;
      this._emit("selection");
    }
  }

  /** Select steps a..b (inclusive, any order) of the other plan, to splice them in. */
  selectOther(a, b = a) {
    const other = this.otherPlan;
    if (!other) return;
    const T = other.steps.length;
    this.otherSelection = { start: Math.max(0, Math.min(a, b)), end: Math.min(T - 1, Math.max(a, b)) + 1 };
    this._emit("selection");
  }

  /** The selection in seconds, as the edits write it. */
  selectionTimes() {
    if (!this.selection || !this.plan) return null;
    return stepTimes(this.plan, this.selection.start, this.selection.end);
  }

  // -- operations -----------------------------------------------------------------------------------
  /** Append an edit (checked by simulating it); returns it. Throws EditError and changes nothing if it fails. */
  push(edit, selectionAfter = undefined) {
    const [checked] = parseEdits([edit]);
    if (this.hasPlan) {
      const sim = simulate(this.payload.input, [...this._edits, checked], this.payload.other);
      if (sim.error) throw new EditError(sim.error);
    }
    this.undoStack.push(this._snapshot());
    this.redoStack = [];
    this._edits = [...this._edits, checked];
    this._sim = null;
    if (selectionAfter !== undefined) this.selection = selectionAfter;
    this._clampSelection();
    this._emit("edits");
    return checked;
  }

  _range() {
    if (!this.selection) throw new EditError("select steps on the timeline first (drag across them).");
    const { start_s, end_s } = this.selectionTimes();
    return { start_s, end_s };
  }

  deleteSelection() {
    return this.push({ op: "cut", ...this._range() }, null);
  }

  duplicateSelection() {
    const { start, end } = this.selection || {};
    return this.push({ op: "repeat", ...this._range(), times: 2 }, { start: end, end: end + (end - start) });
  }

  reverseSelection() {
    return this.push({ op: "reverse", ...this._range() });
  }

  interpolateSelection(mode = "linear") {
    const edit = { op: "interpolate", ...this._range() };
    if (mode !== "linear") edit.mode = mode;
    return this.push(edit);
  }

  regenerateSelection(prompt = "", seed = null) {
    const edit = { op: "regenerate", ...this._range() };
    if (prompt && prompt.trim()) edit.prompt = prompt.trim();
    edit.seed = seed ?? this.newSeed();
    return this.push(edit);
  }

  /** Insert the other plan's selected steps at step boundary b (0..T); they become the selection. */
  spliceOtherAt(b) {
    const other = this.otherPlan;
    if (!other || !this.otherSelection) throw new EditError("select steps of the other plan first (drag across its strip).");
    const { start, end } = this.otherSelection;
    const edit = { op: "splice", source: "other", at_s: boundaryTime(this.plan, b), ...stepTimes(other, start, end) };
    return this.push(edit, { start: b, end: b + end - start });
  }

  appendOther() {
    if (!this.otherPlan) throw new EditError("connect a plan to the node's other input first.");
    const T = this.plan.steps.length;
    return this.push({ op: "concatenate", source: "other" }, { start: T, end: T + this.otherPlan.steps.length });
  }

  blendSelection(weight) {
    if (!this.otherPlan) throw new EditError("connect a plan to the node's other input first.");
    if (!(typeof weight === "number" && weight >= 0 && weight <= 1)) throw new EditError("blend: the weight must be a number from 0 to 1.");
    return this.push({ op: "blend", source: "other", weight, ...this._range() });
  }

  /** Move the selection so that it starts at step boundary b (0..T) of the current plan. */
  moveSelectionTo(b) {
    const { start, end } = this.selection || {};
    const range = this._range();
    if (b >= start && b <= end) return null; // dropped onto itself: nothing to do
    const len = end - start;
    const after = b <= start ? { start: b, end: b + len } : { start: b - len, end: b };
    return this.push({ op: "move", ...range, to_s: boundaryTime(this.plan, b) }, after);
  }

  get canUndo() {
    return this.undoStack.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  undo() {
    if (!this.canUndo) return false;
    this.redoStack.push(this._snapshot());
    this._restore(this.undoStack.pop());
    this._emit("edits");
    return true;
  }

  redo() {
    if (!this.canRedo) return false;
    this.undoStack.push(this._snapshot());
    this._restore(this.redoStack.pop());
    this._emit("edits");
    return true;
  }
}
