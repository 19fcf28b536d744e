// The workflow editor: the drawflow canvas <-> the workflow document (docs/workflows.md).
// A canvas node holds {kind, id, config}: config is every other field of the document's node, kept as given, so a
// field the editor has no input for survives a round trip. A node has one output per edge label it may leave by (a
// branch: its case labels, then "default"), in order, so output_N is labels[N-1]. Nodes and edges keep the document's
// order (new ones go last): with the server writing one canonical YAML, loading and saving unedited writes the same
// file. The server validates everything; this module only shapes the document and shows what the server says.

/* global Drawflow */
const $ = (id) => document.getElementById(id);
const kinds = JSON.parse($("workflow-kinds").textContent);
const loaded = JSON.parse($("workflow-doc").textContent);
const csrf = document.querySelector('input[name="csrf_token"]').value;

const DEFAULTS = {
  trigger: { keywords: ["hello"] },
  branch: { cases: [{ label: "yes", keywords: ["yes"] }] },
  llm: { prompt: "{{ message.text }}" },
  knowledge: {},
  http: { method: "GET", url: "https://erp.example.com/api" },
  set: { values: { answer: "{{ message.text }}" } },
  reply: { text: "Hello!" },
  handoff: { chat_id: "support", text: "{{ message.text }}" },
  end: {},
};

const editor = new Drawflow($("canvas"));
editor.reroute = false;
editor.start();

let meta = {}; // the document's other top-level fields (description, enabled, settings...), kept as loaded
let edgeOrder = []; // "from|to|when" in document order, then in the order they were drawn
let selected = null;

function labelsOf(kind, config) {
  if (kind === "branch") {
    return [...(config.cases || []).map((c) => String(c.label)), "default"];
  }
  return (kinds[kind] || { labels: [] }).labels;
}

function title(kind, id) {
  const div = document.createElement("div");
  div.className = "wf-title";
  div.textContent = `${kind}: ${id}`;
  return div.outerHTML;
}

function markOutputs(dfId) {
  const node = editor.getNodeFromId(dfId);
  const labels = labelsOf(node.data.kind, node.data.config);
  document.querySelectorAll(`#node-${dfId} .outputs .output`).forEach((el, i) => {
    el.dataset.label = labels[i] || "";
    el.title = labels[i] || "";
  });
}

function addNode(kind, id, config, x, y) {
  const inputs = kind === "trigger" ? 0 : 1;
  const outputs = labelsOf(kind, config).length;
  const dfId = editor.addNode(kind, inputs, outputs, x, y, `wf-${kind}`, { kind, id, config }, title(kind, id));
  document.querySelector(`#node-${dfId}`).dataset.nodeId = id;
  markOutputs(dfId);
  return dfId;
}

function nodes() {
  const data = editor.export().drawflow.Home.data;
  return Object.values(data).sort((a, b) => Number(a.id) - Number(b.id));
}

function uniqueId(kind) {
  const taken = new Set(nodes().map((n) => n.data.id));
  for (let n = 1; ; n += 1) {
    const id = kind === "trigger" ? "start" : `${kind}-${n}`;
    if (!taken.has(id)) return id;
    if (kind === "trigger") return `start-${n}`;
  }
}

// -- document -> canvas: nodes laid out by their distance from the trigger (the document has no positions) ---------
function load(doc) {
  editor.clear();
  const { nodes: docNodes = [], edges = [], ...rest } = doc || {};
  meta = rest;
  $("wf-id").value = rest.id || "";
  $("wf-version").value = rest.version || 1;
  $("wf-name").value = rest.name || "";
  $("wf-settings").value = rest.settings ? JSON.stringify(rest.settings, null, 2) : "";
  const depth = {};
  const trigger = docNodes.find((n) => n.kind === "trigger");
  if (trigger) {
    depth[trigger.id] = 0;
    for (let round = 0; round < docNodes.length; round += 1) {
      for (const e of edges) {
        if (depth[e.from] !== undefined && depth[e.to] === undefined) depth[e.to] = depth[e.from] + 1;
      }
    }
  }
  const perColumn = {};
  const dfIds = {};
  for (const node of docNodes) {
    const { kind, id, ...config } = node;
    const col = depth[id] ?? 0;
    const row = (perColumn[col] = (perColumn[col] ?? -1) + 1);
    dfIds[id] = addNode(kind, id, config, 30 + col * 230, 30 + row * 130);
  }
  edgeOrder = [];
  for (const e of edges) {
    const when = e.when || "next";
    const source = docNodes.find((n) => n.id === e.from);
    if (!source || dfIds[e.to] === undefined) continue;
    const { kind, id, ...config } = source;
    const index = labelsOf(kind, config).indexOf(when);
    if (index < 0) continue; // the server refuses such a document; it cannot be drawn either
    edgeOrder.push(`${e.from}|${e.to}|${when}`);
    editor.addConnection(dfIds[e.from], dfIds[e.to], `output_${index + 1}`, "input_1");
  }
}

// -- canvas -> document --------------------------------------------------------------------------------------------
function toDocument() {
  const all = nodes();
  const byDf = Object.fromEntries(all.map((n) => [String(n.id), n]));
  const doc = { ...meta, id: $("wf-id").value.trim(), version: Number($("wf-version").value) };
  const name = $("wf-name").value;
  if (name) doc.name = name;
  else delete doc.name;
  const settings = $("wf-settings").value.trim();
  if (settings) doc.settings = JSON.parse(settings);
  else delete doc.settings;
  doc.nodes = all.map((n) => ({ id: n.data.id, kind: n.data.kind, ...n.data.config }));
  const edges = [];
  for (const n of all) {
    const labels = labelsOf(n.data.kind, n.data.config);
    Object.entries(n.outputs).forEach(([out, { connections }]) => {
      const when = labels[Number(out.replace("output_", "")) - 1];
      for (const c of connections) {
        edges.push({ from: n.data.id, to: byDf[String(c.node)].data.id, when });
      }
    });
  }
  const rank = (e) => {
    const i = edgeOrder.indexOf(`${e.from}|${e.to}|${e.when}`);
    return i < 0 ? edgeOrder.length : i;
  };
  edges.sort((a, b) => rank(a) - rank(b));
  doc.edges = edges.map((e) => (e.when === "next" ? { from: e.from, to: e.to } : e));
  return doc;
}

editor.on("connectionCreated", ({ output_id, input_id, output_class }) => {
  const source = editor.getNodeFromId(output_id).data;
  const target = editor.getNodeFromId(input_id).data;
  const when = labelsOf(source.kind, source.config)[Number(output_class.replace("output_", "")) - 1];
  const key = `${source.id}|${target.id}|${when}`;
  if (!edgeOrder.includes(key)) edgeOrder.push(key);
});

// -- the node panel ------------------------------------------------------------------------------------------------
editor.on("nodeSelected", (dfId) => {
  selected = dfId;
  const { kind, id, config } = editor.getNodeFromId(dfId).data;
  $("node-title").textContent = kind;
  $("node-id").value = id;
  $("node-config").value = JSON.stringify(config, null, 2);
});

function show(text, bad) {
  $("result").textContent = text;
  $("result").className = bad ? "bad" : "ok";
}

$("node-apply").addEventListener("click", () => {
  if (selected === null) return show("Select a node on the canvas first.", true);
  const node = editor.getNodeFromId(selected);
  let config;
  try {
    config = JSON.parse($("node-config").value || "{}");
  } catch (err) {
    return show(`node ${node.data.id}: fields are not valid JSON: ${err.message}`, true);
  }
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    return show(`node ${node.data.id}: fields must be a JSON object`, true);
  }
  delete config.kind;
  delete config.id;
  const id = $("node-id").value.trim();
  const old = node.data.id;
  edgeOrder = edgeOrder.map((k) => k.split("|").map((p, i) => (i < 2 && p === old ? id : p)).join("|"));
  editor.updateNodeDataFromId(selected, { kind: node.data.kind, id, config });
  const want = labelsOf(node.data.kind, config).length;
  for (let have = Object.keys(node.outputs).length; have < want; have += 1) editor.addNodeOutput(selected);
  for (let have = Object.keys(node.outputs).length; have > want; have -= 1) {
    editor.removeNodeOutput(selected, `output_${have}`);
  }
  const el = document.querySelector(`#node-${selected}`);
  el.dataset.nodeId = id;
  el.querySelector(".wf-title").textContent = `${node.data.kind}: ${id}`;
  markOutputs(selected);
  show(`node ${id} updated`, false);
});

$("node-delete").addEventListener("click", () => {
  if (selected === null) return show("Select a node on the canvas first.", true);
  editor.removeNodeId(`node-${selected}`);
  selected = null;
  $("node-config").value = "";
  $("node-id").value = "";
});

// -- the palette: press on a kind, release over the canvas (plain mouse events, so a real drag places it) ----------
let dragging = null;
document.querySelectorAll(".wf-kind").forEach((el) => {
  el.addEventListener("mousedown", (ev) => {
    dragging = el.dataset.kind;
    ev.preventDefault();
  });
});
document.addEventListener("mouseup", (ev) => {
  const kind = dragging;
  dragging = null;
  const canvas = $("canvas");
  if (!kind || !canvas.contains(document.elementFromPoint(ev.clientX, ev.clientY))) return;
  const box = editor.precanvas.getBoundingClientRect();
  const x = (ev.clientX - box.x) / editor.zoom;
  const y = (ev.clientY - box.y) / editor.zoom;
  addNode(kind, uniqueId(kind), structuredClone(DEFAULTS[kind] || {}), x, y);
});

// -- server calls: validate, dry run, save (the console's routes: session cookie + CSRF token, JSON answers) -------
async function post(path, fields) {
  const body = new URLSearchParams({ csrf_token: csrf, ...fields });
  const res = await fetch(path, {
    method: "POST",
    body,
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  let data;
  try {
    data = await res.json();
  } catch {
    data = { message: `HTTP ${res.status}` };
  }
  return { ok: res.ok, data };
}

function refused(data) {
  document.querySelectorAll(".drawflow-node.wf-bad").forEach((el) => el.classList.remove("wf-bad"));
  const match = /^node ([^:]+)/.exec(data.key || "");
  if (match) {
    document.querySelectorAll(".drawflow-node").forEach((el) => {
      if (el.dataset.nodeId === match[1]) el.classList.add("wf-bad");
    });
  }
  show(data.message || `${data.key}: ${data.detail}`, true);
}

function documentOrError() {
  try {
    return JSON.stringify(toDocument());
  } catch (err) {
    show(`settings: not valid JSON: ${err.message}`, true);
    return null;
  }
}

// Validate, dry run and save are POSTs behind the admin role: a viewer's page has no such buttons.
$("validate")?.addEventListener("click", async () => {
  const doc = documentOrError();
  if (doc === null) return;
  const { ok, data } = await post("/admin/workflows/validate", { document: doc });
  if (ok) show(`Valid: ${data.id} v${data.version}`, false);
  else refused(data);
});

$("dry-run")?.addEventListener("click", async () => {
  const doc = documentOrError();
  if (doc === null) return;
  const { ok, data } = await post("/admin/workflows/dry-run", { document: doc, message: $("sample").value });
  $("steps").replaceChildren();
  if (!ok) return refused(data);
  show(`Answer: ${data.answer}`, false);
  for (const step of data.steps) {
    const li = document.createElement("li");
    li.className = "wf-step";
    li.dataset.node = step.node;
    li.textContent = `${step.node} (${step.kind}) -> ${step.label}: ${JSON.stringify(step.outputs)}`;
    $("steps").append(li);
  }
});

const saveButton = $("save-canvas");
if (saveButton) {
  saveButton.addEventListener("click", async () => {
    const doc = documentOrError();
    if (doc === null) return;
    const { ok, data } = await post("/admin/workflows/save", { document: doc });
    if (ok) window.location.assign(data.url);
    else refused(data);
  });
}

load(loaded);
window.workflowEditor = { toDocument, editor }; // for the browser test's round-trip check
