// Paste a YAML or JSON spec; a 422 is shown at the field it concerns, inside the editor.
import { api } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { EVENT_ID, getScalarValue, load, parseEvents } from "../vendor/js-yaml/js-yaml.js";

const DRAFT_KEY = "trainrun.draft";
const EXAMPLE = `# Seed 000: dropout makes train-mode accuracy look worse than validation;
# the eval-mode pass over the training set (train_eval) agrees with val.
name: dropout-sine
seed: 1
data:
  source: sine
  params: {window: 150}
  split: {train: 0.5, val: 0.5, stratify: true}
model:
  kind: sequential
  layers:
    - {conv1d: {out_channels: 4, kernel_size: 10}}
    - relu
    - {dropout: 0.5}
    - flatten
    - {linear: {out_features: 2}}
    - hardsigmoid
loss: {kind: bce}
optimizer: {kind: adam, lr: 1.0e-3}
training: {epochs: 20, batch_size: 256}
`;

/** ["model", "layers", 2, "dropout", "p"] -> "model.layers[2].dropout.p" */
export function formatPath(path) {
  return path.reduce(
    (out, part) => (typeof part === "number" ? `${out}[${part}]` : out ? `${out}.${part}` : String(part)),
    "",
  );
}

/** Where each node of the document sits: path -> offset of its key (or of the item). */
function nodeOffsets(source) {
  const spots = new Map();
  const stack = [];
  for (const ev of parseEvents(source, {})) {
    if (ev.type === EVENT_ID.POP) {
      stack.pop();
      continue;
    }
    if (ev.type === EVENT_ID.DOCUMENT) {
      stack.push({ kind: "doc", path: [] });
      continue;
    }
    const top = stack[stack.length - 1];
    const start = ev.type === EVENT_ID.SCALAR ? ev.valueStart : ev.start ?? 0;
    let path;
    if (top.kind === "map" && top.expectKey) {
      top.expectKey = false;
      top.key = ev.type === EVENT_ID.SCALAR ? getScalarValue(source, ev) : "?";
      top.keyAt = start;
      path = [...top.path, "?key"]; // a key's own children (complex keys) locate nothing
    } else {
      let at = start;
      if (top.kind === "map") {
        path = [...top.path, top.key];
        at = top.keyAt;
        top.expectKey = true;
      } else if (top.kind === "seq") path = [...top.path, top.index++];
      else path = [...top.path];
      spots.set(JSON.stringify(path), at);
    }
    if (ev.type === EVENT_ID.MAPPING) stack.push({ kind: "map", path, expectKey: true });
    else if (ev.type === EVENT_ID.SEQUENCE) stack.push({ kind: "seq", path, index: 0 });
  }
  return spots;
}

function lineOf(source, offset) {
  let line = 0;
  for (let i = 0; i < offset && i < source.length; i++) if (source[i] === "\n") line++;
  return line;
}

/** The line of the deepest part of `path` present in the source, and whether it was exact. */
export function locate(source, path) {
  let spots;
  try {
    spots = nodeOffsets(source);
  } catch {
    return null;
  }
  for (let n = path.length; n >= 0; n--) {
    const at = spots.get(JSON.stringify(path.slice(0, n)));
    if (at !== undefined) return { line: lineOf(source, at), exact: n === path.length };
  }
  return null;
}

function parseSpec(text) {
  try {
    return JSON.parse(text);
  } catch {
    // not JSON: YAML (a superset) next, and its error carries the line
  }
  return load(text);
}

export function submitPage(root) {
  let problems = []; // [{path, msg, line, exact}]
  const textarea = h("textarea", {
    id: "spec-input",
    spellcheck: false,
    wrap: "off",
    "aria-label": "job spec (YAML or JSON)",
  });
  textarea.value = sessionStorage.getItem(DRAFT_KEY) || EXAMPLE;
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const backdrop = h("div", { class: "backdrop", "aria-hidden": "true" });
  const problemList = h("ul", { class: "problems", id: "problems" });
  const statusEl = h("div", { class: "submit-status" });
  const submitButton = h("button", { type: "submit", id: "submit-spec" }, "Submit job");

  clear(
    root,
    h("div", { class: "page-head" }, h("h1", {}, "Submit a job")),
    h(
      "form",
      { class: "panel submit-form", onsubmit: submit },
      h("p", { class: "muted" }, "Paste a job spec as YAML or JSON. Unknown fields are rejected; mistakes are marked at their line."),
      h("div", { class: "editor" }, gutter, h("div", { class: "editor-body" }, backdrop, textarea)),
      h(
        "div",
        { class: "actions" },
        submitButton,
        h("button", { type: "button", class: "secondary", onclick: () => setText(EXAMPLE) }, "Load example"),
        statusEl,
      ),
      problemList,
    ),
  );

  function setText(text) {
    textarea.value = text;
    problems = [];
    render();
    clear(problemList);
    clear(statusEl);
  }

  function render() {
    const lines = textarea.value.split("\n");
    const byLine = new Map();
    for (const p of problems) {
      if (p.line === null || p.line === undefined) continue;
      if (!byLine.has(p.line)) byLine.set(p.line, []);
      byLine.get(p.line).push(p);
    }
    clear(
      gutter,
      lines.map((_, i) => h("div", { class: byLine.has(i) ? "ln bad" : "ln" }, String(i + 1))),
    );
    clear(
      backdrop,
      lines.map((text, i) => {
        const here = byLine.get(i);
        if (!here) return h("div", { class: "bl" }, text || " ");
        return h(
          "div",
          { class: "bl bad", dataset: { line: String(i + 1) } },
          h("span", { class: "src" }, text || " "),
          h("span", { class: "inline-msg" }, here.map((p) => `◀ ${p.pathText}: ${p.msg}`).join("   ")),
        );
      }),
    );
    syncScroll();
  }

  function syncScroll() {
    backdrop.scrollTop = textarea.scrollTop;
    backdrop.scrollLeft = textarea.scrollLeft;
    gutter.scrollTop = textarea.scrollTop;
  }

  function scrollToLine(line) {
    const lineHeight = parseFloat(getComputedStyle(textarea).lineHeight) || 20;
    textarea.scrollTop = Math.max(0, (line - 3) * lineHeight);
    syncScroll();
  }

  function focusLine(line) {
    const lines = textarea.value.split("\n");
    const start = lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0);
    textarea.focus();
    textarea.setSelectionRange(start, start + (lines[line] || "").length);
    scrollToLine(line);
  }

  function show(list) {
    problems = list;
    render();
    const first = list.find((p) => p.line !== null && p.line !== undefined);
    if (first) scrollToLine(first.line);
    clear(
      problemList,
      list.map((p) =>
        h(
          "li",
          { class: "problem", dataset: { path: p.pathText } },
          h("code", { class: "path" }, p.pathText || "(the whole spec)"),
          h("span", { class: "msg" }, p.msg),
          p.line !== null && p.line !== undefined
            ? h("button", { type: "button", class: "link", onclick: () => focusLine(p.line) },
                `line ${p.line + 1}${p.exact ? "" : " (nearest)"}`)
            : null,
        ),
      ),
    );
  }

  async function submit(event) {
    event.preventDefault();
    clear(statusEl);
    const text = textarea.value;
    sessionStorage.setItem(DRAFT_KEY, text);
    let spec;
    try {
      spec = parseSpec(text);
    } catch (err) {
      const line = err.mark ? err.mark.line : null;
      const msg = (err.reason || err.message.split("\n")[0]).trim();
      show([{ pathText: "syntax", msg, line, exact: true }]);
      return;
    }
    if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
      show([{ pathText: "", msg: "the spec must be a mapping (YAML) or an object (JSON)", line: 0, exact: false }]);
      return;
    }
    submitButton.disabled = true;
    statusEl.textContent = "Validating…";
    try {
      const job = await api("/v1/jobs", { method: "POST", body: spec });
      sessionStorage.removeItem(DRAFT_KEY);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      clear(statusEl);
      if (err.status === 422 && Array.isArray(err.detail)) {
        show(
          err.detail.map((d) => {
            const path = (d.loc || []).slice(d.loc?.[0] === "body" ? 1 : 0);
            const where = locate(text, path) || { line: null, exact: false };
            return { pathText: formatPath(path), msg: d.msg, ...where };
          }),
        );
        statusEl.append(h("span", { class: "bad-text" }, `${err.detail.length} problem${err.detail.length > 1 ? "s" : ""}: the job was not submitted`));
      } else {
        show([]);
        statusEl.append(errorBox(err));
      }
    } finally {
      submitButton.disabled = false;
    }
  }

  textarea.addEventListener("scroll", syncScroll);
  textarea.addEventListener("input", () => {
    // lines may have moved: keep the list, drop the inline marks until the next submit
    problems = [];
    render();
  });
  render();
  return () => sessionStorage.setItem(DRAFT_KEY, textarea.value);
}
