// The single page: hash routes #/jobs, #/jobs/<id>, #/compare?ids=a,b, #/submit.
import { getToken, onUnauthorized, setToken } from "./js/api.js";
import { comparePage } from "./js/compare.js";
import { h } from "./js/dom.js";
import { jobPage } from "./js/job.js";
import { jobsPage } from "./js/jobs.js";
import { submitPage } from "./js/submit.js";

const root = document.getElementById("app");
const banner = document.getElementById("banner");
let cleanup = () => {};

function route() {
  const [path, query = ""] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  cleanup();
  root.replaceChildren();
  window.scrollTo(0, 0);
  let section = parts[0] || "jobs";
  if (section === "jobs" && parts[1]) {
    cleanup = jobPage(root, decodeURIComponent(parts[1]));
  } else if (section === "compare") {
    cleanup = comparePage(root, params);
  } else if (section === "submit") {
    cleanup = submitPage(root);
  } else {
    section = "jobs";
    cleanup = jobsPage(root);
  }
  document.body.dataset.page = parts[1] && section === "jobs" ? "job" : section;
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === section && !(section === "jobs" && parts[1]));
  }
}

function setupToken() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  input.value = getToken();
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    banner.hidden = true;
    route();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    input.value = "";
    setToken("");
    route();
  });
  onUnauthorized(() => {
    banner.replaceChildren(
      h("strong", {}, "This server needs a token. "),
      getToken() ? "The saved token was refused; paste another one above." : "Paste your API token in the box above and press Save.",
    );
    banner.hidden = false;
    input.focus();
  });
}

setupToken();
window.addEventListener("hashchange", route);
route();
