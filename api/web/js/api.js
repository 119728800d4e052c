// The /v1 client: every call carries the pasted bearer token (localStorage) when there is one.

const TOKEN_KEY = "trainrun.token";
const listeners = new Set();

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** Called with each 401 so the page can ask for a token. */
export function onUnauthorized(fn) {
  listeners.add(fn);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function authHeaders(extra = {}) {
  const token = getToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

/** fetch() a /v1 path; JSON in and out; a non-2xx answer throws ApiError with its detail. */
export async function api(path, { method = "GET", body, signal, headers } = {}) {
  const init = { method, signal, headers: authHeaders(headers) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    if (res.status === 401) listeners.forEach((fn) => fn(data));
    throw new ApiError(res.status, data && data.detail !== undefined ? data.detail : data);
  }
  return data;
}

/** Download a file through fetch (a plain link cannot send the Authorization header). */
export async function download(path, fallbackName) {
  const res = await fetch(path, { headers: authHeaders() });
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    throw new ApiError(res.status, data.detail || `HTTP ${res.status}`);
  }
  const disposition = res.headers.get("content-disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const url = URL.createObjectURL(await res.blob());
  const a = Object.assign(document.createElement("a"), {
    href: url,
    download: match ? match[1] : fallbackName,
  });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * Follow a Server-Sent Events stream with fetch() and a ReadableStream parser, because
 * EventSource cannot send an Authorization header. Reconnects after the server's `retry:`
 * delay, resuming with Last-Event-ID, until `stop()`, an `end` event, or `maxFailures`
 * connections in a row fail (then `onGiveUp` runs, and the caller polls instead).
 */
export function followEvents(path, { onEvent, onGiveUp, onState, maxFailures = 3 }) {
  const controller = new AbortController();
  let lastId = null;
  let retryMs = 2000;
  let failures = 0;
  let stopped = false;

  const stop = () => {
    stopped = true;
    controller.abort();
  };

  function dispatch(event) {
    if (event.id !== null) lastId = event.id;
    let data = event.data;
    try {
      data = JSON.parse(event.data);
    } catch {
      // not JSON: hand the text over as it is
    }
    onEvent(event.event, data, event.id);
    if (event.event === "end") stop();
  }

  async function connect() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const res = await fetch(path, { headers, signal: controller.signal, cache: "no-store" });
    if (!res.ok || !res.body) {
      if (res.status === 401) listeners.forEach((fn) => fn());
      const fatal = res.status >= 400 && res.status < 500 && res.status !== 429;
      throw Object.assign(new Error(`events: HTTP ${res.status}`), { fatal });
    }
    onState?.("live");
    failures = 0;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = blankEvent();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop(); // an unfinished line waits for the next chunk
      for (const line of lines) {
        if (line === "") {
          if (event.dataLines.length) {
            dispatch({ event: event.event, id: event.id, data: event.dataLines.join("\n") });
          }
          event = blankEvent(event.id);
          if (stopped) return;
          continue;
        }
        if (line.startsWith(":")) continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "data") event.dataLines.push(val);
        else if (field === "event") event.event = val;
        else if (field === "id" && !val.includes("\0")) event.id = val;
        else if (field === "retry" && /^\d+$/.test(val)) retryMs = Number(val);
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await connect();
      } catch (err) {
        if (stopped) return;
        failures += 1;
        if (err.fatal || failures >= maxFailures) {
          onState?.("polling");
          onGiveUp?.(err);
          return;
        }
      }
      if (stopped) return;
      onState?.("reconnecting");
      await new Promise((r) => setTimeout(r, retryMs));
    }
  })();

  return { stop, get lastId() { return lastId; } };
}

function blankEvent(id = null) {
  return { event: "message", id, dataLines: [] };
}
