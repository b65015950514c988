// The plan timeline widget: a toolbar, a strip of thumbnails over time (one per plan step: the preview
// decoder's frames, or tokens coloured by PCA), the plan on the node's `other` input as a second, smaller
// strip under it (with its own buttons), a status line and a context menu. Plain DOM + canvas, no ComfyUI:
// semanticgen.js mounts it in a DOM widget of the SemanticGen Edit Plan node, the browser test mounts it
// on a bare page.
//
// Mouse: drag across the strip to select steps (shift-click extends); drag the selection to move it;
// drag across the other strip to select steps of it, then drag them onto the strip to splice them in;
// right-click for the menu. Keys (after a click in the timeline, until a click elsewhere): Delete,
// Ctrl+D duplicate, Ctrl+Z undo, Ctrl+Shift+Z / Ctrl+Y redo, Ctrl+A select all, Escape clears the selection.

import { EditError, durationOf, isPending } from "./core.js";

const STYLE_ID = "semanticgen-plan-editor-style";
const CSS = `
.sg-plan-editor { position: relative; display: flex; flex-direction: column; gap: 4px; box-sizing: border-box;
  font: 12px/1.3 system-ui, -apple-system, "Segoe UI", sans-serif; color: #ddd; background: #1b1b1f;
  border: 1px solid #333; border-radius: 6px; padding: 6px; outline: none; user-select: none; overflow: hidden; }
.sg-plan-editor:focus-within { border-color: #4a7fd6; }
.sg-toolbar, .sg-other-bar { display: flex; flex-wrap: nowrap; gap: 4px; align-items: center; min-width: 0; }
.sg-other-bar[hidden] { display: none; }
.sg-other-bar .sg-weight { width: 52px; font: inherit; color: #eee; background: #111; border: 1px solid #444;
  border-radius: 4px; padding: 1px 4px; }
.sg-other-bar label { color: #aaa; white-space: nowrap; }
.sg-toolbar button, .sg-other-bar button, .sg-menu button { font: inherit; color: #eee; background: #2d2f36; border: 1px solid #444;
  border-radius: 4px; padding: 2px 7px; cursor: pointer; white-space: nowrap; flex: 0 0 auto; }
.sg-toolbar button:hover:not(:disabled), .sg-other-bar button:hover:not(:disabled) { background: #3a3f4b; border-color: #5a6275; }
.sg-toolbar button:disabled, .sg-other-bar button:disabled { color: #777; cursor: default; }
.sg-toolbar .sg-prompt { flex: 1 1 80px; min-width: 40px; font: inherit; color: #eee; background: #111;
  border: 1px solid #444; border-radius: 4px; padding: 2px 6px; }
.sg-toolbar .sg-sep { flex: 0 0 2px; }
.sg-strip { width: 100%; display: block; cursor: crosshair; border-radius: 3px; background: #101013; touch-action: none; }
.sg-status { display: flex; justify-content: space-between; gap: 8px; color: #aaa; min-height: 16px; white-space: nowrap; }
.sg-status .sg-left { overflow: hidden; text-overflow: ellipsis; }
.sg-status .sg-error { color: #ff7b72; }
.sg-status .sg-ok { color: #7ee787; }
.sg-status .sg-pending { color: #e3b341; }
.sg-status .sg-preview { color: #74c0fc; }
.sg-menu { position: fixed; z-index: 10000; color: #ddd; font: 12px/1.3 system-ui, -apple-system, "Segoe UI", sans-serif; display: flex; flex-direction: column; min-width: 190px; padding: 4px;
  background: #23252b; border: 1px solid #555; border-radius: 6px; box-shadow: 0 6px 18px rgba(0,0,0,.5); }
.sg-menu[hidden] { display: none; }
.sg-menu button { text-align: left; border: none; background: transparent; padding: 4px 10px; }
.sg-menu button:hover:not(:disabled) { background: #3b5bdb; }
.sg-menu button:disabled { color: #666; }
.sg-menu hr { border: none; border-top: 1px solid #444; margin: 3px 0; }
`;

const BAND = 18; // segment (prompt) band
const TILE_H = 72;
const RULER = 16;
const HEIGHT = BAND + TILE_H + RULER;
const OTHER_BAND = 16; // the other plan's label
const OTHER_H = 44; // its thumbnails
const OTHER_BAR = 26; // its buttons (a DOM row under the canvas), with the gap
const OTHER_COLOUR = "#63e6be";
const SEGMENT_COLOURS = ["#3b5bdb", "#2f9e44", "#e8590c", "#ae3ec9", "#1098ad", "#c2255c", "#5c940d"];

function injectStyle(doc) {
  if (doc.getElementById(STYLE_ID)) return;
  const style = doc.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  doc.head.appendChild(style);
}

function loadImage(url, onload) {
  const img = new Image();
  img.onload = onload;
  img.src = url;
  return img;
}

/**
 * Mount the timeline in `root` for `editor` (a core.js PlanEditor). Returns {redraw, destroy, elements}.
 * The editor is the state; the view redraws on each of its changes.
 */
export function mountPlanEditor(root, editor, { minHeight = 0 } = {}) {
  const doc = root.ownerDocument;
  injectStyle(doc);
  root.classList.add("sg-plan-editor");
  root.tabIndex = 0;
  root.innerHTML = `
    <div class="sg-toolbar">
      <button data-action="delete" title="Delete the selected steps (Del)">Delete</button>
      <button data-action="duplicate" title="Insert a copy after the selection (Ctrl+D)">Duplicate</button>
      <button data-action="reverse" title="Play the selection backwards">Reverse</button>
      <button data-action="interpolate" title="Replace the selection by a transition between its neighbours">Interpolate</button>
      <input class="sg-prompt" type="text" spellcheck="false" placeholder="prompt for Regenerate" title="The prompt of the regenerated span (empty: keep the plan's prompt)">
      <button data-action="regenerate" title="Re-sample the selection with stage 1 (the rest is held)">Regenerate</button>
      <span class="sg-sep"></span>
      <button data-action="undo" title="Undo (Ctrl+Z)">&#8630; Undo</button>
      <button data-action="redo" title="Redo (Ctrl+Shift+Z)">&#8631; Redo</button>
    </div>
    <canvas class="sg-strip" height="${HEIGHT}"></canvas>
    <div class="sg-other-bar" hidden>
      <button data-action="append_other" title="Append the other plan at the end (concatenate)">Append other</button>
      <button data-action="blend" title="Mix the other plan into the selection, step by step: (1 - weight) * plan + weight * other">Blend with other</button>
      <label title="Blend: how much of the other plan (0..1)">weight <input class="sg-weight" type="number" min="0" max="1" step="0.05" value="0.5"></label>
    </div>
    <div class="sg-status"><span class="sg-left"></span><span class="sg-right"></span></div>`;
  if (minHeight) root.style.minHeight = `${minHeight}px`;
  const canvas = root.querySelector("canvas");
  const promptInput = root.querySelector(".sg-prompt");
  const weightInput = root.querySelector(".sg-weight");
  const otherBar = root.querySelector(".sg-other-bar");
  const statusLeft = root.querySelector(".sg-left");
  const statusRight = root.querySelector(".sg-right");
  // The menu lives in the page's body (fixed position), so neither the widget's box nor the graph's zoom clips it.
  const menu = doc.createElement("div");
  menu.className = "sg-menu";
  menu.hidden = true;
  doc.body.appendChild(menu);
  const buttons = Object.fromEntries([...root.querySelectorAll(".sg-toolbar button, .sg-other-bar button")]
    .map((b) => [b.dataset.action, b]));

  const images = {}; // url -> Image
  let drag = null; // {kind: "select"|"move"|"select-other"|"splice", anchor, x0, x, y, moved, drop}
  let message = null; // {text, error} shown until the next change
  let hover = -1;

  const image = (url) => {
    if (!url) return null;
    if (!images[url]) images[url] = loadImage(url, () => redraw());
    return images[url].complete && images[url].naturalWidth ? images[url] : null;
  };

  // -- geometry ---------------------------------------------------------------------------------------
  const steps = () => (editor.plan ? editor.plan.steps.length : 0);
  const width = () => canvas.clientWidth || canvas.width;
  const tileW = () => width() / Math.max(1, steps());
  // the other plan's strip: under the ruler, at the main strip's scale when it fits
  const other = () => (editor.plan ? editor.otherPlan : null);
  const height = () => HEIGHT + (other() ? OTHER_BAND + OTHER_H : 0);
  const otherTileW = () => Math.min(tileW(), width() / Math.max(1, other()?.steps.length || 1));
  const otherStepAtX = (x) => Math.min(other().steps.length - 1, Math.max(0, Math.floor(x / otherTileW())));
  /** Canvas x of a client x (the widget may be scaled by the graph's zoom). */
  const localX = (clientX) => {
    const rect = canvas.getBoundingClientRect();
    return ((clientX - rect.left) * width()) / (rect.width || 1);
  };
  const localY = (clientY) => {
    const rect = canvas.getBoundingClientRect();
    return ((clientY - rect.top) * height()) / (rect.height || 1);
  };
  const stepAtX = (x) => Math.min(steps() - 1, Math.max(0, Math.floor(x / tileW())));
  const boundaryAtX = (x) => Math.min(steps(), Math.max(0, Math.round(x / tileW())));
  /** Strip x of a video time (the last step may be shorter than the others). */
  const xOfTime = (plan, t) => {
    const T = plan.steps.length;
    const last = (T - 1) / plan.fps;
    const pos = t <= last ? t * plan.fps : T - 1 + Math.min(1, (t - last) / Math.max(1e-9, durationOf(plan) - last));
    return pos * tileW();
  };

  // -- drawing ----------------------------------------------------------------------------------------
  function drawRef(ctx, ref, x, y, w, h, alpha) {
    const payload = editor.payload;
    if (ref.src) {
      const meta = payload && payload[ref.src];
      const img = meta && image(meta.strip);
      if (!img) return;
      const [, gh, gw] = meta.grid;
      ctx.globalAlpha = alpha;
      ctx.drawImage(img, ref.index * gw, 0, gw, gh, x, y, w, h);
    } else if (ref.mix) {
      drawRef(ctx, ref.mix[0], x, y, w, h, alpha);
      drawRef(ctx, ref.mix[1], x, y, w, h, alpha * ref.w);
    } else if (ref.regen) {
      drawRef(ctx, ref.regen, x, y, w, h, alpha * 0.3);
    }
    ctx.globalAlpha = 1;
  }

  function hatch(ctx, x, y, w, h, colour) {
    ctx.save();
    ctx.beginPath();
    ctx.rect(x, y, w, h);
    ctx.clip();
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1;
    for (let d = -h; d < w; d += 7) {
      ctx.beginPath();
      ctx.moveTo(x + d, y + h);
      ctx.lineTo(x + d + h, y);
      ctx.stroke();
    }
    ctx.restore();
  }

  function redraw() {
    const dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, Math.round(width()));
    const H = height();
    if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
      canvas.width = Math.round(W * dpr);
      canvas.height = Math.round(H * dpr);
    }
    canvas.style.height = `${H}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#101013";
    ctx.fillRect(0, 0, W, H);
    const plan = editor.plan;
    updateControls();
    if (!plan) {
      ctx.fillStyle = "#888";
      ctx.font = "13px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText("Run the workflow once: the timeline shows the plan of the last run.", W / 2, HEIGHT / 2);
      return;
    }
    const T = plan.steps.length;
    const tw = W / T;
    // segments: the prompt of each shot over its time
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    plan.segments.forEach((seg, k) => {
      const x0 = xOfTime(plan, seg.start_s);
      const x1 = xOfTime(plan, seg.end_s);
      ctx.fillStyle = SEGMENT_COLOURS[k % SEGMENT_COLOURS.length];
      ctx.globalAlpha = 0.85;
      ctx.fillRect(x0 + 1, 2, Math.max(1, x1 - x0 - 2), BAND - 4);
      ctx.globalAlpha = 1;
      ctx.save();
      ctx.beginPath();
      ctx.rect(x0 + 4, 0, Math.max(0, x1 - x0 - 8), BAND);
      ctx.clip();
      ctx.fillStyle = "#fff";
      ctx.fillText(seg.prompt || "(no prompt)", x0 + 5, BAND / 2);
      ctx.restore();
    });
    // thumbnails: the exact output (of the last run, or the preview route's) for these edits, else the
    // simulation; a regenerate not sampled yet stays hatched
    const shown = editor.shown;
    const out = shown && shown.output.steps === T ? image(shown.output.strip) : null;
    const pending = editor.pending;
    for (let k = 0; k < T; k++) {
      const x = k * tw;
      const ref = plan.steps[k];
      const [x1, w1] = [Math.round(x) + 1, Math.max(1, Math.round(x + tw) - Math.round(x) - 2)];
      if (out) {
        const [, gh, gw] = shown.output.grid;
        ctx.drawImage(out, k * gw, 0, gw, gh, x1, BAND, w1, TILE_H);
      } else {
        drawRef(ctx, ref, x1, BAND, w1, TILE_H, 1);
      }
      if (ref.regen) {
        if (!out || isPending(ref, pending)) hatch(ctx, x1, BAND, w1, TILE_H, "rgba(255,170,60,0.55)");
        ctx.fillStyle = "#ffa94d";
        ctx.fillRect(x1, BAND, w1, 3);
      } else if (ref.mix) {
        ctx.fillStyle = "#b197fc";
        ctx.fillRect(x1, BAND, w1, 3);
      } else if (ref.src === "other") {
        ctx.fillStyle = OTHER_COLOUR;
        ctx.fillRect(x1, BAND, w1, 3);
      }
      if (k === hover && !drag) {
        ctx.strokeStyle = "rgba(255,255,255,0.5)";
        ctx.strokeRect(x1 + 0.5, BAND + 0.5, w1 - 1, TILE_H - 1);
      }
    }
    // ruler
    const dur = durationOf(plan);
    ctx.fillStyle = "#888";
    ctx.strokeStyle = "#555";
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "top";
    const every = Math.max(1, Math.ceil(44 / tw));
    for (let b = 0; b <= T; b++) {
      const x = Math.min(W - 0.5, b * tw + 0.5);
      ctx.beginPath();
      ctx.moveTo(x, BAND + TILE_H);
      ctx.lineTo(x, BAND + TILE_H + (b % every === 0 ? 6 : 3));
      ctx.stroke();
      if (b % every === 0 || b === T) {
        const t = b >= T ? dur : b / plan.fps;
        ctx.textAlign = b === 0 ? "left" : b === T ? "right" : "center";
        if (b === T || b + every <= T || T - b >= every / 2) ctx.fillText(`${+t.toFixed(2)}s`, x, BAND + TILE_H + 5);
      }
    }
    // selection
    const sel = editor.selection;
    if (sel) {
      const x0 = sel.start * tw;
      const x1 = sel.end * tw;
      ctx.fillStyle = drag && drag.kind === "move" && drag.moved ? "rgba(80,150,255,0.12)" : "rgba(80,150,255,0.28)";
      ctx.fillRect(x0, BAND, x1 - x0, TILE_H);
      ctx.strokeStyle = "#5c9dff";
      ctx.lineWidth = 2;
      ctx.strokeRect(x0 + 1, BAND + 1, x1 - x0 - 2, TILE_H - 2);
      ctx.lineWidth = 1;
    }
    drawOther(ctx, W);
    // moving or splicing: a ghost of the steps under the pointer and where they will land
    const moving = drag && drag.kind === "move" && drag.moved && sel;
    const splicing = drag && drag.kind === "splice" && drag.moved && editor.otherSelection;
    if (moving || splicing) {
      const n = moving ? sel.end - sel.start : editor.otherSelection.end - editor.otherSelection.start;
      const len = n * tw;
      ctx.globalAlpha = 0.5;
      ctx.fillStyle = moving ? "#5c9dff" : OTHER_COLOUR;
      const y = moving ? BAND + 10 : Math.min(drag.y, HEIGHT) - (TILE_H - 20) / 2;
      ctx.fillRect(drag.x - len / 2, y, len, TILE_H - 20);
      ctx.globalAlpha = 1;
      if (drag.drop !== null) {
        const xb = drag.drop * tw;
        ctx.fillStyle = "#ffd43b";
        ctx.fillRect(Math.min(W - 3, Math.max(0, xb - 1.5)), BAND - 4, 3, TILE_H + 8);
      }
    }
  }

  /** The other plan: a label, its thumbnails at the main strip's scale (or smaller), its selection. */
  function drawOther(ctx, W) {
    const o = other();
    if (!o) return;
    const y0 = HEIGHT;
    const ow = otherTileW();
    const n = o.steps.length;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    ctx.fillStyle = OTHER_COLOUR;
    const hint = editor.otherSelection ? "drag the selection onto the strip above to splice it in"
      : "drag across it to select steps to splice in";
    ctx.fillText(`other plan · ${n} steps · ${+durationOf(o).toFixed(3)} s · ${hint}`, 2, y0 + OTHER_BAND / 2);
    const y = y0 + OTHER_BAND;
    for (let k = 0; k < n; k++) {
      const [x1, w1] = [Math.round(k * ow) + 1, Math.max(1, Math.round((k + 1) * ow) - Math.round(k * ow) - 2)];
      drawRef(ctx, o.steps[k], x1, y, w1, OTHER_H - 2, 1);
    }
    const sel = editor.otherSelection;
    if (sel) {
      const [x0, x1] = [sel.start * ow, sel.end * ow];
      ctx.fillStyle = "rgba(99,230,190,0.25)";
      ctx.fillRect(x0, y, x1 - x0, OTHER_H - 2);
      ctx.strokeStyle = OTHER_COLOUR;
      ctx.lineWidth = 2;
      ctx.strokeRect(x0 + 1, y + 1, x1 - x0 - 2, OTHER_H - 4);
      ctx.lineWidth = 1;
    }
  }

  function updateControls() {
    const plan = editor.plan;
    const sel = editor.selection;
    for (const name of ["delete", "duplicate", "reverse", "interpolate", "regenerate"]) buttons[name].disabled = !sel;
    if (sel && plan && sel.end - sel.start >= plan.steps.length) buttons.delete.disabled = true;
    otherBar.hidden = !other();
    buttons.append_other.disabled = !other();
    buttons.blend.disabled = !other() || !sel;
    buttons.undo.disabled = !editor.canUndo;
    buttons.redo.disabled = !editor.canRedo;
    const sim = editor.simulation;
    if (message) {
      statusLeft.textContent = message.text;
      statusLeft.className = `sg-left ${message.error ? "sg-error" : ""}`;
    } else if (sim.error || editor.error) {
      statusLeft.textContent = sim.error || editor.error;
      statusLeft.className = "sg-left sg-error";
    } else if (sel && plan) {
      const t = editor.selectionTimes();
      const n = sel.end - sel.start;
      statusLeft.textContent = `${n} step${n > 1 ? "s" : ""} selected: ${+t.start_s.toFixed(3)}-${+t.end_s.toFixed(3)} s. Drag it to move it; right-click for more.`;
      statusLeft.className = "sg-left";
    } else {
      statusLeft.textContent = !plan ? "" : other() ? "Drag across the strip to select steps, or across the other plan's to splice it in."
        : "Drag across the strip to select steps.";
      statusLeft.className = "sg-left";
    }
    if (plan) {
      const n = editor.edits.length;
      const waiting = editor.pending.size; // regenerates the shown output holds unsampled
      const [state, style] = {
        run: ["as last run", "sg-ok"],
        preview: waiting ? [`preview · ${waiting} regenerate${waiting > 1 ? "s" : ""} pending until run`, "sg-pending"]
          : ["preview", "sg-preview"],
        edited: ["edited: run to apply", "sg-pending"],
      }[editor.state];
      statusRight.innerHTML = "";
      const facts = doc.createTextNode(
        `${plan.steps.length} steps · ${+durationOf(plan).toFixed(3)} s · ${plan.num_frames} frames · ${n} edit${n === 1 ? "" : "s"} · `);
      const badge = doc.createElement("span");
      badge.className = style;
      badge.textContent = state;
      statusRight.append(facts, badge);
    } else {
      statusRight.textContent = `${editor.edits.length} edits`;
    }
  }

  // -- actions ----------------------------------------------------------------------------------------
  const actions = {
    delete: () => editor.deleteSelection(),
    duplicate: () => editor.duplicateSelection(),
    reverse: () => editor.reverseSelection(),
    interpolate: () => editor.interpolateSelection("linear"),
    interpolate_slerp: () => editor.interpolateSelection("slerp"),
    regenerate: () => editor.regenerateSelection(promptInput.value),
    regenerate_same: () => editor.regenerateSelection(""),
    regenerate_prompt: () => promptInput.focus(),
    undo: () => editor.undo(),
    redo: () => editor.redo(),
    select_all: () => editor.plan && editor.select(0, editor.plan.steps.length - 1),
    clear: () => editor.clearSelection(),
    append_other: () => editor.appendOther(),
    blend: () => editor.blendSelection(weightInput.value === "" ? NaN : Number(weightInput.value)),
  };

  function run(name) {
    hideMenu();
    try {
      message = null;
      actions[name]();
    } catch (e) {
      if (!(e instanceof EditError)) throw e;
      message = { text: e.message, error: true };
    }
    redraw();
  }

  for (const [name, button] of Object.entries(buttons)) {
    button.addEventListener("click", (e) => {
      e.stopPropagation();
      run(name);
    });
  }

  // -- context menu -----------------------------------------------------------------------------------
  const MENU = [
    ["delete", "Delete"], ["duplicate", "Duplicate"], ["reverse", "Reverse"],
    ["interpolate", "Interpolate (linear)"], ["interpolate_slerp", "Interpolate (slerp)"],
    ["regenerate_same", "Regenerate (same prompt, new seed)"],
    ["regenerate_prompt", "Regenerate with a prompt..."], null,
    ["append_other", "Append other"], ["blend", "Blend with other"], null,
    ["undo", "Undo"], ["redo", "Redo"], null, ["select_all", "Select all"], ["clear", "Clear selection"],
  ];

  function showMenu(clientX, clientY) {
    menu.innerHTML = "";
    for (const item of MENU) {
      if (!item) {
        menu.appendChild(doc.createElement("hr"));
        continue;
      }
      const [name, label] = item;
      const b = doc.createElement("button");
      b.dataset.action = name;
      b.textContent = label;
      const needsSelection = !["undo", "redo", "select_all", "append_other"].includes(name);
      b.disabled = (needsSelection && !editor.selection) || (name === "undo" && !editor.canUndo) ||
        (name === "redo" && !editor.canRedo) || (["append_other", "blend"].includes(name) && !other());
      b.addEventListener("click", (e) => {
        e.stopPropagation();
        run(name);
      });
      menu.appendChild(b);
    }
    menu.hidden = false;
    const view = doc.defaultView;
    const x = Math.min(clientX, view.innerWidth - menu.offsetWidth - 4);
    const y = Math.min(clientY, view.innerHeight - menu.offsetHeight - 4);
    menu.style.left = `${Math.max(0, x)}px`;
    menu.style.top = `${Math.max(0, y)}px`;
  }

  function hideMenu() {
    menu.hidden = true;
  }

  // -- mouse ------------------------------------------------------------------------------------------
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || !editor.plan) return;
    e.preventDefault();
    e.stopPropagation();
    root.focus({ preventScroll: true });
    hideMenu();
    message = null;
    const x = localX(e.clientX);
    const y = localY(e.clientY);
    canvas.setPointerCapture?.(e.pointerId);
    if (other() && y >= HEIGHT) {
      const k = otherStepAtX(x);
      const sel = editor.otherSelection;
      if (sel && k >= sel.start && k < sel.end && !e.shiftKey) {
        drag = { kind: "splice", x0: x, x, y, moved: false, drop: null };
      } else {
        const anchor = e.shiftKey && sel ? sel.start : k;
        drag = { kind: "select-other", anchor };
        editor.selectOther(anchor, k);
      }
      redraw();
      return;
    }
    const k = stepAtX(x);
    const sel = editor.selection;
    if (sel && k >= sel.start && k < sel.end && !e.shiftKey) {
      drag = { kind: "move", x0: x, x, moved: false, drop: null };
    } else {
      const anchor = e.shiftKey && sel ? sel.start : k;
      drag = { kind: "select", anchor };
      editor.select(anchor, k);
    }
    redraw();
  });

  canvas.addEventListener("pointermove", (e) => {
    if (!editor.plan) return;
    const x = localX(e.clientX);
    if (!drag) {
      const k = localY(e.clientY) >= BAND && localY(e.clientY) < BAND + TILE_H ? stepAtX(x) : -1;
      if (k !== hover) {
        hover = k;
        redraw();
      }
      return;
    }
    e.preventDefault();
    if (drag.kind === "select") {
      editor.select(drag.anchor, stepAtX(x));
    } else if (drag.kind === "select-other") {
      editor.selectOther(drag.anchor, otherStepAtX(x));
    } else if (drag.kind === "splice") {
      drag.x = x;
      drag.y = localY(e.clientY);
      if (Math.abs(x - drag.x0) > 4 || drag.y < HEIGHT) drag.moved = true;
      drag.drop = drag.moved && drag.y < HEIGHT ? boundaryAtX(x) : null; // over the strip, at a step boundary
      canvas.style.cursor = drag.moved ? "grabbing" : "crosshair";
    } else {
      drag.x = x;
      if (Math.abs(x - drag.x0) > 4) drag.moved = true;
      const b = boundaryAtX(x);
      const sel = editor.selection;
      drag.drop = drag.moved && sel && (b < sel.start || b > sel.end) ? b : null;
      canvas.style.cursor = drag.moved ? "grabbing" : "crosshair";
    }
    redraw();
  });

  const endDrag = (e) => {
    if (!drag) return;
    const finished = drag;
    drag = null;
    canvas.style.cursor = "crosshair";
    canvas.releasePointerCapture?.(e.pointerId);
    if ((finished.kind === "move" || finished.kind === "splice") && finished.moved && finished.drop !== null) {
      try {
        if (finished.kind === "move") editor.moveSelectionTo(finished.drop);
        else editor.spliceOtherAt(finished.drop);
      } catch (err) {
        if (!(err instanceof EditError)) throw err;
        message = { text: err.message, error: true };
      }
    }
    redraw();
  };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("pointerleave", () => {
    if (hover !== -1 && !drag) {
      hover = -1;
      redraw();
    }
  });

  canvas.addEventListener("contextmenu", (e) => {
    e.preventDefault();
    e.stopPropagation();
    if (editor.plan && localY(e.clientY) < HEIGHT) {
      const k = stepAtX(localX(e.clientX));
      const sel = editor.selection;
      if (!sel || k < sel.start || k >= sel.end) editor.select(k);
    }
    showMenu(e.clientX, e.clientY);
    redraw();
  });

  // The timeline is "active" from a pointer press inside it until one outside it. Keys are taken at the
  // window (capture phase) while it is active: a host page may move focus away on clicks (ComfyUI does), and
  // its own shortcuts (Delete removes nodes, Ctrl+Z undoes the graph) must not fire for the timeline's keys.
  let active = false;
  const onDocPointerDown = (e) => {
    active = root.contains(e.target) || menu.contains(e.target);
    if (!menu.hidden && !menu.contains(e.target)) hideMenu();
  };
  doc.addEventListener("pointerdown", onDocPointerDown, true);

  promptInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") run("regenerate");
    e.stopPropagation(); // typing a prompt must not trigger the host's shortcuts
  });
  weightInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") run("blend");
    e.stopPropagation();
  });

  const onKey = (e) => {
    if (!active || !root.isConnected) return;
    const target = e.target;
    if (target === promptInput || (target !== root && target?.closest?.("input, textarea, [contenteditable]"))) return;
    const ctrl = e.ctrlKey || e.metaKey;
    const key = e.key.toLowerCase();
    let name = null;
    if (key === "delete" || key === "backspace") name = "delete";
    else if (ctrl && key === "z") name = e.shiftKey ? "redo" : "undo";
    else if (ctrl && key === "y") name = "redo";
    else if (ctrl && key === "d") name = "duplicate";
    else if (ctrl && key === "a") name = "select_all";
    else if (key === "escape") name = "clear";
    if (!name) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    if (["delete", "duplicate", "clear"].includes(name) && !editor.selection) return;
    run(name);
  };
  const win = doc.defaultView;
  win.addEventListener("keydown", onKey, true);

  const unsubscribe = editor.subscribe(() => redraw());
  const resize = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => redraw()) : null;
  resize?.observe(canvas);
  redraw();

  return {
    redraw,
    elements: { root, canvas, promptInput, weightInput, otherBar, menu, buttons, statusLeft, statusRight },
    /** Height the widget needs beyond its base for the other plan's strip and buttons (0 without one). */
    otherHeight: () => (other() ? OTHER_BAND + OTHER_H + OTHER_BAR : 0),
    /** True once every thumbnail strip in use has loaded (tests wait for it before a screenshot). */
    loaded: () => Object.values(images).length > 0 && Object.values(images).every((img) => img.complete && img.naturalWidth > 0),
    /** Canvas geometry, for tests: client x of the middle of step k, of boundary b, and y of the tiles. */
    geometry() {
      const rect = canvas.getBoundingClientRect();
      const sx = rect.width / width();
      const sy = rect.height / height();
      return {
        stepX: (k) => rect.left + (k + 0.5) * tileW() * sx,
        boundaryX: (b) => rect.left + b * tileW() * sx,
        tileY: rect.top + (BAND + TILE_H / 2) * sy,
        otherStepX: (k) => rect.left + (k + 0.5) * otherTileW() * sx,
        otherTileY: rect.top + (HEIGHT + OTHER_BAND + OTHER_H / 2) * sy,
      };
    },
    destroy() {
      unsubscribe();
      resize?.disconnect();
      doc.removeEventListener("pointerdown", onDocPointerDown, true);
      win.removeEventListener("keydown", onKey, true);
      menu.remove();
      root.innerHTML = "";
    },
  };
}
