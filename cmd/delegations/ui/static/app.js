// Live updates for the status page: the server's event stream says which
// delegation changed; the page fetches its own fragment again (rendered and
// escaped by the server) and swaps it in. No framework, no build step.
"use strict";
(function () {
  var body = document.body;
  var page = body.dataset.page;
  if (page !== "board" && page !== "delegation") return;
  var live = document.getElementById("live");
  var pending = false, running = false;

  function refresh() {
    if (running) { pending = true; return; }
    running = true;
    var url = page === "board"
      ? "/board" + location.search
      : "/d/" + encodeURIComponent(body.dataset.id) + "?fragment=1";
    var target = document.getElementById(page === "board" ? "board" : "detail");
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        target.innerHTML = html;
        body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
      })
      .catch(function () {})
      .then(function () {
        running = false;
        if (pending) { pending = false; refresh(); }
      });
  }

  var es = new EventSource("/events?after=" + encodeURIComponent(body.dataset.seq || ""));
  es.addEventListener("open", function () {
    live.textContent = "live";
    live.className = "live on";
  });
  es.addEventListener("error", function () {
    live.textContent = "reconnecting…";
    live.className = "live off";
  });
  es.addEventListener("change", function (e) {
    var c = JSON.parse(e.data);
    body.dataset.seq = String(c.seq);
    if (page === "board" || c.id === body.dataset.id) refresh();
  });
  es.addEventListener("reload", function () { location.reload(); });
  // Ages and overdue deadlines move with the clock, not with events.
  setInterval(refresh, 30000);
})();
