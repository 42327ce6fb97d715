// The demo page's connection state, from the events htmx's SSE extension fires.
const state = document.getElementById("state");

function show(name, label) {
  state.dataset.state = name;
  state.textContent = label;
}

document.body.addEventListener("htmx:sseOpen", () => show("live", "Live"));
document.body.addEventListener("htmx:sseError", () => show("reconnecting", "Reconnecting…"));
