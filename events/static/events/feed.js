// The live feed page: events newest first, the connection's state, pause and clear.
//
// The connection lives in a SharedWorker shared by every tab of the same channels
// (feed-worker.js), or, where SharedWorker is missing or fails, in this page
// (feed-stream.js). `?shared=0` in the page's URL forces a connection of its own.

import { FeedConnection, parsePosition } from "./feed-stream.js";

const config = JSON.parse(document.getElementById("feed-config").textContent);
const list = document.getElementById("events");
const stateLine = document.getElementById("state");
const since = document.getElementById("since");
const modeLine = document.getElementById("mode");
const notice = document.getElementById("notice");
const empty = document.getElementById("empty");
const announcer = document.getElementById("announcer");
const pauseButton = document.getElementById("pause");
const clearButton = document.getElementById("clear");

const MAX_ITEMS = 500; // oldest items are dropped past this
const FOLD_CHARS = 600; // payloads longer than this, or with more lines, start folded
const FOLD_LINES = 12;
// Pretty-printing parses and re-indents: only payloads this small (a deep 64 KB one
// would cost the tab hundreds of megabytes). Larger ones show raw, cut at RAW_PREVIEW
// characters, with a button for the rest.
const PRETTY_MAX_CHARS = 4096;
const RAW_PREVIEW_CHARS = 2000;
const ANNOUNCE_EVERY_MS = 3000; // screen readers hear a summary at most this often
const LABELS = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closed: "Disconnected" };

const startedAt = parsePosition(config.position) ?? new Map();
let lastEventAt = null;
let paused = false;
let held = [];
let unannounced = [];

// -- rendering -----------------------------------------------------------------------

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function renderSince() {
  since.textContent = lastEventAt === null ? "No events yet" : `Last event ${ago(Date.now() - lastEventAt)} ago`;
}

function setState(state, detail = "") {
  stateLine.dataset.state = state;
  stateLine.textContent = detail ? `${LABELS[state] ?? state}: ${detail}` : (LABELS[state] ?? state);
  document.body.dataset.state = state;
}

function pretty(data) {
  if (data.length > PRETTY_MAX_CHARS) return data;
  try {
    return JSON.stringify(JSON.parse(data), null, 2);
  } catch {
    return data; // not JSON: shown as sent
  }
}

// Data that is not JSON (a raw event: text, an HTML fragment for htmx) is shown as
// text, never as HTML: this page is an inspector.
function isJson(data) {
  try {
    JSON.parse(data);
    return true;
  } catch {
    return false;
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function item(event) {
  const li = element("li", "event");
  li.dataset.type = event.type;
  li.dataset.channel = event.channel;
  li.dataset.id = event.id;
  const meta = element("p", "meta");
  meta.append(element("span", "type", event.type));
  li.dataset.format = isJson(event.data) ? "json" : "text";
  if (li.dataset.format === "text") meta.append(element("span", "format", "text"));
  if (event.channel) {
    const channel = element("span", "channel", event.channel);
    channel.title = "channel";
    meta.append(channel);
  }
  const when = new Date(event.receivedAt);
  const time = element("time", "time", when.toLocaleTimeString());
  time.dateTime = when.toISOString();
  meta.append(time);
  if (event.seq) meta.append(element("span", "seq", `#${event.seq}`));
  li.append(meta);

  const text = pretty(event.data);
  const cut = text.length > RAW_PREVIEW_CHARS;
  const body = element("pre", "payload", cut ? `${text.slice(0, RAW_PREVIEW_CHARS)}…` : text);
  const lines = text.split("\n").length;
  const parts = [body];
  if (cut) {
    const more = element("button", "show-all", `Show all ${text.length} characters`);
    more.type = "button";
    more.addEventListener("click", () => {
      body.textContent = text;
      more.remove();
    });
    parts.push(more);
  }
  if (text.length > FOLD_CHARS || lines > FOLD_LINES) {
    const details = element("details", "fold");
    const preview = text.slice(0, 200).replace(/\s+/g, " ").slice(0, 80);
    details.append(element("summary", "", `${preview}… (${lines} lines, ${text.length} characters)`), ...parts);
    li.append(details);
  } else {
    li.append(...parts);
  }
  return li;
}

function add(event) {
  lastEventAt = event.receivedAt;
  renderSince();
  if (paused) {
    held.push(event);
    pauseButton.textContent = `Resume (${held.length} new)`;
    return;
  }
  list.prepend(item(event));
  while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
  empty.hidden = true;
  unannounced.push(event);
}

// One polite summary every few seconds, not one announcement per event.
function announce() {
  if (unannounced.length === 1) {
    const [event] = unannounced;
    announcer.textContent = `New ${event.type} event${event.channel ? ` on ${event.channel}` : ""}`;
  } else if (unannounced.length > 1) {
    announcer.textContent = `${unannounced.length} new events`;
  }
  unannounced = [];
}

function showNotice(text) {
  notice.replaceChildren(element("span", "", `${text} `));
  const reload = element("button", "", "Reload");
  reload.type = "button";
  reload.addEventListener("click", () => location.reload());
  notice.append(reload);
  notice.hidden = false;
}

const handlers = {
  onState: setState,
  onEvent: add,
  onReset(event, reasons) {
    const why = [...new Set(Object.values(reasons))].join("; ");
    showNotice(
      `Some events could not be replayed after the connection dropped${why ? ` (${why})` : ""}; ` +
        "the list may be missing some. Reload for the current state.",
    );
    add(event);
  },
  onSkipped(count) {
    showNotice(`${count} event(s) of types this page does not know were skipped.`);
  },
};

// -- the connection ------------------------------------------------------------------

function connectDirectly() {
  modeLine.textContent = "Own connection";
  new FeedConnection(config, handlers).start();
}

function connectShared() {
  const name = `events-feed:${config.channels.join(",")}`;
  const worker = new SharedWorker(new URL("./feed-worker.js", import.meta.url), { type: "module", name });
  const port = worker.port;
  let welcomed = false;
  // A worker that fails to load, or never answers, leaves this tab on its own.
  const fallback = () => {
    if (welcomed) return;
    welcomed = true;
    port.postMessage({ kind: "bye" });
    connectDirectly();
  };
  worker.addEventListener("error", fallback);
  const timer = setTimeout(fallback, 5000);
  const tabs = (count) => {
    modeLine.textContent = count > 1 ? `One connection shared by ${count} tabs` : "Shared connection (1 tab)";
  };
  port.addEventListener("message", ({ data }) => {
    if (data.kind === "welcome") {
      if (welcomed) return;
      welcomed = true;
      clearTimeout(timer);
      setState(data.state, data.detail);
      tabs(data.tabs);
      // What the worker received before this tab opened, newer than this page's start.
      for (const event of data.recent) {
        if (event.seq > (startedAt.get(event.channel) ?? 0)) add(event);
      }
    } else if (!welcomed) {
      return;
    } else if (data.kind === "state") setState(data.state, data.detail);
    else if (data.kind === "event") add(data.event);
    else if (data.kind === "reset") handlers.onReset(data.event, data.reasons);
    else if (data.kind === "skipped") handlers.onSkipped(data.count);
    else if (data.kind === "tabs") tabs(data.count);
  });
  port.start();
  const hello = () => port.postMessage({ kind: "hello", config });
  hello();
  // Leaving (or entering the back/forward cache) releases this tab's share.
  addEventListener("pagehide", () => port.postMessage({ kind: "bye" }));
  addEventListener("pageshow", (event) => event.persisted && hello());
}

// -- controls --------------------------------------------------------------------------

pauseButton.addEventListener("click", () => {
  paused = !paused;
  pauseButton.setAttribute("aria-pressed", String(paused));
  if (!paused) {
    const waiting = held;
    held = [];
    for (const event of waiting) add(event);
  }
  pauseButton.textContent = paused ? "Resume" : "Pause";
});

clearButton.addEventListener("click", () => {
  list.replaceChildren();
  empty.hidden = false;
  notice.hidden = true;
});

setState("connecting");
renderSince();
setInterval(renderSince, 1000);
setInterval(announce, ANNOUNCE_EVERY_MS);

const wantShared = new URLSearchParams(location.search).get("shared") !== "0";
if (wantShared && typeof SharedWorker === "function") {
  try {
    connectShared();
  } catch {
    connectDirectly();
  }
} else {
  connectDirectly();
}
