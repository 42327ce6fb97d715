// One live connection to /events/ for the feed: used by the page itself, or by the
// shared worker that serves all tabs (feed-worker.js). No DOM here.
//
// Ids on the wire are `channel:seq`, or `a:3,b:7` for several channels (events/positions.py).
// The connection keeps every channel's seq and, for each event, finds the channel whose
// seq moved. A seq that jumps by more than one means EventSource skipped events: it only
// hands named types to listeners registered per name. Then the connection asks the server
// for the channels' types, listens to the new ones and reconnects from the position
// before the gap, so the skipped events are replayed, in order. A skipped event with no
// later one to reveal it is found by asking for the types every few seconds.

const STREAM_PATH = "/events/";
const TYPES_PATH = "/feed/types/";
const RESET = "stream-reset";
const MAX_BACKOFF_MS = 30000;
const TYPES_POLL_MS = 5000;

export function parsePosition(id) {
  if (!id) return null;
  const positions = new Map();
  for (const part of id.split(",")) {
    const at = part.lastIndexOf(":");
    const seq = Number(part.slice(at + 1));
    if (at < 1 || !Number.isSafeInteger(seq)) return null;
    positions.set(part.slice(0, at), seq);
  }
  return positions;
}

export function formatPosition(positions) {
  return [...positions].map(([channel, seq]) => `${channel}:${seq}`).join(",");
}

function query(channels, extra = {}) {
  const params = new URLSearchParams();
  for (const channel of channels) params.append("channel", channel);
  for (const [name, value] of Object.entries(extra)) if (value) params.set(name, value);
  return params.toString();
}

export class FeedConnection {
  // handlers: onState(state, detail), onEvent(event), onReset(event, reasons), onSkipped(count)
  constructor({ channels, types = [], position = "" }, handlers) {
    this.channels = channels;
    this.types = new Set(types);
    this.positions = parsePosition(position) ?? new Map(channels.map((c) => [c, 0]));
    this.started = Boolean(position);
    this.handlers = handlers;
    this.source = null;
    this.state = "connecting";
    this.failures = 0;
    this.healing = false;
    this.polling = false;
    this.healFailures = 0;
    this.timer = null;
    this.poll = null;
  }

  start() {
    this._open(this.started ? formatPosition(this.positions) : "");
    this.poll = setInterval(() => this._pollTypes(), TYPES_POLL_MS);
  }

  stop() {
    clearInterval(this.poll);
    this._close();
  }

  _close() {
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }

  addTypes(types) {
    for (const type of types) {
      if (!this.types.has(type)) {
        this.types.add(type);
        this._listen(this.source, type);
      }
    }
  }

  _setState(state, detail = "") {
    this.state = state;
    this.handlers.onState?.(state, detail);
  }

  _open(from) {
    this._close();
    const source = new EventSource(`${STREAM_PATH}?${query(this.channels, { last_event_id: from })}`, {
      withCredentials: true,
    });
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this._setState("live");
    };
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) this._refused();
      else this._setState("reconnecting");
    };
    source.onmessage = (message) => this._receive("message", message);
    source.addEventListener(RESET, (message) => this._receive(RESET, message));
    for (const type of this.types) this._listen(source, type);
  }

  _listen(source, type) {
    if (source && type !== "message" && type !== RESET) {
      source.addEventListener(type, (message) => this._receive(type, message));
    }
  }

  // EventSource gives up for good on an answer that is not a stream (a 4xx, a proxy's
  // 502): ask the stream URL with HEAD why, and try again later unless it is a refusal.
  async _refused() {
    this.source = null;
    let status = 0;
    try {
      status = (await fetch(`${STREAM_PATH}?${query(this.channels)}`, { method: "HEAD" })).status;
    } catch {
      /* the server is unreachable: retry below */
    }
    if (status === 400 || status === 401 || status === 403) {
      this._setState("closed", `the server refused the stream (HTTP ${status})`);
      return;
    }
    this.failures += 1;
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** this.failures);
    this._setState("reconnecting");
    this.timer = setTimeout(() => this._open(formatPosition(this.positions)), delay);
  }

  _receive(type, message) {
    const next = parsePosition(message.lastEventId);
    if (type === RESET || next === null) {
      if (next) this.positions = next;
      let reasons = {};
      try {
        reasons = JSON.parse(message.data).reasons ?? {};
      } catch {
        /* keep {} */
      }
      this.handlers.onReset?.(this._event(type, message, "", 0), reasons);
      return;
    }
    let moved = [];
    let advance = 0;
    for (const [channel, seq] of next) {
      const previous = this.positions.get(channel) ?? 0;
      if (seq !== previous) moved.push(channel);
      advance += seq - previous;
    }
    if (moved.length === 0) return; // already shown (a replay overlapping what we had)
    // Without a starting position (none was given) the first event cannot reveal a gap.
    if (!this.started) advance = 1;
    this.started = true;
    if (advance > 1 && !this.healing && this.healFailures < 1) {
      this._heal();
      return;
    }
    if (advance > 1) this.handlers.onSkipped?.(advance - 1);
    this.healFailures = 0;
    this.positions = next;
    const channel = moved.length === 1 ? moved[0] : "";
    this.handlers.onEvent?.(this._event(type, message, channel, channel ? next.get(channel) : 0));
  }

  _event(type, message, channel, seq) {
    return { type, channel, seq, id: message.lastEventId, data: message.data, receivedAt: Date.now() };
  }

  // Asks the server for the channels' types; true when there are new ones.
  async _learnTypes() {
    let added = false;
    try {
      const response = await fetch(`${TYPES_PATH}?${query(this.channels)}`, { credentials: "same-origin" });
      if (response.ok) {
        for (const type of (await response.json()).types) {
          if (!this.types.has(type)) {
            this.types.add(type);
            added = true;
          }
        }
      }
    } catch {
      /* the server is unreachable: nothing learnt */
    }
    return added;
  }

  // Events were skipped: learn their types, then replay from before the gap.
  async _heal() {
    this.healing = true;
    const from = formatPosition(this.positions);
    this._close();
    const added = await this._learnTypes();
    this.healFailures = added ? 0 : this.healFailures + 1;
    this.healing = false;
    this._open(from);
  }

  // A new type's events are skipped silently until a known one follows them: when the
  // server knows types this connection does not, resume from the last event shown.
  async _pollTypes() {
    if (this.healing || this.polling || this.state !== "live") return;
    this.polling = true;
    const added = await this._learnTypes();
    this.polling = false;
    if (added && !this.healing && this.source !== null) this._open(formatPosition(this.positions));
  }
}
