// A SharedWorker holding one connection for every feed tab of the same channels.
//
// Browsers allow about six HTTP/1.1 connections per origin, and each EventSource holds
// one for good: with many tabs open the seventh page stops loading. The page names the
// worker after its channels, so tabs of the same channels share it (and one stream);
// it falls back to its own EventSource where SharedWorker is missing (feed.js).
//
// Messages: tab -> worker {kind: "hello", config} | {kind: "bye"};
// worker -> tab {kind: "welcome", state, detail, recent, tabs} | {kind: "state", ...} |
// {kind: "event", event} | {kind: "reset", event, reasons} | {kind: "skipped", count} | {kind: "tabs", count}.

import { FeedConnection } from "./feed-stream.js";

const RECENT = 100; // events kept for a tab that opens later
const ports = new Set();
const recent = [];
let connection = null;
let state = { state: "connecting", detail: "" };

function broadcast(message) {
  for (const port of ports) port.postMessage(message);
}

function connect(config) {
  connection = new FeedConnection(config, {
    onState(name, detail) {
      state = { state: name, detail };
      broadcast({ kind: "state", ...state });
    },
    onEvent(event) {
      recent.push(event);
      if (recent.length > RECENT) recent.shift();
      broadcast({ kind: "event", event });
    },
    onReset(event, reasons) {
      broadcast({ kind: "reset", event, reasons });
    },
    onSkipped(count) {
      broadcast({ kind: "skipped", count });
    },
  });
  connection.start();
}

function receive(port, message) {
  if (message.kind === "hello") {
    ports.add(port);
    if (connection === null) connect(message.config);
    else connection.addTypes(message.config.types);
    port.postMessage({ kind: "welcome", ...state, recent, tabs: ports.size });
    broadcast({ kind: "tabs", count: ports.size });
  } else if (message.kind === "bye") {
    ports.delete(port);
    broadcast({ kind: "tabs", count: ports.size });
    if (ports.size === 0 && connection !== null) {
      // The last tab left (or went into the back/forward cache): free the connection.
      connection.stop();
      connection = null;
      recent.length = 0;
      state = { state: "connecting", detail: "" };
    }
  }
}

self.addEventListener("connect", (event) => {
  const port = event.ports[0];
  port.addEventListener("message", (message) => receive(port, message.data));
  port.start();
});
