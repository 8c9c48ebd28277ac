// Live updates without reloading: follow /api/live (server-sent events); when a change concerns this page, fetch
// the page again and swap the regions marked data-live-region. Falls back to polling /api/live/poll.
(function () {
  "use strict";
  var topics = (document.body.getAttribute("data-live") || "").split(" ").filter(Boolean);
  var status = document.getElementById("live-status");
  var head = document.getElementById("head-block");
  var timer = null;
  var busy = false;

  function setLive(on) {
    if (!status) return;
    status.className = "live " + (on ? "on" : "off");
    status.title = on ? "live updates on" : "live updates reconnecting";
  }

  function refresh() {
    if (timer) return;
    timer = setTimeout(function () {
      timer = null;
      if (busy) { refresh(); return; }
      busy = true;
      fetch(window.location.href, { headers: { "X-Live-Refresh": "1" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live-region]").forEach(function (el) {
            var fresh = doc.getElementById(el.id);
            if (fresh && fresh.innerHTML !== el.innerHTML) {
              el.replaceWith(fresh);
              fresh.classList.add("flash");
            }
          });
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, 400);
  }

  function wants(kind, data) {
    for (var i = 0; i < topics.length; i++) {
      var t = topics[i];
      if (kind === "block" && t === "block") return true;
      if (kind === "round" || kind === "task") {
        if (t === "round:*") return true;
        if (t === "round:" + data.task) return true;
        if (t === "round:" + data.task + "/" + data.round) return true;
      }
    }
    return false;
  }

  function onEvent(kind, data) {
    if (kind === "block" && head && data.number !== undefined) {
      head.textContent = "#" + data.number;
      head.setAttribute("href", "/block/" + data.number);
    }
    if (wants(kind, data)) refresh();
  }

  if (window.EventSource) {
    var source = new EventSource("/api/live");
    source.onopen = function () { setLive(true); };
    source.onerror = function () { setLive(false); };
    ["block", "round", "task"].forEach(function (kind) {
      source.addEventListener(kind, function (e) {
        try { onEvent(kind, JSON.parse(e.data)); } catch (err) { /* ignore malformed */ }
      });
    });
  } else {
    var last = null;
    setInterval(function () {
      fetch("/api/live/poll?after=" + (last === null ? 0 : last))
        .then(function (r) { return r.json(); })
        .then(function (body) {
          setLive(true);
          if (last !== null) body.events.forEach(function (e) { onEvent(e.kind, e.data); });
          last = body.last;
        })
        .catch(function () { setLive(false); });
    }, 2000);
  }
})();
