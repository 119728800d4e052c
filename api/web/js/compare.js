// Up to 10 jobs overlaid per metric: colour = job, line style = phase; phases toggle on/off.
/* global uPlot */
import { api } from "./api.js";
import { JOB_COLOURS, METRIC_LABEL, MetricChart, PHASES, chartMetrics } from "./charts.js";
import { FINAL, clear, errorBox, h, statusBadge } from "./dom.js";

const REFRESH_MS = 5000;
const PHASE_DASH = { train: [2, 4], train_eval: [8, 4], val: null, test: null };
const DEFAULT_PHASES = new Set(["train_eval", "val"]); // the two measured under the same rules

export function comparePage(root, params) {
  const ids = (params.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean);
  const shown = new Set(DEFAULT_PHASES);
  let charts = [];
  let jobs = [];
  let timer = null;
  let layoutKey = "";

  const idsInput = h("input", {
    type: "text",
    class: "grow",
    value: ids.join(","),
    placeholder: "job ids, comma-separated (up to 10)",
    "aria-label": "job ids",
  });
  const phaseBoxes = h(
    "fieldset",
    { class: "phase-toggles" },
    h("legend", {}, "Phases"),
    PHASES.map((p) =>
      h(
        "label",
        { class: "toggle" },
        h("input", {
          type: "checkbox",
          name: "phase",
          value: p,
          checked: shown.has(p),
          onchange: (e) => {
            if (e.target.checked) shown.add(p);
            else shown.delete(p);
            applyShown();
          },
        }),
        h("span", { class: `phase-swatch phase-${p}` }),
        p,
      ),
    ),
  );
  const jobLegend = h("ul", { class: "job-legend" });
  const chartGrid = h("div", { class: "chart-grid", id: "compare-charts" });
  const errorEl = h("div");

  clear(
    root,
    h("div", { class: "page-head" }, h("h1", {}, "Compare")),
    h(
      "form",
      {
        class: "panel compare-form",
        onsubmit: (e) => {
          e.preventDefault();
          const next = idsInput.value.split(",").map((s) => s.trim()).filter(Boolean).join(",");
          location.hash = `#/compare?ids=${next}`;
        },
      },
      h("div", { class: "row" }, idsInput, h("button", { type: "submit" }, "Show")),
      phaseBoxes,
    ),
    errorEl,
    h("section", { class: "panel" }, jobLegend, chartGrid),
  );

  if (!ids.length) {
    clear(chartGrid, h("p", { class: "muted" }, "Pick jobs on the ", h("a", { href: "#/jobs" }, "jobs page"), " or paste their ids above."));
    return () => {};
  }

  function seriesIndex(jobIndex, phase) {
    return jobIndex * PHASES.length + PHASES.indexOf(phase);
  }

  function applyShown() {
    for (const chart of charts) {
      jobs.forEach((_, j) => PHASES.forEach((p) => chart.setShown(seriesIndex(j, p), shown.has(p))));
    }
  }

  function columns(metric) {
    const tables = jobs.map((job) => [
      job.epochs,
      ...PHASES.map((p) => job.series[p]?.[metric] ?? job.epochs.map(() => null)),
    ]);
    return tables.length === 1 ? tables[0] : uPlot.join(tables);
  }

  function build() {
    charts.forEach((c) => c.destroy());
    chartGrid.replaceChildren();
    const metrics = [...new Set(jobs.flatMap((j) => chartMetrics(j.task)))];
    charts = metrics.map((metric) => {
      const series = jobs.flatMap((job, j) =>
        PHASES.map((p) => ({
          label: `${job.name} · ${p}`,
          stroke: JOB_COLOURS[j % JOB_COLOURS.length],
          dash: PHASE_DASH[p] || undefined,
          pointsOnly: p === "test",
          width: p === "train" ? 1.5 : 2,
        })),
      );
      const chart = new MetricChart(chartGrid, {
        metric, title: METRIC_LABEL[metric] || metric, series, showLegend: false,
      });
      chart.metric = metric;
      return chart;
    });
    applyShown();
  }

  function draw() {
    for (const chart of charts) chart.setData(columns(chart.metric));
    clear(
      jobLegend,
      jobs.map((job, j) =>
        h(
          "li",
          { dataset: { id: job.id } },
          h("span", { class: "swatch", style: `--c:${JOB_COLOURS[j % JOB_COLOURS.length]}` }),
          h("a", { href: `#/jobs/${job.id}` }, job.name),
          h("code", { class: "muted small" }, job.id.slice(0, 8)),
          statusBadge(job.status),
          h("span", { class: "muted small" }, `${job.epochs.length} epochs`),
        ),
      ),
    );
  }

  async function load() {
    try {
      const body = await api(`/v1/compare?ids=${encodeURIComponent(ids.join(","))}&max_points=2000`);
      const key = body.jobs.map((j) => `${j.id}:${j.task}`).join(",");
      const rebuild = key !== layoutKey;
      layoutKey = key;
      jobs = body.jobs;
      clear(errorEl);
      if (rebuild) build();
      draw();
      if (jobs.every((j) => FINAL.has(j.status)) && timer) {
        clearInterval(timer);
        timer = null;
      }
    } catch (err) {
      clear(errorEl, errorBox(err));
    }
  }

  load();
  timer = setInterval(load, REFRESH_MS);
  return () => {
    if (timer) clearInterval(timer);
    charts.forEach((c) => c.destroy());
  };
}
