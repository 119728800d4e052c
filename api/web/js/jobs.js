// The jobs table, refreshed every few seconds; tick jobs to compare them.
import { api } from "./api.js";
import { FINAL, clear, errorBox, fmtDuration, fmtTime, h, progress, statusBadge } from "./dom.js";

const REFRESH_MS = 3000;
const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled", "timed_out"];

export function jobsPage(root) {
  const selected = new Set();
  let status = "";
  const body = h("tbody");
  const errorEl = h("div");
  const updated = h("span", { class: "muted small" });
  const compareButton = h("button", { disabled: true, onclick: compare }, "Compare selected");
  const filter = h(
    "select",
    { "aria-label": "status filter", onchange: (e) => { status = e.target.value; refresh(); } },
    STATUSES.map((s) => h("option", { value: s }, s || "all statuses")),
  );

  clear(
    root,
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Jobs"),
      h("div", { class: "actions" }, filter, compareButton, h("a", { class: "button", href: "#/submit" }, "New job")),
    ),
    errorEl,
    h(
      "section",
      { class: "panel flush" },
      h(
        "table",
        { class: "jobs" },
        h("thead", {}, h("tr", {},
          ["", "Name", "Status", "Progress", "Owner", "Created", "Finished", "Duration"].map((t) => h("th", {}, t)))),
        body,
      ),
    ),
    h("p", {}, updated),
  );

  function compare() {
    location.hash = `#/compare?ids=${[...selected].join(",")}`;
  }

  function syncButton() {
    compareButton.disabled = selected.size === 0 || selected.size > 10;
    compareButton.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  }

  function row(job) {
    const box = h("input", {
      type: "checkbox",
      "aria-label": `select ${job.name}`,
      checked: selected.has(job.id),
      onchange: (e) => {
        if (e.target.checked) selected.add(job.id);
        else selected.delete(job.id);
        syncButton();
      },
    });
    return h(
      "tr",
      { dataset: { id: job.id, status: job.status } },
      h("td", {}, box),
      h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.name), h("div", { class: "muted small mono" }, job.id.slice(0, 12))),
      h("td", {}, statusBadge(job.status)),
      h("td", {}, progress(job.epoch, job.epochs_total)),
      h("td", {}, job.owner),
      h("td", { class: "nowrap" }, fmtTime(job.created_at)),
      h("td", { class: "nowrap" }, FINAL.has(job.status) ? fmtTime(job.finished_at) : ""),
      h("td", { class: "nowrap" }, fmtDuration(job.duration_seconds)),
    );
  }

  async function refresh() {
    try {
      const page = await api(`/v1/jobs?limit=100${status ? `&status=${status}` : ""}`);
      clear(errorEl);
      clear(
        body,
        page.data.length
          ? page.data.map(row)
          : h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No jobs yet. ", h("a", { href: "#/submit" }, "Submit one."))),
      );
      updated.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
    } catch (err) {
      clear(errorEl, errorBox(err));
    }
  }

  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
