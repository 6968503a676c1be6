// PneumoFL in a browser: sign in with the node's viewer token (exchanged once for an HttpOnly session cookie,
// never kept in the URL or in page storage), list every recorded run, open one read-only.

import { clear, duration, el, fixed, when } from "./dom.js";
import { LiveConnection } from "./live.js";
import { RunView } from "./run.js";

const view = document.getElementById("view");
const banner = document.getElementById("banner");
const connection = document.getElementById("connection");
const signOut = document.getElementById("sign-out");
let live = null;
let current = null; // the open RunView
let hubRuns = new Map(); // run id -> hub summary (runs the hub is streaming)

// What tests and the browser benchmark read: the open run view, and hub-to-drawn latencies (ms).
window.pneumofl = { latencies: [], epochLatencies: [], view: null, routeStart: 0, firstDraw: 0 };

function showError(text) {
  banner.textContent = text;
  banner.hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    stopLive();
    signInForm();
    throw new Error("signed out");
  }
  if (!response.ok) {
    const text = await response.text();
    throw new Error(text.trim() || `${response.status} ${response.statusText}`);
  }
  return response.status === 204 ? null : response.json();
}

function signInForm(message = "") {
  signOut.hidden = true;
  connection.textContent = "offline";
  connection.className = "pill";
  const token = el("input", { type: "password", id: "token", autocomplete: "off", required: true });
  const error = el("p", { id: "sign-in-error", class: "warning" }, message);
  const form = el(
    "form",
    { class: "sign-in", id: "sign-in" },
    el("h2", {}, "Sign in"),
    el("p", {}, "Enter the viewer token of this node (pneumofl token show on the node, or Share → Share live view in the app)."),
    el("label", { for: "token" }, "Viewer token"),
    token,
    error,
    el("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const response = await fetch("/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { Authorization: `Bearer ${token.value}` },
    });
    token.value = ""; // the token is not kept anywhere in the page
    if (response.ok) {
      route();
    } else {
      error.textContent = response.status === 401 ? "That token is not this node's viewer token." : await response.text();
    }
  });
  clear(view).append(form);
  token.focus();
}

function startLive() {
  if (live) return;
  live = new LiveConnection({
    onHello: (hello) => {
      hubRuns = new Map((hello.runs || []).map((r) => [r.run_id, r]));
    },
    onEvents: (events) => current && current.handle(events),
    onState: (state) => {
      connection.textContent = state;
      connection.className = state === "live" ? "pill live" : "pill";
    },
  });
}

function stopLive() {
  if (live) live.close();
  live = null;
}

async function runsPage() {
  const mode = el("select", { id: "filter-mode" }, el("option", { value: "" }, "any mode"), el("option", { value: "centralized" }, "centralized"), el("option", { value: "federated" }, "federated"));
  const status = el(
    "select",
    { id: "filter-status" },
    el("option", { value: "" }, "any status"),
    ["in_progress", "completed", "failed", "cancelled", "interrupted"].map((s) => el("option", { value: s }, s)),
  );
  const name = el("input", { id: "filter-name", type: "search", placeholder: "name contains" });
  const table = el("table", { class: "runs", id: "runs" });
  clear(view).append(el("div", { class: "filters" }, el("strong", {}, "Runs"), mode, status, name), table);
  const load = async () => {
    const query = new URLSearchParams();
    if (mode.value) query.set("mode", mode.value);
    if (status.value) query.set("status", status.value);
    if (name.value.trim()) query.set("name", name.value.trim());
    const runs = await api(`/api/runs?${query}`);
    clear(table).append(
      el(
        "tr",
        {},
        ["Run", "Name", "Mode", "Role", "Status", "Started", "Duration", "Best epoch", "Val AUROC", "Sensitivity", "Specificity"].map((h) => el("th", {}, h)),
      ),
    );
    for (const run of runs.runs) {
      const row = el(
        "tr",
        { "data-run": run.id, onclick: () => (location.hash = `#/run/${run.id}`) },
        el("td", { class: "num" }, run.id),
        el("td", {}, run.experiment_name),
        el("td", {}, run.training_mode),
        el("td", {}, run.role),
        el("td", {}, run.status),
        el("td", {}, when(run.start_time)),
        el("td", {}, duration(run.duration)),
        el("td", { class: "num" }, run.best_epoch ?? ""),
        el("td", { class: "num" }, fixed(run.best_val_auroc)),
        el("td", { class: "num" }, fixed(run.best_val_recall)),
        el("td", { class: "num" }, fixed(run.best_val_specificity)),
      );
      table.append(row);
    }
    if (!runs.runs.length) table.append(el("tr", {}, el("td", { colspan: 11 }, "No runs match.")));
  };
  for (const control of [mode, status]) control.addEventListener("change", load);
  name.addEventListener("input", () => {
    clearTimeout(name.timer);
    name.timer = setTimeout(load, 250);
  });
  await load();
}

async function runPage(id) {
  const snapshot = await api(`/api/runs/${id}`);
  clear(view);
  current = new RunView(view, snapshot, live);
  window.pneumofl.view = current;
}

async function route() {
  window.pneumofl.routeStart = performance.now();
  window.pneumofl.firstDraw = 0;
  showError("");
  if (current) {
    current.destroy();
    current = null;
  }
  try {
    const me = await api("/api/session");
    document.getElementById("node").textContent = me.node || "";
    signOut.hidden = false;
    startLive();
    const match = location.hash.match(/^#\/run\/(\d+)$/);
    if (match) await runPage(Number(match[1]));
    else await runsPage();
  } catch (error) {
    if (error.message !== "signed out") showError(error.message);
  }
}

signOut.addEventListener("click", async () => {
  await fetch("/session", { method: "DELETE", credentials: "same-origin" });
  stopLive();
  signInForm();
});
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
