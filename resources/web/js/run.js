// One run: the desktop dashboard's charts, from the database and then live from the hub while it trains.

import { colour, LineChart } from "./charts.js";
import { clear, duration, el, fixed, when, withInterval } from "./dom.js";
import { FederationView } from "./federation.js";

const EPOCH_METRICS = [
  ["loss", "Loss"],
  ["accuracy", "Accuracy"],
  ["recall", "Recall (sensitivity)"],
  ["specificity", "Specificity"],
  ["f1", "F1"],
  ["auroc", "AUROC"],
];
const FINAL_METRICS = [
  ["auroc", "AUROC"],
  ["recall", "Sensitivity"],
  ["specificity", "Specificity"],
  ["precision", "Precision"],
  ["f1", "F1"],
  ["accuracy", "Accuracy"],
];
const POINTS = [
  ["youden", "Youden"],
  ["sens95", "Sens ≥ 0.95"],
  ["spec95", "Spec ≥ 0.95"],
];
const TOP_LAYERS = 5;
const LIVE_MARGIN = 5000; // events replayed from the hub before the snapshot's end (the sink flushes per epoch)

export class RunView {
  constructor(root, snapshot, live) {
    this.root = root;
    this.snapshot = snapshot;
    this.live = live;
    this.run = snapshot.run;
    this.charts = [];
    this.pendingDraw = []; // hub timestamps of live batch points not drawn yet (for the latency benchmark)
    this.pendingEpochs = []; // the same for epochs
    this.render();
  }

  render() {
    const run = this.run;
    clear(this.root);
    this.status = el("span", { class: "pill", id: "run-status" }, run.status);
    this.root.append(
      el(
        "div",
        { class: "run-head" },
        el("h1", {}, `Run ${run.id} · `, el("span", { id: "run-name" }, run.experiment_name)),
        this.status,
        el("span", { class: "muted" }, `${run.training_mode} · ${run.role} · started ${when(run.start_time)}`),
        run.duration ? el("span", { class: "muted" }, `took ${duration(run.duration)}`) : null,
        el("a", { href: "#/runs" }, "All runs"),
      ),
    );
    if (run.error_message) this.root.append(el("p", { class: "warning" }, run.error_message));
    if (run.role === "server") {
      this.federation = new FederationView(this.root, this.snapshot);
    } else {
      this.renderEpochs();
      this.renderBatches();
    }
    this.finalBox = el("div", { class: "grid" });
    this.root.append(this.finalBox);
    this.renderFinal(this.snapshot.final_stats || {}, this.snapshot.roc);
    this.follow();
  }

  card(title, parent, wide = false) {
    const body = el("div");
    const card = el("div", { class: wide ? "card wide" : "card" }, el("h2", {}, title), body);
    parent.append(card);
    return body;
  }

  renderEpochs() {
    const grid = el("div", { class: "grid", id: "epoch-charts" });
    this.root.append(grid);
    this.epochCharts = {};
    for (const [metric, title] of EPOCH_METRICS) {
      const chart = new LineChart(this.card(title, grid), [{ label: "train" }, { label: "val" }], { xLabel: "epoch", wholeX: true });
      this.epochCharts[metric] = chart;
      this.charts.push(chart);
    }
    for (const [name, [xs, ys]] of Object.entries(this.snapshot.epochs || {})) this.setEpoch(name, xs, ys);
    this.epochCharts.loss.onDraw = () => {
      const now = Date.now();
      for (const stamp of this.pendingEpochs) window.pneumofl.epochLatencies.push(now - stamp * 1000);
      this.pendingEpochs = [];
    };
    this.markEpochs(this.run.best_epoch, this.snapshot.early_stopping_epoch);
  }

  setEpoch(name, xs, ys) {
    const [split, ...rest] = name.split("_");
    const chart = this.epochCharts[rest.join("_")];
    const index = split === "train" ? 0 : split === "val" ? 1 : -1;
    if (!chart || index < 0) return;
    xs.forEach((x, k) => chart.set(x, index, ys[k]));
  }

  markEpochs(best, stop) {
    for (const chart of Object.values(this.epochCharts || {})) {
      if (best) chart.mark("best", best, "#009E73", [6, 4]);
      if (stop) chart.mark("stop", stop, "#D55E00", [2, 3]);
    }
  }

  renderBatches() {
    const grid = el("div", { class: "grid", id: "batch-charts" });
    this.root.append(grid);
    const batch = this.snapshot.batch || {};
    this.lossChart = new LineChart(this.card("Batch loss (sampled)", grid), [{ label: "train loss" }], {
      xLabel: "step",
      wholeX: true,
      points: false,
    });
    const layers = Object.keys(batch)
      .filter((n) => n.startsWith("grad_norm/"))
      .slice(0, TOP_LAYERS);
    this.gradNames = ["grad_norm", ...layers];
    this.gradChart = new LineChart(
      this.card("Gradient norm", grid),
      this.gradNames.map((n, i) => ({ label: n === "grad_norm" ? "global" : n.slice(10), colour: colour(i + 2) })),
      { xLabel: "step", points: false, wholeX: true },
    );
    this.lrChart = new LineChart(this.card("Learning rate", grid), [{ label: "lr", colour: colour(4) }], {
      xLabel: "step",
      wholeX: true,
      points: false,
    });
    this.charts.push(this.lossChart, this.gradChart, this.lrChart);
    this.lossChart.onDraw = () => {
      const now = Date.now();
      for (const stamp of this.pendingDraw) window.pneumofl.latencies.push(now - stamp * 1000);
      this.pendingDraw = [];
    };
    if (batch.train_loss) this.lossChart.load(batch.train_loss[0], [batch.train_loss[1]]);
    if (batch.lr) this.lrChart.load(batch.lr[0], [batch.lr[1]]);
    if (batch.grad_norm) {
      const [steps] = batch.grad_norm;
      const index = new Map(steps.map((s, k) => [s, k]));
      const ys = this.gradNames.map((name) => {
        const out = new Array(steps.length).fill(null);
        const series = batch[name];
        if (series) series[0].forEach((s, k) => index.has(s) && (out[index.get(s)] = series[1][k]));
        return out;
      });
      this.gradChart.load(steps, ys);
    }
  }

  renderFinal(stats, roc) {
    clear(this.finalBox);
    if (stats.degenerate) {
      this.finalBox.append(
        el("p", { class: "warning" }, "At its threshold this model gives every validation image the same decision."),
      );
    }
    if (stats.val || stats.test) {
      const table = el("table", { id: "final-stats" });
      const splits = ["val", "test"].filter((s) => stats[s]);
      table.append(el("tr", {}, el("th", {}, "Metric"), splits.map((s) => el("th", {}, s === "val" ? "Validation" : "Test"))));
      for (const [key, label] of FINAL_METRICS) {
        table.append(
          el(
            "tr",
            {},
            el("td", {}, label),
            splits.map((s) => el("td", { class: "num" }, withInterval(stats[s][key], stats.intervals?.[s]?.[key]))),
          ),
        );
      }
      this.card("Final statistics (best checkpoint, 95% intervals)", this.finalBox).append(table);
      const cm = stats.val;
      if (cm && cm.cm_tp !== undefined) {
        const matrix = el(
          "table",
          { id: "confusion" },
          el("tr", {}, el("th", {}, ""), el("th", {}, "Predicted normal"), el("th", {}, "Predicted pneumonia")),
          el("tr", {}, el("th", {}, "Normal"), el("td", { class: "num" }, cm.cm_tn), el("td", { class: "num" }, cm.cm_fp)),
          el("tr", {}, el("th", {}, "Pneumonia"), el("td", { class: "num" }, cm.cm_fn), el("td", { class: "num" }, cm.cm_tp)),
        );
        this.card("Validation confusion matrix", this.finalBox).append(matrix);
      }
    }
    if (stats.operating_points) {
      const table = el("table", { id: "operating-points" });
      table.append(el("tr", {}, el("th", {}, ""), POINTS.map(([, label]) => el("th", {}, label))));
      table.append(
        el("tr", {}, el("td", {}, "Threshold"), POINTS.map(([key]) => el("td", { class: "num" }, fixed(stats.operating_points[key]?.threshold)))),
      );
      // Only splits with values: a federation's server has no test split of its own.
      const points = Object.values(stats.operating_points);
      const splits = ["val", "test"].filter((split) => points.some((p) => p?.[split]?.recall !== undefined));
      for (const split of splits) {
        for (const [metric, label] of [["recall", "sensitivity"], ["specificity", "specificity"]]) {
          table.append(
            el(
              "tr",
              {},
              el("td", {}, `${split === "val" ? "Validation" : "Test"} ${label}`),
              POINTS.map(([key]) => {
                const point = stats.operating_points[key] || {};
                return el("td", { class: "num" }, withInterval(point[split]?.[metric], point.intervals?.[split]?.[metric]));
              }),
            ),
          );
        }
      }
      const card = this.card("Operating points (chosen on validation)", this.finalBox, true);
      card.append(table);
      if (!splits.includes("test")) {
        card.append(el("p", { id: "no-test-split", class: "muted" }, "No test rows: this run has no test split (a federation's server evaluates on its held-out set only)."));
      }
    }
    if (stats.privacy) {
      const p = stats.privacy;
      this.card("Differential privacy", this.finalBox).append(
        el("p", { id: "privacy" }, `ε = ${fixed(p.epsilon, 2)} at δ = ${p.delta} after ${p.releases} rounds; noise ${p.noise_multiplier}, ${p.clipping} clipping at ${p.clipping_norm}.`),
      );
    }
    const points = roc || stats.roc;
    if (points && points.fpr && points.fpr.length) {
      const chart = new LineChart(this.card("Validation ROC", this.finalBox), [{ label: "ROC", colour: colour(1) }], {
        xLabel: "1 - specificity",
        yRange: [0, 1],
        points: false,
      });
      chart.load(points.fpr, [points.tpr]);
      this.charts.push(chart);
    }
  }

  // Live: follow the run at the hub when it is training there.
  follow() {
    const info = this.snapshot.live || {};
    if (!this.live || !info.known) return;
    this.live.subscribe(this.run.id, Math.max(info.first_seq || 1, (info.last_seq || 0) - LIVE_MARGIN + 1));
  }

  handle(events) {
    for (const event of events) {
      const data = event.data || {};
      if (this.federation) {
        this.federation.handle(event);
      } else if (event.type === "epoch_end") {
        for (const [name, value] of Object.entries(data.metrics || {})) this.setEpoch(name, [data.epoch], [value]);
        this.pendingEpochs.push(event.timestamp);
      } else if (event.type === "batch_metrics" && this.lossChart && "train_loss" in (data.metrics || {})) {
        this.lossChart.append(data.step, 0, data.metrics.train_loss);
        this.pendingDraw.push(event.timestamp);
      } else if (event.type === "gradient_stats" && this.gradChart) {
        this.gradChart.append(data.step, 0, data.global_norm);
        this.gradNames.slice(1).forEach((name, i) => {
          const value = (data.layer_norms || {})[name.slice(10)];
          if (value !== undefined) this.gradChart.append(data.step, i + 1, value);
        });
      } else if (event.type === "lr_update" && this.lrChart) {
        this.lrChart.append(data.step, 0, data.lr);
      } else if (event.type === "early_stopping") {
        this.markEpochs(null, data.epoch);
      } else if (event.type === "training_end") {
        this.status.textContent = data.status;
        this.markEpochs(data.best_epoch, null);
        this.renderFinal(data.final_stats || {}, null);
      }
    }
    if (this.federation && events.some((e) => e.type === "training_end")) {
      const end = events.find((e) => e.type === "training_end");
      this.status.textContent = end.data.status;
      this.renderFinal(end.data.final_stats || {}, null);
    }
  }

  destroy() {
    for (const chart of this.charts) chart.destroy();
    if (this.federation) this.federation.destroy();
    if (this.live) this.live.unsubscribe();
  }
}
