// The grserve demo page's script: a client of the public API, nothing more (server/demo.py).
// Titles come from the catalog, which admins edit: they are only ever set as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const GR_KIND = "generative-recommendation";
const WINDOW_MS = 10000;  // the live panel's window
const POLL_MS = 2000;

const state = {
  models: [], model: null, key: sessionStorage.getItem("grserve-api-key") || "",
  history: [], exclude: [], allow: [],
  known: new Map(),  // item id -> {title, semantic_id}, for the chips
  searchSeq: 0, recSeq: 0, samples: [],
};

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// One API call: JSON in and out, the API key when one was given; an error answer throws its message.
async function api(path, body) {
  const headers = {};
  if (state.key) headers.authorization = "Bearer " + state.key;
  const init = {headers};
  if (body !== undefined) {
    Object.assign(init, {method: "POST", body: JSON.stringify(body)});
    headers["content-type"] = "application/json";
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) $("key-pick").hidden = false;
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return data;
}

function several() { return state.models.length > 1; }

async function loadModels() {
  const listed = await api("/v1/models");
  state.models = listed.data.filter((m) => m.kind === GR_KIND);
  if (!state.models.length) throw new Error("this server serves no GR model");
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => el("option", {value: m.id, textContent: m.id})));
  $("model-pick").hidden = !several();
  if (!state.models.some((m) => m.id === state.model)) state.model = state.models[0].id;
  select.value = state.model;
  showModel();
}

function currentModel() { return state.models.find((m) => m.id === state.model); }

function showModel() {
  const m = currentModel();
  $("model-info").textContent = `${m.id} · catalog v${m.catalog_version}, ${m.catalog_live_items} of `
    + `${m.catalog_size} items available`;
  const widths = [];
  for (let w = 1; w <= m.max_beam_width; w *= 2) widths.push(w);
  const beam = $("beam-width");
  const previous = Number(beam.value) || 64;
  beam.replaceChildren(...widths.map((w) => el("option", {value: w, textContent: w})));
  beam.value = widths.includes(previous) ? previous : widths[widths.length - 1];
}

function remember(item) { state.known.set(item.item_id, {title: item.title, semantic_id: item.semantic_id}); }

function label(id) {
  const item = state.known.get(id);
  return item && item.title ? item.title : `item ${id}`;
}

function sid(codes) { return "[" + codes.join(", ") + "]"; }

function addTo(list, id) {
  if (list === state.history || !list.includes(id)) list.push(id);
  renderChips();
  recommendSoon();
}

function actions(item) {
  const add = el("button", {type: "button", textContent: "+", title: "add to the history"});
  const ex = el("button", {type: "button", textContent: "exclude", title: "never recommend it"});
  const al = el("button", {type: "button", textContent: "allow", title: "recommend only allowed items"});
  add.dataset.action = "history";
  ex.dataset.action = "exclude";
  al.dataset.action = "allow";
  add.onclick = (e) => { e.stopPropagation(); addTo(state.history, item.item_id); };
  ex.onclick = (e) => { e.stopPropagation(); addTo(state.exclude, item.item_id); };
  al.onclick = (e) => { e.stopPropagation(); addTo(state.allow, item.item_id); };
  return el("span", {className: "actions"}, add, ex, al);
}

async function search() {
  const q = $("search").value.trim();
  const seq = ++state.searchSeq;
  const list = $("search-results");
  if (!q) { list.replaceChildren(); list.dataset.query = ""; return; }
  const params = new URLSearchParams({q, limit: "20"});
  if (several()) params.set("model", state.model);
  try {
    const found = await api("/v1/catalog/search?" + params);
    if (seq !== state.searchSeq) return;  // a newer search was typed meanwhile
    found.data.forEach(remember);
    list.replaceChildren(...found.data.map(searchRow));
    list.dataset.query = found.query;
    $("search-info").textContent = found.data.length
      ? `${found.data.length}${found.more ? "+" : ""} items (catalog v${found.catalog_version}); click to add`
      : `nothing matches "${found.query}"`;
  } catch (e) {
    if (seq === state.searchSeq) $("search-info").textContent = e.message;
  }
}

function searchRow(item) {
  const text = el("span", {className: "text"},
    el("span", {className: "title", textContent: item.title || "(no title)"}),
    el("span", {className: "meta", textContent: ` #${item.item_id} ${sid(item.semantic_id)}`}),
    item.available ? "" : el("span", {className: "tag", textContent: "disabled"}));
  const row = el("li", {title: "add to the history"}, text, actions(item));
  row.dataset.itemId = item.item_id;
  row.onclick = () => addTo(state.history, item.item_id);
  return row;
}

function chip(list, id, index) {
  const remove = el("button", {type: "button", textContent: "×", title: "remove"});
  remove.onclick = () => { list.splice(index, 1); renderChips(); recommendSoon(); };
  const node = el("li", {}, el("span", {textContent: label(id)}), remove);
  node.dataset.itemId = id;
  return node;
}

function renderChips() {
  for (const [name, list] of [["history", state.history], ["exclude", state.exclude], ["allow", state.allow]]) {
    $(name).replaceChildren(...list.map((id, i) => chip(list, id, i)));
  }
}

function requestBody() {
  const body = {
    history: state.history.slice(), top_n: Number($("top-n").value) || 10,
    beam_width: Number($("beam-width").value) || 64, exclude_history: $("exclude-history").checked,
    exclude: state.exclude.slice(),
  };
  if (state.allow.length) body.allow = state.allow.slice();
  if (several()) body.model = state.model;  // only then: a one-model server takes no model field
  return body;
}

async function recommend() {
  const body = requestBody();
  const seq = ++state.recSeq;
  const table = $("recs");
  table.dataset.state = "pending";
  const started = performance.now();
  try {
    const answer = await api("/v1/recommend", body);
    if (seq !== state.recSeq) return;  // the history changed meanwhile: only the newest answer is shown
    showAnswer(answer, body, performance.now() - started);
    setStatus("");
  } catch (e) {
    if (seq !== state.recSeq) return;
    table.dataset.state = "error";
    setStatus(e.message, true);
  }
}
const recommendSoon = debounce(recommend, 80);

function showAnswer(answer, body, roundTripMs) {
  answer.items.forEach(remember);
  const rows = answer.items.map((item, i) => {
    const row = el("tr", {},
      el("td", {textContent: String(i + 1)}),
      el("td", {className: "title", textContent: item.title || "(no title)"}),
      el("td", {className: "item", textContent: item.item_id}),
      el("td", {className: "score", textContent: item.score.toFixed(4)}),
      el("td", {className: "sid", textContent: sid(item.semantic_id)}),
      el("td", {}, actions(item)));
    Object.assign(row.dataset, {itemId: item.item_id, score: String(item.score)});
    return row;
  });
  const table = $("recs");
  table.tBodies[0].replaceChildren(...rows);
  const t = answer.timing_ms;
  $("latency").textContent = `${answer.items.length} items · catalog v${answer.catalog_version} · server `
    + `${t.total.toFixed(1)} ms (queue ${t.queue.toFixed(1)}, compute ${t.compute.toFixed(1)}) · round trip `
    + `${roundTripMs.toFixed(1)} ms · beam width ${body.beam_width}`;
  $("warnings").textContent = answer.warnings.join("; ");
  table.dataset.request = JSON.stringify(body);  // what this answer is for: a test re-asks the API with it
  table.dataset.state = "done";
}

// --- the live panel: /metrics, parsed as Prometheus text, differenced over the last WINDOW_MS ---

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([^\s{]+)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    samples.push({name: m[1], labels, value: Number(m[3])});
  }
  return samples;
}

function total(samples, name) {
  return samples.filter((s) => s.name === name).reduce((sum, s) => sum + s.value, 0);
}

// Cumulative buckets [[le, count], ...] summed over every series (every model, where labelled).
function buckets(samples, name) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== name + "_bucket") continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
}

// Prometheus' histogram_quantile over cumulative buckets: linear within the bucket the rank falls in.
function quantile(q, cumulative) {
  if (!cumulative.length) return NaN;
  const count = cumulative[cumulative.length - 1][1];
  if (!(count > 0)) return NaN;
  const rank = q * count;
  let i = cumulative.findIndex(([, c]) => c >= rank);
  if (i < 0) i = cumulative.length - 1;
  const [upper, upperCount] = cumulative[i];
  if (upper === Infinity) return i > 0 ? cumulative[i - 1][0] : NaN;
  const [lower, lowerCount] = i > 0 ? cumulative[i - 1] : [0, 0];
  if (upperCount === lowerCount) return upper;
  return lower + (upper - lower) * (rank - lowerCount) / (upperCount - lowerCount);
}

function ms(seconds) { return Number.isFinite(seconds) ? (1000 * seconds).toFixed(1) + " ms" : "–"; }

function showLive(now, base, samples) {
  const seconds = (now.t - base.t) / 1000;
  const before = new Map(base.buckets);
  const delta = now.buckets.map(([le, c]) => [le, c - (before.get(le) || 0)]);
  $("live-rate").textContent = seconds > 0 ? ((now.count - base.count) / seconds).toFixed(1) : "–";
  $("live-refused").textContent = seconds > 0 ? ((now.refused - base.refused) / seconds).toFixed(1) : "–";
  $("live-p50").textContent = ms(quantile(0.5, delta));
  $("live-p99").textContent = ms(quantile(0.99, delta));
  $("live-waiting").textContent = String(total(samples, "grserve:num_requests_waiting"));
  $("live-running").textContent = String(total(samples, "grserve:num_requests_running"));
  $("live-total").textContent = String(now.count);
}

async function pollMetrics() {
  try {
    const response = await fetch("/metrics");
    const samples = parseMetrics(await response.text());
    const e2e = "grserve:e2e_request_latency_seconds";
    const now = {t: performance.now(), buckets: buckets(samples, e2e), count: total(samples, e2e + "_count"),
                 refused: total(samples, "grserve:requests_rejected_total")};
    state.samples = state.samples.filter((s) => now.t - s.t <= WINDOW_MS);
    showLive(now, state.samples[0] || now, samples);
    state.samples.push(now);
  } catch (e) {
    $("live-rate").textContent = "–";
  }
}

function wire() {
  $("search").addEventListener("input", debounce(search, 150));
  $("clear-history").onclick = () => { state.history.length = 0; renderChips(); recommendSoon(); };
  for (const id of ["top-n", "beam-width", "exclude-history"]) $(id).addEventListener("change", recommendSoon);
  $("model").onchange = () => {
    state.model = $("model").value;
    state.history.length = state.exclude.length = state.allow.length = 0;  // ids are the model's catalog's
    showModel(); renderChips(); search(); recommendSoon();
  };
  $("api-key").value = state.key;
  $("api-key").onchange = () => {
    state.key = $("api-key").value;
    sessionStorage.setItem("grserve-api-key", state.key);
    start();
  };
}

async function start() {
  try {
    await loadModels();
    setStatus("");
    await recommend();
  } catch (e) {
    $("model-info").textContent = "";
    setStatus(e.message, true);
  }
}

window.GRDemo = {quantile, parseMetrics, buckets, state};  // for tests and the curious, in the console
wire();
start();
pollMetrics();
setInterval(pollMetrics, POLL_MS);
