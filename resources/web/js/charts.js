// Charts on uPlot (vendored, made for large live time series). Data arrive as points; a chart redraws at most
// once per animation frame, however many points came in.

// Okabe-Ito: distinguishable with colour-vision deficiencies (the same list as desktop/charts/palette.py).
const COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
const MAX_POINTS = 50000; // past this a streamed series is halved, keeping each pair's extreme (peaks survive)

// Tick labels that stay distinct for small values (a learning rate of 0.0015 is not "0.002").
function tickText(value) {
  if (value === 0) return "0";
  const size = Math.abs(value);
  if (size < 0.01 || size >= 1e5) return value.toExponential(1);
  return String(Number(value.toPrecision(3)));
}

// Tick steps of an axis that counts (epochs, rounds, steps): never a tick at 0.5 of a round.
const WHOLE_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].map((p) => m * p)).sort((a, b) => a - b);

export function colour(i) {
  return COLOURS[i % COLOURS.length];
}

// Vertical lines at given x values (best epoch, early stop), drawn over the plot area.
function markerPlugin(chart) {
  return {
    hooks: {
      draw: [
        (u) => {
          const ctx = u.ctx;
          for (const marker of chart.markers) {
            if (marker.x === null || marker.x === undefined) continue;
            const x = u.valToPos(marker.x, "x", true);
            if (!Number.isFinite(x)) continue;
            ctx.save();
            ctx.strokeStyle = marker.colour;
            ctx.lineWidth = 1;
            ctx.setLineDash(marker.dash);
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.restore();
          }
        },
      ],
    },
  };
}

export class LineChart {
  // series: [{label, colour?}]; options: {title, xLabel, yRange?: [min, max], points?: bool, wholeX?: bool}
  constructor(container, series, options = {}) {
    this.container = container;
    this.labels = series.map((s) => s.label);
    this.markers = [];
    this.points = new Map(); // x -> [y per series] (small, keyed series: epochs, rounds)
    this.stream = null; // {x: [], ys: [[]...]} for long append-only series (batches)
    this.dirty = false;
    this.onDraw = null;
    const width = Math.max(320, container.clientWidth || 400);
    const opts = {
      title: options.title || "",
      width,
      height: options.height || 220,
      scales: { x: { time: false }, y: options.yRange ? { range: options.yRange } : {} },
      axes: [
        options.wholeX
          ? { label: options.xLabel || "", size: 36, incrs: WHOLE_STEPS, values: (u, ticks) => ticks.map((t) => String(Math.round(t))) }
          : { label: options.xLabel || "", size: 36 },
        { size: 56, values: (u, ticks) => ticks.map(tickText) },
      ],
      legend: { live: false },
      cursor: { drag: { x: true, y: false } },
      plugins: [markerPlugin(this)],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.colour || colour(i),
          width: 1,
          points: { show: options.points ?? true, size: 4 },
          spanGaps: true,
        })),
      ],
    };
    this.plot = new uPlot(opts, [[], ...series.map(() => [])], container);
    this.resizeObserver = new ResizeObserver(() => {
      const w = container.clientWidth;
      if (w && Math.abs(w - this.plot.width) > 4) this.plot.setSize({ width: w, height: this.plot.height });
    });
    this.resizeObserver.observe(container);
  }

  // Keyed points: set series i's value at x (an epoch, a round). Re-setting an x replaces it.
  set(x, i, y) {
    let row = this.points.get(x);
    if (!row) {
      row = new Array(this.labels.length).fill(null);
      this.points.set(x, row);
    }
    row[i] = Number.isFinite(y) ? y : null;
    this.schedule();
  }

  // Streamed points: append (x, y) to series i, x increasing. Points at or before the last x are ignored, so a
  // snapshot from the database and the live events that overlap it never draw a point twice.
  append(x, i, y) {
    if (!this.stream) this.stream = { x: [], ys: this.labels.map(() => []) };
    const s = this.stream;
    const last = s.x.length ? s.x[s.x.length - 1] : -Infinity;
    if (x < last) return;
    if (x === last) {
      s.ys[i][s.x.length - 1] = y;
    } else {
      s.x.push(x);
      s.ys.forEach((ys, k) => ys.push(k === i ? y : null));
    }
    if (s.x.length > MAX_POINTS) this.halve();
    this.schedule();
  }

  // Replace the streamed series with a snapshot: xs and one array of ys per series.
  load(xs, ys) {
    this.stream = { x: Array.from(xs), ys: ys.map((values) => Array.from(values, (v) => (v === null ? null : v))) };
    this.schedule();
  }

  lastX() {
    return this.stream && this.stream.x.length ? this.stream.x[this.stream.x.length - 1] : -Infinity;
  }

  halve() {
    const s = this.stream;
    const keep = (values) => {
      const out = [];
      for (let j = 0; j < values.length; j += 2) {
        const a = values[j];
        const b = j + 1 < values.length ? values[j + 1] : a;
        out.push(a === null ? b : b === null ? a : Math.abs(a) >= Math.abs(b) ? a : b);
      }
      return out;
    };
    s.x = s.x.filter((_, j) => j % 2 === 0);
    s.ys = s.ys.map(keep);
  }

  mark(name, x, colourName, dash) {
    const existing = this.markers.find((m) => m.name === name);
    if (existing) existing.x = x;
    else this.markers.push({ name, x, colour: colourName, dash });
    this.schedule();
  }

  schedule() {
    if (this.dirty) return;
    this.dirty = true;
    requestAnimationFrame(() => this.draw());
  }

  draw() {
    this.dirty = false;
    let data;
    if (this.stream) {
      data = [this.stream.x, ...this.stream.ys];
    } else {
      const xs = [...this.points.keys()].sort((a, b) => a - b);
      data = [xs, ...this.labels.map((_, i) => xs.map((x) => this.points.get(x)[i]))];
    }
    this.plot.setData(data);
    if (data[0].length && window.pneumofl && !window.pneumofl.firstDraw) window.pneumofl.firstDraw = performance.now();
    if (this.onDraw) this.onDraw();
  }

  destroy() {
    this.resizeObserver.disconnect();
    this.plot.destroy();
  }
}
