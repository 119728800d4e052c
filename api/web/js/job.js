// One job: live curves (SSE via fetch, polling as the fallback), diagnosis, spec, timings.
import { api, download, followEvents } from "./api.js";
import { MetricChart, PHASES, PHASE_STYLE, METRIC_LABEL, chartMetrics, legend } from "./charts.js";
import {
  FINAL, clear, errorBox, fmtDuration, fmtNumber, fmtTime, h, progress, statusBadge,
} from "./dom.js";

const INITIAL_POINTS = 2000; // the server downsamples longer runs (min/max per bucket)

/** Epoch -> phase -> metric -> value, filled from /curves, then from the event stream. */
class CurveStore {
  constructor() {
    this.byEpoch = new Map();
    this.last = 0;
    this.sampled = null;
  }

  loadColumns(body) {
    body.epochs.forEach((epoch, i) => {
      const phases = {};
      for (const [phase, metrics] of Object.entries(body.series)) {
        const row = {};
        for (const [metric, values] of Object.entries(metrics)) {
          if (values[i] !== null && values[i] !== undefined) row[metric] = values[i];
        }
        if (Object.keys(row).length) phases[phase] = row;
      }
      this.upsert(epoch, phases);
    });
  }

  upsert(epoch, phases) {
    const row = this.byEpoch.get(epoch) || {};
    for (const [phase, metrics] of Object.entries(phases)) {
      row[phase] = { ...(row[phase] || {}), ...metrics };
    }
    this.byEpoch.set(epoch, row);
    // `test` is measured once at the end: it does not make a training epoch "reached"
    if (Object.keys(phases).some((p) => p !== "test")) this.last = Math.max(this.last, epoch);
  }

  /** uPlot's columns for one metric: [epochs, ...one array per phase]. */
  columns(metric) {
    const epochs = [...this.byEpoch.keys()].sort((a, b) => a - b);
    const cols = [epochs];
    for (const phase of PHASES) {
      cols.push(epochs.map((e) => this.byEpoch.get(e)[phase]?.[metric] ?? null));
    }
    return cols;
  }
}

export function jobPage(root, jobId) {
  const timers = [];
  const store = new CurveStore();
  let charts = [];
  let stream = null;
  let job = null;
  let drawQueued = false;
  let ended = false;
  let polling = null;

  const head = h("div", { class: "job-head" }, h("p", { class: "muted" }, "Loading…"));
  const liveBadge = h("span", { class: "live-state", dataset: { state: "connecting" } }, "connecting");
  const chartGrid = h("div", { class: "chart-grid", id: "charts", dataset: { epochs: "0" } });
  const samplingNote = h("p", { class: "muted small", hidden: true });
  const diagnosisEl = h("div", { class: "diagnosis" }, h("p", { class: "muted" }, "Loading…"));
  const timingsEl = h("dl", { class: "timings" });
  const specEl = h("pre", { class: "spec" });
  clear(
    root,
    head,
    h(
      "section",
      { class: "panel" },
      h("div", { class: "panel-title" }, h("h2", {}, "Curves"), liveBadge),
      legend(PHASES.map((p) => PHASE_STYLE[p])),
      chartGrid,
      samplingNote,
    ),
    h(
      "div",
      { class: "columns" },
      h("section", { class: "panel" }, h("h2", {}, "Diagnosis"), diagnosisEl),
      h("section", { class: "panel" }, h("h2", {}, "Timings"), timingsEl),
    ),
    h("section", { class: "panel" }, h("h2", {}, "Spec"), specEl),
  );

  function setLive(state) {
    liveBadge.dataset.state = state;
    liveBadge.textContent = state;
  }

  function draw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      for (const chart of charts) chart.setData(store.columns(chart.metric));
      chartGrid.dataset.epochs = String(store.last);
      chartGrid.dataset.points = String(store.byEpoch.size);
    });
  }

  function buildCharts(task) {
    charts.forEach((c) => c.destroy());
    chartGrid.replaceChildren();
    charts = chartMetrics(task).map((metric) => {
      const chart = new MetricChart(chartGrid, {
        metric,
        title: METRIC_LABEL[metric] || metric,
        series: PHASES.map((p) => ({ ...PHASE_STYLE[p], label: p })),
      });
      chart.metric = metric;
      return chart;
    });
  }

  function renderHead() {
    const cancellable = !FINAL.has(job.status) && !job.cancel_requested;
    const modelButton = h(
      "button",
      {
        class: "secondary",
        disabled: job.status !== "succeeded",
        title: job.status === "succeeded" ? "weights + spec, safetensors" : "available once the job succeeds",
        onclick: () => download(`/v1/jobs/${job.id}/model`, `${job.name}.safetensors`).catch((e) => alert(e.message)),
      },
      "Download model",
    );
    clear(
      head,
      h(
        "div",
        { class: "job-title" },
        h("h1", {}, job.name),
        statusBadge(job.status),
        job.cancel_requested && !FINAL.has(job.status) ? h("span", { class: "badge" }, "cancelling") : null,
      ),
      h("div", { class: "job-meta" },
        h("code", { class: "job-id" }, job.id),
        progress(job.epoch, job.epochs_total),
        h("span", { class: "muted" }, `owner ${job.owner}`),
      ),
      job.error ? h("div", { class: "error-box" }, job.error) : null,
      h(
        "div",
        { class: "actions" },
        h("button", { class: "danger", id: "cancel", disabled: !cancellable, onclick: cancel }, "Cancel"),
        modelButton,
        h("button", { class: "secondary", onclick: () => download(`/v1/jobs/${job.id}/curves.csv`, "curves.csv") }, "Curves CSV"),
        h("a", { class: "button secondary", href: `#/compare?ids=${job.id}` }, "Compare…"),
      ),
    );
    const perEpoch = job.duration_seconds && job.epoch ? job.duration_seconds / job.epoch : null;
    const rows = [
      ["created", fmtTime(job.created_at)],
      ["started", fmtTime(job.started_at) || "—"],
      ["finished", fmtTime(job.finished_at) || "—"],
      ["duration", fmtDuration(job.duration_seconds) || "—"],
      ["per epoch", perEpoch ? fmtDuration(perEpoch) : "—"],
      ["last heartbeat", fmtTime(job.heartbeat_at) || "—"],
      ["attempt", String(job.attempt)],
      ["worker", job.worker || "—"],
      ["parameters", fmtNumber(job.parameter_count)],
    ];
    clear(timingsEl, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    if (!specEl.textContent) specEl.textContent = JSON.stringify(job.spec, null, 2);
  }

  async function cancel() {
    if (!confirm(`Cancel job ${job.name}?`)) return;
    try {
      job = await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
      renderHead();
    } catch (err) {
      alert(err.message);
    }
  }

  async function refreshJob() {
    job = await api(`/v1/jobs/${jobId}`);
    renderHead();
    if (FINAL.has(job.status) && !ended) finish();
  }

  async function refreshDiagnosis() {
    try {
      const d = await api(`/v1/jobs/${jobId}/diagnosis`);
      clear(
        diagnosisEl,
        h("p", { class: "summary" }, d.summary),
        d.findings.length === 0
          ? h("p", { class: "muted" }, "No findings.")
          : h("ul", { class: "findings" }, d.findings.map((f) =>
              h(
                "li",
                { class: `finding severity-${f.severity}`, dataset: { code: f.code } },
                h("div", { class: "finding-head" }, h("span", { class: `sev sev-${f.severity}` }, f.severity), h("strong", {}, f.title)),
                h("p", {}, f.message),
                h("details", {}, h("summary", {}, `evidence: epochs ${f.evidence.epochs.join(", ") || "—"}`),
                  h("pre", {}, JSON.stringify(f.evidence.figures, null, 2))),
              ))),
      );
    } catch (err) {
      clear(diagnosisEl, errorBox(err));
    }
  }

  async function pollCurves() {
    const body = await api(`/v1/jobs/${jobId}/curves?since_epoch=${store.last}`);
    store.loadColumns(body);
    draw();
    if (FINAL.has(body.status)) finish();
  }

  function finish() {
    if (ended) return;
    ended = true;
    setLive("ended");
    stream?.stop();
    if (polling) clearInterval(polling);
    // the test pass and the final status arrive with the end: read everything once more
    api(`/v1/jobs/${jobId}/curves?since_epoch=0&max_points=${INITIAL_POINTS}`)
      .then((body) => { store.loadColumns(body); draw(); })
      .catch(() => {});
    refreshJob().catch(() => {});
    refreshDiagnosis();
  }

  function startPolling() {
    if (ended || polling) return;
    setLive("polling");
    polling = setInterval(() => pollCurves().catch(() => {}), 2000);
  }

  async function start() {
    try {
      job = await api(`/v1/jobs/${jobId}`);
    } catch (err) {
      clear(head, errorBox(err));
      setLive("error");
      return;
    }
    renderHead();
    const body = await api(`/v1/jobs/${jobId}/curves?max_points=${INITIAL_POINTS}`);
    buildCharts(body.task);
    store.loadColumns(body);
    if (body.sampling) {
      samplingNote.hidden = false;
      samplingNote.textContent = `Showing ${body.sampling.points} of ${body.sampling.epochs_total} epochs (min/max per bucket); new epochs are added as they arrive.`;
    }
    draw();
    refreshDiagnosis();
    if (FINAL.has(job.status)) {
      ended = true;
      setLive("ended");
      return;
    }
    stream = followEvents(`/v1/jobs/${jobId}/events?last_event_id=${store.last}`, {
      onState: (s) => { if (!ended) setLive(s); },
      onGiveUp: startPolling,
      onEvent: (name, data) => {
        if (name === "epoch") {
          store.upsert(data.epoch, data.phases);
          draw();
        } else if (name === "end") {
          if (data.test) {
            const { epoch, ...figures } = data.test;
            store.upsert(epoch, { test: figures });
            draw();
          }
          finish();
        }
      },
    });
    timers.push(setInterval(() => { if (!ended) refreshJob().catch(() => {}); }, 3000));
    timers.push(setInterval(() => { if (!ended) refreshDiagnosis(); }, 10000));
  }

  start();
  return () => {
    ended = true;
    stream?.stop();
    if (polling) clearInterval(polling);
    timers.forEach(clearInterval);
    charts.forEach((c) => c.destroy());
  };
}
