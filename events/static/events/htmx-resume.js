/*
 * Resume for htmx's SSE extension (htmx 2 with htmx-ext-sse 2.x): nothing published
 * while the stream was refused is lost.
 *
 * Why: a browser's EventSource resumes by itself after a dropped connection (it
 * reconnects with Last-Event-ID). But when a reconnect is answered with anything other
 * than a 200 stream (a proxy's 502 during a deploy, a 503 while the database is down),
 * it stops for good. The extension then opens a new EventSource on the `sse-connect`
 * URL, which knows no id: the stream starts from "now", and what was published in
 * between never arrives.
 *
 * What: load this after htmx (before or after the extension). It replaces
 * `htmx.createEventSource`, which the extension calls for every EventSource it opens,
 * by one that remembers the id of the last event received from each URL and starts
 * the next EventSource of that URL from it, with `?last_event_id=` (the server reads
 * it like a Last-Event-ID header; a header, sent by the browser's own reconnects,
 * wins). Events are seen for the types the page listens to (`sse-swap`, `hx-trigger`),
 * which is all that matters: a resumed stream replays everything after that id.
 *
 * Until the first event arrives there is no id to remember: render the position the
 * page was built at into the URL (`sse-connect="/events/orders/?last_event_id=..."`,
 * events.html.stream_position) so that this window is covered too.
 */
(function () {
  "use strict";

  if (typeof htmx === "undefined") {
    console.warn("htmx-resume.js: load htmx first; SSE streams will not resume after a refused reconnect");
    return;
  }

  const lastSeen = new Map(); // sse-connect URL -> id of the last event received from it

  function from(url, id) {
    const resumed = new URL(url, document.baseURI);
    resumed.searchParams.set("last_event_id", id);
    return resumed.href;
  }

  htmx.createEventSource = function (url) {
    const id = lastSeen.get(url);
    // withCredentials as the extension's own createEventSource: cookies go cross-origin too.
    const source = new EventSource(id ? from(url, id) : url, { withCredentials: true });
    const remember = (event) => {
      if (event.lastEventId) lastSeen.set(url, event.lastEventId);
    };
    // The extension adds one listener per event type it swaps or triggers on; watch
    // the same types, ahead of its listeners.
    const watched = new Set();
    const addEventListener = source.addEventListener;
    source.addEventListener = function (type, listener, options) {
      if (!watched.has(type)) {
        watched.add(type);
        addEventListener.call(source, type, remember);
      }
      return addEventListener.call(source, type, listener, options);
    };
    return source;
  };
})();
