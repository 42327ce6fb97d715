// The live feed: one EventSource on /events/, events listed newest first.
// EventSource resumes by itself after a dropped connection, sending Last-Event-ID.

const channels = JSON.parse(document.getElementById("feed-channels").textContent);
const types = JSON.parse(document.getElementById("feed-types").textContent);
const list = document.getElementById("events");
const statusLine = document.getElementById("status");
const notice = document.getElementById("notice");
const empty = document.getElementById("empty");
const FOLD_AT = 600;

let lastEventAt = null;

function setState(state) {
  statusLine.dataset.state = state;
  render();
}

function render() {
  const since = lastEventAt ? `, last event ${Math.round((Date.now() - lastEventAt) / 1000)} s ago` : "";
  statusLine.textContent = statusLine.dataset.state + since;
}

function streamUrl() {
  const query = new URLSearchParams();
  for (const channel of channels) query.append("channel", channel);
  return `/events/?${query}`;
}

function show(type, message) {
  let payload = message.data;
  try {
    payload = JSON.stringify(JSON.parse(message.data), null, 2);
  } catch { /* not JSON: show as sent */ }
  const item = document.createElement("li");
  const meta = document.createElement("div");
  meta.className = "meta";
  const typeLabel = document.createElement("span");
  typeLabel.className = "type";
  typeLabel.textContent = type;
  const channel = document.createElement("span");
  channel.textContent = message.lastEventId.split(",").length > 1 ? "" : message.lastEventId.split(":")[0];
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString();
  meta.append(typeLabel, channel, time);
  const body = document.createElement("pre");
  body.textContent = payload;
  if (payload.length > FOLD_AT) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `${payload.slice(0, 80)}… (${payload.length} characters)`;
    details.append(summary, body);
    item.append(meta, details);
  } else {
    item.append(meta, body);
  }
  item.dataset.type = type;
  list.prepend(item);
  empty.hidden = true;
  lastEventAt = Date.now();
  render();
}

const source = new EventSource(streamUrl(), { withCredentials: true });
source.onopen = () => setState("live");
source.onerror = () => setState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
source.onmessage = (message) => show("message", message);
source.addEventListener("stream-reset", (message) => {
  notice.hidden = false;
  notice.textContent = "Some events could not be replayed after the reconnection; reload for the current state.";
  show("stream-reset", message);
});
// EventSource hands named event types only to listeners registered for that name, so
// the page listens to every type these channels have used (from the server's log) and
// to any given as ?type=... in the page's URL.
for (const type of types) {
  if (type !== "message" && type !== "stream-reset") {
    source.addEventListener(type, (message) => show(type, message));
  }
}
setInterval(render, 1000);
