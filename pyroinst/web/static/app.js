// The pyroinst dashboard: the device table, a device's view, a job's live view.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const view = $("#view");
let cleanups = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function banner(text) {
  const b = $("#banner");
  b.hidden = !text;
  b.textContent = text || "";
}

class ApiError extends Error {
  constructor(status, kind, message) { super(message); this.status = status; this.kind = kind; }
}

async function api(path, options = {}) {
  const response = await fetch("/api" + path, {
    credentials: "same-origin",
    ...options,
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
  });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    if (response.status === 401) showLogin();
    throw new ApiError(response.status, body && body.error, (body && body.message) || response.statusText);
  }
  return { status: response.status, body };
}

function showLogin() {
  if (location.pathname !== "/login") location.href = "/login";
}

function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { /* shown by fn */ }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  cleanups.push(() => { stopped = true; clearTimeout(timer); });
}

function events(url, handlers, onState) {
  const source = new EventSource(url);
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  }
  source.onerror = () => onState && onState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  source.onopen = () => onState && onState("open");
  cleanups.push(() => source.close());
  return source;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, seconds);
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function elapsed(status) {
  if (!status.started) return status.state === "queued" ? "queued" : "";
  const end = status.finished || Date.now() / 1000;
  return ago(end - status.started);
}

function progressBar(status) {
  const pct = Math.round((status.progress || 0) * 100);
  return el("div", { class: "progress", dataset: { value: String(pct), state: status.state } },
    el("div", { class: "fill " + status.state, style: `width:${pct}%` }),
    el("span", {}, `${pct} %`));
}

function encode(value) { return encodeURIComponent(value); }

// -- the device table ----------------------------------------------------------------------
function listView() {
  setCrumbs([]);
  const body = el("tbody");
  const table = el("table", { id: "devices" },
    el("thead", {}, el("tr", {}, ["device", "alive", "class", "host", "reserved by"].map((h) => el("th", {}, h)))),
    body);
  const note = el("p", { class: "note", id: "list-note" }, "asking the name server…");
  view.replaceChildren(el("h1", {}, "Devices"), note, table);
  every(2000, async () => {
    let devices;
    try {
      devices = (await api("/devices")).body;
    } catch (e) {
      note.textContent = e.status === 502 ? "name server unreachable: " + e.message : e.message;
      note.className = "note problem";
      banner(e.status === 502 ? "name server unreachable; retrying" : "");
      return;
    }
    banner("");
    note.className = "note";
    note.textContent = `${devices.length} device(s); updated ${new Date().toLocaleTimeString()}`;
    body.replaceChildren(...devices.map((d) => {
      const r = d.reservation;
      return el("tr", { dataset: { name: d.name, alive: String(d.alive) } },
        el("td", {}, el("a", { href: `#/device/${encode(d.name)}` }, d.name)),
        el("td", { class: d.alive ? "ok" : "bad" }, d.alive ? "yes" : `no (${d.reason || "?"})`),
        el("td", {}, d.class || ""),
        el("td", {}, d.host || ""),
        el("td", {}, r ? `${r.owner} (${ago(r.remaining_s)} left)` : ""));
    }));
  });
}

// -- a device -----------------------------------------------------------------------------
function parseValue(text) {
  const t = text.trim();
  if (t === "True") return true;
  if (t === "False") return false;
  if (t === "None") return null;
  try { return JSON.parse(t); } catch (e) { return text; }
}

function methodForm(name, method, onJob) {
  const inputs = [];
  const fields = method.parameters.filter((p) => !p.kind.startsWith("var_")).map((p) => {
    const input = el("input", {
      name: p.name, placeholder: p.default !== null ? p.default : (p.annotation || "value"),
      dataset: { kind: p.kind },
    });
    inputs.push([p, input]);
    return el("label", {}, p.name + (p.annotation ? `: ${p.annotation}` : ""), input);
  });
  const out = el("pre", { class: "result", hidden: true });
  const button = el("button", { type: "submit" }, method.job ? "start job" : "call");
  const form = el("form", { class: "method", dataset: { method: method.name } },
    el("div", { class: "signature" }, el("code", {}, method.signature), method.job ? el("span", { class: "tag" }, "job") : null),
    el("div", { class: "doc" }, method.summary || ""),
    el("div", { class: "fields" }, fields, button), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const args = [], kwargs = {};
    let gap = false;
    for (const [p, input] of inputs) {
      if (input.value === "") { gap = true; continue; }
      const value = parseValue(input.value);
      if (p.kind === "keyword" || gap) kwargs[p.name] = value;
      else args.push(value);
    }
    button.disabled = true;
    out.hidden = false;
    out.className = "result";
    out.textContent = method.job ? "starting…" : "calling…";
    try {
      const { status, body } = await api(`/devices/${encode(name)}/${encode(method.name)}`,
        { method: "POST", body: JSON.stringify({ args, kwargs }) });
      if (status === 202) {
        out.replaceChildren("job ", el("a", { href: `#/job/${encode(name)}/${body.id}` }, body.id), " started");
        onJob(body);
      } else {
        out.textContent = JSON.stringify(body.result, null, 2);
      }
    } catch (e) {
      out.className = "result problem";
      out.textContent = `${e.kind || "error"}: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function jobRow(name, job, refresh) {
  const active = job.state === "queued" || job.state === "running";
  const base = `/api/devices/${encode(name)}/jobs/${job.id}`;
  return el("tr", { dataset: { job: job.id, state: job.state } },
    el("td", {}, el("a", { href: `#/job/${encode(name)}/${job.id}` }, job.id)),
    el("td", {}, job.method + "(" + (job.args || "") + ")"),
    el("td", { class: "state" }, job.state),
    el("td", {}, progressBar(job)),
    el("td", {}, elapsed(job)),
    el("td", {}, active
      ? el("button", { class: "cancel", onclick: async () => { await api(`/devices/${encode(name)}/jobs/${job.id}/cancel`, { method: "POST" }); refresh(); } }, "cancel")
      : job.state === "done"
        ? [el("a", { href: base + "/result?format=npy", download: "" }, ".npy"), " ", el("a", { href: base + "/result?format=csv", download: "" }, ".csv")]
        : (job.error || "")));
}

// A channel's trend: its recent history (what the server keeps), then live values.
function channelTrend(name, c) {
  const MAX = 2000;
  const value = el("span", { class: "value", dataset: { channel: c.name } }, "…");
  const when = el("span", { class: "when" });
  const box = el("div", { class: "trend", dataset: { channel: c.name, points: "0" } });
  const times = [], ys = [];
  let line = null, pendingDraw = false;
  const draw = () => {
    pendingDraw = false;
    if (ys.length < 2) return;
    if (!line) line = new Plot.Line(box, c.name, { time: true, height: 160 });
    line.draw(times, ys);
  };
  const add = (t, v) => {
    value.textContent = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
    when.textContent = new Date(t * 1000).toLocaleTimeString();
    if (typeof v !== "number") return;
    times.push(t); ys.push(v);
    if (ys.length > MAX) { times.shift(); ys.shift(); }
    box.dataset.points = String(ys.length);
    if (!pendingDraw) { pendingDraw = true; requestAnimationFrame(draw); }
  };
  api(`/devices/${encode(name)}/channels/${encode(c.name)}/history?count=500`).then(({ body }) => {
    for (const [t, v] of body.items) add(t, v);
  }).catch(() => {}).finally(() => {
    events(`/api/devices/${encode(name)}/channels/${encode(c.name)}/events`, {
      item: (item) => add(item.time, item.value),
    }, (state) => { if (state === "reconnecting") when.textContent = "reconnecting…"; });
  });
  return el("div", { class: "channel" }, el("code", {}, c.name), " ", value, " ", when, box);
}

function deviceView(name) {
  setCrumbs([[name, `#/device/${encode(name)}`]]);
  const head = el("div", { class: "device-head" }, el("h1", {}, name), el("p", { class: "note" }, "loading…"));
  const jobsBody = el("tbody");
  const jobsTable = el("table", { id: "jobs" },
    el("thead", {}, el("tr", {}, ["job", "method", "state", "progress", "elapsed", ""].map((h) => el("th", {}, h)))), jobsBody);
  const methods = el("section", { id: "methods" });
  const channels = el("section", { id: "channels" });
  view.replaceChildren(head, methods, el("h2", {}, "Jobs"), jobsTable, channels);
  const refreshJobs = async () => {
    try {
      const jobs = (await api(`/devices/${encode(name)}/jobs`)).body.slice(0, 20);
      jobsBody.replaceChildren(...jobs.map((j) => jobRow(name, j, refreshJobs)));
      banner("");
    } catch (e) {
      banner(`${name}: ${e.message}; retrying`);
    }
  };
  let loaded = false;
  const load = async () => {
    let d;
    try {
      d = (await api(`/devices/${encode(name)}`)).body;
    } catch (e) {
      head.querySelector(".note").textContent = e.message;
      banner(`${name}: ${e.message}; retrying`);
      return;
    }
    if (loaded) return;
    loaded = true;
    const r = d.reservation;
    head.replaceChildren(el("h1", {}, name),
      el("p", { class: "class" }, d.class),
      el("pre", { class: "docstring" }, d.doc || ""),
      el("p", { class: "note" }, r ? `reserved by ${r.owner} (${ago(r.remaining_s)} left)` : "not reserved"));
    methods.replaceChildren(el("h2", {}, "Methods"),
      ...d.methods.filter((m) => !m.monitor).map((m) => methodForm(name, m, refreshJobs)));
    if (d.properties.length) {
      methods.append(el("h2", {}, "Properties"),
        el("ul", { class: "properties" }, d.properties.map((p) => el("li", {}, el("code", {}, p.name), " = ",
          el("span", { class: "value", dataset: { property: p.name } }, "…"),
          p.writable ? " (read/write) " : " (read) ", p.doc))));
    }
    if ((d.parameters || []).length) {
      methods.append(el("h2", {}, "Parameters"),
        el("ul", { class: "parameters" }, d.parameters.map((p) => el("li", {}, el("code", {}, p.path), " = ",
          el("span", { class: "value", dataset: { parameter: p.path } }, "…"), " ",
          el("span", { class: "unit" }, p.unit || ""), p.label ? ` (${p.label})` : ""))));
    }
    channels.replaceChildren(d.channels.length ? el("h2", {}, "Channels") : "",
      ...d.channels.map((c) => channelTrend(name, c)));
    showValues(d);
  };
  const showValues = (d) => {
    for (const p of d.properties || []) {
      const cell = values.querySelector(`[data-property="${CSS.escape(p.name)}"]`);
      const v = (d.values || {})[p.name];
      if (cell) cell.textContent = v && typeof v === "object" ? JSON.stringify(v) : String(v);
    }
    for (const p of d.parameters || []) {
      const cell = values.querySelector(`[data-parameter="${CSS.escape(p.path)}"]`);
      const v = p.value;
      if (cell) cell.textContent = v === undefined ? "(not readable)" : v && typeof v === "object" ? JSON.stringify(v) : String(v);
    }
  };
  const values = methods;
  every(2000, async () => {
    if (!loaded) return;
    try { showValues((await api(`/devices/${encode(name)}`)).body); } catch (e) { /* shown by load */ }
  });
  every(3000, async () => { if (!loaded) await load(); });
  every(1000, refreshJobs);
}

// -- a job --------------------------------------------------------------------------------
function jobView(name, id) {
  setCrumbs([[name, `#/device/${encode(name)}`], [id, `#/job/${encode(name)}/${id}`]]);
  const base = `/devices/${encode(name)}/jobs/${id}`;
  const state = el("span", { id: "job-state" }, "…");
  const bar = el("div", { id: "job-progress" }, progressBar({ progress: 0, state: "queued" }));
  const message = el("span", { class: "message" });
  const time = el("span", { class: "elapsed" });
  const cancel = el("button", { id: "job-cancel", onclick: () => api(base + "/cancel", { method: "POST" }) }, "cancel");
  const downloads = el("span", { class: "downloads" });
  const plotBox = el("div", { id: "plot", dataset: { drawn: "0", skipped: "0", kind: "" } });
  const stats = el("p", { class: "note", id: "plot-stats" }, "no items yet");
  view.replaceChildren(el("h1", {}, `Job ${id}`),
    el("div", { class: "job-head" }, state, bar, time, message, cancel, downloads), plotBox, stats);

  // 1-D items accumulate into one growing trace (x: the item's own "x" if it publishes
  // one, else the running index), at most MAX_POINTS drawn (halved by taking every second
  // point when full); "newest item only" draws each item alone (frames, spectra).
  const MAX_POINTS = 20000;
  const newestOnly = el("input", { type: "checkbox", id: "newest-only" });
  plotBox.before(el("label", { class: "toggle" }, newestOnly, " newest item only"));
  let status = null, received = 0, drawn = 0, busy = false, plot = null, step = 1, counter = 0;
  const trace = { x: [], y: [], next: 0 };
  const pending = [];  // item indexes of arrays to fetch, in order
  const started = performance.now();
  const update = (s) => {
    status = s;
    state.textContent = s.state;
    state.className = s.state;
    bar.replaceChildren(progressBar(s));
    message.textContent = s.message || s.error || "";
    time.textContent = elapsed(s);
    cancel.hidden = !(s.state === "queued" || s.state === "running");
    if (s.state === "done" && !downloads.childElementCount) {
      downloads.append(el("a", { href: "/api" + base + "/result?format=npy", download: "" }, "result .npy"), " ",
        el("a", { href: "/api" + base + "/result?format=csv", download: "" }, ".csv"));
    }
  };
  const showStats = () => {
    const skipped = Math.max(0, received - drawn);
    plotBox.dataset.drawn = String(drawn);
    plotBox.dataset.skipped = String(skipped);
    plotBox.dataset.points = String(trace.next);
    const seconds = (performance.now() - started) / 1000;
    stats.textContent = `items ${received}, drawn ${drawn}, skipped ${skipped}, points ${trace.next} (${(drawn / seconds).toFixed(1)} draws/s)`;
  };
  const ensure = (kind) => {
    if (plotBox.dataset.kind === kind) return;
    if (plot) plot.destroy();
    plotBox.replaceChildren();
    plot = kind === "image" ? new Plot.Image(plotBox) : new Plot.Line(plotBox, name);
    plotBox.dataset.kind = kind;
  };
  const append = (xs, ys) => {
    for (let i = 0; i < ys.length; i++) {
      const x = xs ? xs[i] : trace.next;
      trace.next++;
      if (counter++ % step) continue;
      trace.x.push(x);
      trace.y.push(ys[i]);
    }
    if (trace.y.length > MAX_POINTS) {  // decimate: every second point, and from now on
      trace.x = trace.x.filter((_, i) => i % 2 === 0);
      trace.y = trace.y.filter((_, i) => i % 2 === 0);
      step *= 2;
    }
  };
  let drawPending = false;
  const drawTrace = () => {
    drawPending = false;
    ensure("line");
    plot.draw(trace.x, trace.y);
    showStats();
  };
  const redraw = () => { if (!drawPending) { drawPending = true; requestAnimationFrame(drawTrace); } };
  const fetchNext = async () => {
    if (busy || !pending.length) return;
    busy = true;
    // Newest only: skip to the latest item; a trace needs every one, in order.
    const index = newestOnly.checked ? pending.splice(0).pop() : pending.shift();
    try {
      const response = await fetch(`/api${base}/items/${index}?format=npy`, { credentials: "same-origin" });
      if (response.ok) {
        const a = NPY.parse(await response.arrayBuffer());
        if (a.shape.length === 2) {
          ensure("image");
          plot.draw(a.data, a.shape[0], a.shape[1]);
        } else if (newestOnly.checked) {
          ensure("line");
          plot.draw(Array.from({ length: a.data.length }, (_, i) => i), Array.from(a.data));
        } else {
          append(null, Array.from(a.data));
          redraw();
        }
        drawn++;
      }
    } catch (e) {
      /* an item no longer kept: the next one */
    } finally {
      busy = false;
      showStats();
      if (pending.length) fetchNext();
    }
  };
  const numbers = (v) => typeof v === "number" ? [v] : v && Array.isArray(v.data) && v.shape && v.shape.length <= 1 ? v.data : null;
  const source = events(`/api${base}/events`, {
    status: update,
    end: (s) => { source.close(); update(s); showStats(); banner(""); },
    item: (item) => {
      received++;
      const v = item.value;
      const inline = numbers(v);
      const xy = v && typeof v === "object" && !v.shape && "x" in v && "y" in v ? [numbers(v.x), numbers(v.y)] : null;
      if (xy && xy[0] && xy[1] && xy[0].length === xy[1].length) {
        append(xy[0], xy[1]); drawn++; redraw();
      } else if (inline && !newestOnly.checked) {
        append(null, inline); drawn++; redraw();
      } else if (v && v.shape && v.shape.length >= 1 && v.shape.length <= 2) {
        pending.push(item.index);
        fetchNext();
      } else {
        drawn++;
        stats.textContent = JSON.stringify(v);
      }
    },
  }, (s) => banner(s === "reconnecting" ? "job events: connection lost, reconnecting…" : ""));
  every(1000, async () => { if (status) time.textContent = elapsed(status); });
}

// -- routing ------------------------------------------------------------------------------
function setCrumbs(parts) {
  $("#crumbs").replaceChildren(...parts.flatMap(([text, href]) => [" / ", el("a", { href }, text)]));
}

function route() {
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
  banner("");
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "device" && parts[1]) deviceView(parts[1]);
  else if (parts[0] === "job" && parts[1] && parts[2]) jobView(parts[1], parts[2]);
  else listView();
}

window.addEventListener("hashchange", route);
route();
