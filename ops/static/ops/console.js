// The ops console's first screen, kept fresh without a reload: every few seconds it asks
// /ops/live/ for the same data the server rendered the page from (ops.presenters) and
// redraws each region. Polling pauses while the tab is hidden, like Sidekiq's dashboard.
// Data reaches the DOM through textContent and createElement only, never as parsed HTML.

const root = document.getElementById("ops-console");
const LIVE_URL = root.dataset.liveUrl;
const POLL_MS = Number(root.dataset.pollMs) || 5000;
const PLACEHOLDER = "00000000-0000-0000-0000-000000000000";
const SVG_NS = "http://www.w3.org/2000/svg";

function urlFor(template, id) {
  return template.replace(PLACEHOLDER, encodeURIComponent(id));
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "className") node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function cell(content, className) {
  return el("td", className ? { className } : {}, content);
}

function emptyRow(columns, text) {
  return el("tr", { className: "empty" }, el("td", { colspan: columns }, text));
}

// Each cell carries its column's name, which phones show beside the value (ops.css).
function fill(container, rows) {
  const table = container.closest("table");
  const headings = table ? [...table.querySelectorAll("thead th")].map((th) => th.textContent) : [];
  for (const row of rows) {
    if (row.classList.contains("empty")) continue;
    [...row.children].forEach((td, index) => {
      if (headings[index]) td.dataset.label = headings[index];
    });
  }
  container.replaceChildren(...rows);
}

function stateBadge(state) {
  return el("span", { className: `state state-${state}` }, state);
}

function renderSummary(summary) {
  for (const node of root.querySelectorAll("[data-summary]")) {
    const value = summary[node.dataset.summary];
    if (value !== undefined) node.textContent = String(value);
  }
  document.getElementById("stat-errors").classList.toggle("stat-bad", summary.errorsLastHour > 0);
}

function renderWorkers(workers) {
  const rows = workers.map((w) => {
    const row = el(
      "tr",
      { className: `worker worker-${w.state}`, "data-worker-id": w.id },
      cell(stateBadge(w.state)),
      cell(w.pid),
      cell(w.host),
      cell(w.connections, "num"),
      cell(w.memory, "num"),
      cell(w.uptime),
      cell(el("time", { datetime: w.lastSeen }, w.lastSeenAgo)),
    );
    return row;
  });
  fill(document.getElementById("workers-body"), rows.length ? rows : [emptyRow(7, "No process has reported a heartbeat yet.")]);
}

function renderChart(chart) {
  const bars = chart.bars.map((bar) => {
    const rect = document.createElementNS(SVG_NS, "rect");
    for (const name of ["x", "y", "width", "height"]) rect.setAttribute(name, String(bar[name]));
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `${bar.label}: ${bar.count}`;
    rect.append(title);
    return rect;
  });
  document.getElementById("chart-bars").replaceChildren(...bars);
  document.getElementById("chart-peak").textContent = String(chart.peak);
}

function sessionLink(id, title) {
  return el("a", { href: urlFor(root.dataset.sessionUrl, id) }, title);
}

function renderSessions(sessions) {
  const rows = sessions.map((s) =>
    el(
      "tr",
      { "data-session-id": s.id },
      cell(sessionLink(s.id, s.title)),
      cell(s.subscribers, "num"),
      cell(s.users),
      cell(s.historySize, "num"),
      cell(s.lastEventId, "num"),
    ),
  );
  fill(document.getElementById("sessions-body"), rows.length ? rows : [emptyRow(5, "No session has an open stream.")]);
}

function progressBar(progress) {
  const fillSpan = el("span");
  fillSpan.style.width = `${Math.max(0, Math.min(100, Number(progress) || 0))}%`;
  const bar = el(
    "div",
    { className: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": progress },
    fillSpan,
  );
  return [bar, el("span", { className: "bar-text" }, `${progress}%`)];
}

function renderRegenerations(regenerations) {
  const consoleUrl = window.location.pathname;
  const rows = regenerations.map((r) => {
    const progressCell = el("td");
    progressCell.append(...progressBar(r.progress));
    const cancel = el(
      "a",
      { className: "button button-small", href: `${urlFor(root.dataset.cancelUrl, r.id)}?next=${encodeURIComponent(consoleUrl)}` },
      "Cancel…",
    );
    return el(
      "tr",
      { "data-regeneration-id": r.id },
      cell(sessionLink(r.sessionId, r.sessionTitle)),
      cell(stateBadge(r.status)),
      progressCell,
      cell(r.requestedBy),
      cell(r.age),
      cell(r.worker, "mono"),
      cell(cancel),
    );
  });
  fill(document.getElementById("regenerations-body"), rows.length ? rows : [emptyRow(7, "Nothing running or queued.")]);
}

function renderErrors(errors) {
  const items = errors.map((e) => {
    const item = el("li", {}, el("time", { datetime: e.at }, e.when), " ", el("span", { className: "source" }, e.source), " ");
    if (e.sessionId) item.append(sessionLink(e.sessionId, e.sessionTitle), " ");
    item.append(el("span", { className: "error-text" }, e.message));
    return item;
  });
  fill(document.getElementById("errors-list"), items.length ? items : [el("li", { className: "empty" }, "No errors in the last day.")]);
}

function render(live) {
  renderSummary(live.summary);
  renderWorkers(live.workers);
  renderChart(live.chart);
  renderSessions(live.sessions);
  renderRegenerations(live.regenerations);
  renderErrors(live.errors);
  const generated = document.getElementById("ops-generated");
  generated.setAttribute("datetime", live.generatedAt);
  generated.textContent = new Date(live.generatedAt).toLocaleTimeString();
}

function setStatus(state, text) {
  const badge = document.getElementById("ops-status");
  badge.className = `badge badge-${state}`;
  badge.textContent = text;
}

let timer = null;
let polling = false;

async function poll() {
  timer = null;
  if (polling) return;
  polling = true;
  try {
    const response = await fetch(LIVE_URL, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    setStatus("live", "live");
  } catch (error) {
    setStatus("offline", "not updating");
    console.warn("ops console: refresh failed", error);
  } finally {
    polling = false;
    schedule();
  }
}

function schedule() {
  if (document.hidden || timer !== null) return;
  timer = setTimeout(poll, POLL_MS);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    clearTimeout(timer);
    timer = null;
    setStatus("paused", "paused");
  } else {
    poll();
  }
});

// The server rendered the first paint; show its time in the reader's clock, then go on.
const generated = document.getElementById("ops-generated");
generated.textContent = new Date(generated.getAttribute("datetime")).toLocaleTimeString();
root.dataset.ready = "true";
schedule();
