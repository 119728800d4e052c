// uPlot wrappers: one chart per metric, phases (or jobs) as series on shared axes.
/* global uPlot */
import { h } from "./dom.js";

export const PHASES = ["train", "train_eval", "val", "test"];

export const PHASE_STYLE = {
  train: { stroke: "#1f6fd1", dash: [6, 4], label: "train (train mode)" },
  train_eval: { stroke: "#4fb3e8", label: "train_eval (eval mode)" },
  val: { stroke: "#f28c1b", label: "val" },
  test: { stroke: "#111111", pointsOnly: true, label: "test" },
};

export const METRIC_LABEL = {
  loss: "Loss (data term)",
  accuracy: "Accuracy (tie-aware)",
  tie_rate: "Tie rate",
  penalty: "Penalty (regulariser)",
  mse: "MSE",
  mae: "MAE",
  r2: "R²",
};

export function chartMetrics(task) {
  return task === "regression"
    ? ["mse", "mae", "r2", "penalty"]
    : ["loss", "accuracy", "penalty", "tie_rate"];
}

// Ten distinguishable colours for overlaid jobs (Tableau 10).
export const JOB_COLOURS = [
  "#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1",
  "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#79706e",
];

// Whole epochs only on the x axis.
const EPOCH_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 100_000];

function seriesOptions(s) {
  const base = { label: s.label, stroke: s.stroke, width: s.width ?? 2, spanGaps: true };
  if (s.dash) base.dash = s.dash;
  if (s.pointsOnly) {
    return {
      ...base,
      width: 0,
      paths: () => null,
      points: { show: true, size: 9, stroke: s.stroke, fill: s.stroke },
    };
  }
  return { ...base, points: { show: false } };
}

function fmtValue(u, v) {
  if (v === null || v === undefined) return "–";
  const abs = Math.abs(v);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e5) ? v.toExponential(3) : v.toFixed(4);
}

/** uPlot's padded range, but a flat series (a zero penalty) gets a sane one: [0, 1]. */
function yRange(u, min, max) {
  if (min === null || max === null) return [0, 1];
  if (max - min < 1e-12) {
    const pad = Math.abs(min) * 0.1 || 1;
    return [min === 0 ? 0 : min - pad, min + pad];
  }
  return uPlot.rangeNum(min, max, 0.1, true);
}

/** A titled chart card; `el.dataset.epochs` counts the epochs drawn (tests assert on it). */
export class MetricChart {
  constructor(parent, { metric, title, series, height = 230, showLegend = true }) {
    this.height = height;
    this.plotEl = h("div", { class: "plot" });
    this.el = h(
      "section",
      { class: "chart-card", dataset: { metric, epochs: "0" } },
      h("h3", {}, title),
      this.plotEl,
    );
    parent.append(this.el);
    const opts = {
      width: Math.max(280, this.plotEl.clientWidth || parent.clientWidth || 480),
      height,
      scales: { x: { time: false }, y: { range: yRange } },
      legend: { show: showLegend, live: true },
      cursor: { sync: { key: "trainrun" } },
      axes: [
        { label: "epoch", labelSize: 18, size: 36, grid: { stroke: "#eceff3" }, incrs: EPOCH_STEPS },
        { size: 56, grid: { stroke: "#eceff3" } },
      ],
      series: [{ label: "epoch", value: (u, v) => (v === null ? "–" : v) }].concat(
        series.map((s) => ({ ...seriesOptions(s), value: fmtValue })),
      ),
    };
    this.plot = new uPlot(opts, [[], ...series.map(() => [])], this.plotEl);
    this.resizer = new ResizeObserver(() => {
      const width = this.plotEl.clientWidth;
      if (width > 0) this.plot.setSize({ width, height: this.height });
    });
    this.resizer.observe(this.plotEl);
  }

  setData(data) {
    this.plot.setData(data);
    this.el.dataset.epochs = String(data[0].length);
  }

  setShown(index, show) {
    this.plot.setSeries(index + 1, { show });
  }

  destroy() {
    this.resizer.disconnect();
    this.plot.destroy();
  }
}

export function legend(items) {
  return h(
    "div",
    { class: "legend" },
    items.map((it) =>
      h(
        "span",
        { class: "legend-item" },
        h("span", {
          class: `swatch${it.dash ? " dashed" : ""}${it.pointsOnly ? " dot" : ""}`,
          style: `--c:${it.stroke}`,
        }),
        it.label,
      ),
    ),
  );
}
