// A federation server's run: its evaluation per round, each site's curve, how each round's global model did at
// each site (heatmap), and the table of who returned what when (failures in red).

import { colour, LineChart } from "./charts.js";
import { clear, el, fixed } from "./dom.js";

const SERVER = [
  ["val_auroc", "AUROC"],
  ["val_recall", "sensitivity"],
  ["val_specificity", "specificity"],
];

function heatColour(value) {
  // 0.5 (chance) red -> 1.0 green
  const t = Math.max(0, Math.min(1, (value - 0.5) / 0.5));
  const r = Math.round(220 - 160 * t);
  const g = Math.round(80 + 120 * t);
  return `rgb(${r}, ${g}, 90)`;
}

export class FederationView {
  constructor(root, snapshot) {
    this.charts = [];
    this.roundStarted = new Map();
    this.replies = new Map(); // "round|site" -> reply (a replayed event replaces, never duplicates)
    this.sites = new Map(); // name -> index in the site chart
    const federation = snapshot.federation || { rounds: [], replies: [] };
    const grid = el("div", { class: "grid", id: "federation-charts" });
    root.append(grid);
    this.privacy = el("p", { id: "privacy-live", class: "muted" });
    root.append(this.privacy);
    this.server = new LineChart(this.card("Server evaluation (held-out set) per round", grid), SERVER.map(([, l]) => ({ label: l })), {
      xLabel: "round",
      wholeX: true,
      yRange: [0, 1],
    });
    const trained = federation.replies.filter((r) => r.metrics?.train_loss !== undefined);
    this.siteNames = [...new Set(trained.map((r) => r.site_name))].sort();
    this.siteLoss = new Map(); // site -> Map(round -> training loss)
    this.siteBox = this.card("Each site's training loss per round", grid);
    this.siteChart = null;
    this.buildSiteChart();
    this.heatBox = this.card("Global model's AUROC on each site's images", grid);
    this.charts.push(this.server);
    this.table = el(
      "table",
      { id: "site-replies" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["Round", "Site", "Returned after (s)", "Training (s)", "Waiting (s)", "Worker start (s)", "Worker memory (MB)", "Images", "To site (MB)", "From site (MB)", "Train loss", "Global AUROC here", "Status"].map((h) =>
            el("th", {}, h),
          ),
        ),
      ),
      el("tbody"),
    );
    // The table scrolls inside its card when the window is narrow; the page itself never scrolls sideways.
    root.append(el("div", { class: "card" }, el("h2", {}, "Who returned what when"), el("div", {}, this.table)));
    for (const row of federation.rounds) {
      if (row.start_time) this.roundStarted.set(row.round_number, Date.parse(row.start_time) / 1000);
      this.roundMetrics(row.round_number, row.server_metrics || {});
    }
    for (const reply of federation.replies) this.reply(reply);
    this.redraw();
  }

  // uPlot's series are fixed when a chart is made: a site seen for the first time rebuilds the chart.
  buildSiteChart() {
    if (this.siteChart) {
      this.charts.splice(this.charts.indexOf(this.siteChart), 1);
      this.siteChart.destroy();
    }
    clear(this.siteBox);
    this.sites = new Map(this.siteNames.map((name, i) => [name, i]));
    this.siteChart = new LineChart(
      this.siteBox,
      this.siteNames.map((name, i) => ({ label: name, colour: colour(i + 3) })),
      { xLabel: "round", wholeX: true },
    );
    for (const [name, losses] of this.siteLoss) {
      for (const [round, loss] of losses) this.siteChart.set(round, this.sites.get(name), loss);
    }
    this.charts.push(this.siteChart);
  }

  card(title, parent) {
    const body = el("div");
    parent.append(el("div", { class: "card" }, el("h2", {}, title), body));
    return body;
  }

  roundMetrics(number, metrics) {
    SERVER.forEach(([key], i) => key in metrics && this.server.set(number, i, metrics[key]));
    if ("dp_epsilon" in metrics) {
      this.privacy.textContent = `Privacy spent after round ${number}: ε = ${fixed(metrics.dp_epsilon, 2)} at δ = ${metrics.dp_delta}`;
    }
  }

  reply(reply) {
    this.replies.set(`${reply.round_number}|${reply.site_id}`, reply);
    const loss = reply.metrics?.train_loss;
    if (loss === undefined) return;
    if (!this.siteLoss.has(reply.site_name)) this.siteLoss.set(reply.site_name, new Map());
    this.siteLoss.get(reply.site_name).set(reply.round_number, loss);
    if (!this.sites.has(reply.site_name)) {
      this.siteNames.push(reply.site_name);
      this.siteNames.sort();
      this.buildSiteChart();
    } else {
      this.siteChart.set(reply.round_number, this.sites.get(reply.site_name), loss);
    }
  }

  handle(event) {
    const data = event.data || {};
    if (event.type === "round_start") {
      this.roundStarted.set(data.round_number, event.timestamp);
    } else if (event.type === "round_metrics") {
      this.roundMetrics(data.round_number, data.server_metrics || {});
    } else if (event.type === "client_update") {
      this.reply({
        round_number: data.round_number,
        site_id: data.client_id,
        site_name: data.client_name || data.client_id, // the event schema (v1) says client
        failed: data.failed,
        error: data.error,
        num_examples: data.num_examples,
        time: event.timestamp,
        metrics: data.metrics || {},
      });
      this.redraw();
    }
  }

  redraw() {
    const rows = [...this.replies.values()].sort((a, b) => a.round_number - b.round_number || a.time - b.time);
    const body = clear(this.table.querySelector("tbody"));
    for (const r of rows) {
      const m = r.metrics || {};
      const started = this.roundStarted.get(r.round_number);
      const returned = m.round_trip_seconds ?? (started ? r.time - started : undefined);
      body.append(
        el(
          "tr",
          { class: r.failed ? "failed" : "" },
          el("td", { class: "num" }, r.round_number),
          el("td", {}, r.site_name),
          el("td", { class: "num" }, fixed(returned, 1)),
          el("td", { class: "num" }, fixed(m.train_seconds, 1)),
          el("td", { class: "num" }, fixed(m.wait_seconds, 1)),
          el("td", { class: "num" }, fixed(m.worker_start_seconds, 1)),
          el("td", { class: "num" }, fixed(m.worker_rss_mb, 0)),
          el("td", { class: "num" }, r.failed ? "" : r.num_examples),
          el("td", { class: "num" }, m.bytes_to_site === undefined ? "" : (m.bytes_to_site / 1e6).toFixed(2)),
          el("td", { class: "num" }, m.bytes_from_site === undefined ? "" : (m.bytes_from_site / 1e6).toFixed(2)),
          el("td", { class: "num" }, fixed(m.train_loss)),
          el("td", { class: "num" }, fixed(m.global_val_auroc)),
          el("td", {}, r.failed ? `FAILED: ${r.error || ""}` : "ok"),
        ),
      );
    }
    this.drawHeatmap(rows);
  }

  drawHeatmap(rows) {
    const rounds = [...new Set(rows.filter((r) => r.metrics?.global_val_auroc !== undefined).map((r) => r.round_number))].sort((a, b) => a - b);
    const table = el("table", { class: "heat", id: "cross-site" });
    table.append(el("tr", {}, el("th", {}, "Site \\ round"), rounds.map((n) => el("th", {}, n))));
    for (const site of [...this.siteNames].sort()) {
      const cells = rounds.map((n) => {
        const reply = rows.find((r) => r.round_number === n && r.site_name === site);
        const value = reply?.metrics?.global_val_auroc;
        return value === undefined
          ? el("td", { class: "cell" }, "")
          : el("td", { class: "cell", style: { background: heatColour(value) }, title: `${site}, round ${n}` }, value.toFixed(2));
      });
      table.append(el("tr", {}, el("th", {}, site), cells));
    }
    clear(this.heatBox).append(table);
  }

  destroy() {
    for (const chart of this.charts) chart.destroy();
    this.charts = [];
  }
}
