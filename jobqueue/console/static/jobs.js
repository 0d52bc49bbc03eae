/* jobqueue console: the jobs table follows its jobs live over server-sent events (GET /live/jobs?ids=...: a
   `refresh` event when one of the listed jobs changed, or, on the first page, when a job was submitted), and has
   htmx fetch the table again then. No polling; without JavaScript the page reads the same, once. After each
   refresh the table lists other jobs, so the stream is opened again for them. */
(function () {
  "use strict";
  var source = null;
  var following = null;

  function count(name) {
    document.body.dataset[name] = String(Number(document.body.dataset[name] || "0") + 1);
  }

  function follow() {
    var live = document.getElementById("live");
    var wanted = live ? live.dataset.liveSrc || null : null;
    if (wanted === following) { return; }
    if (source) { source.close(); source = null; }
    following = wanted;
    if (!wanted || !window.EventSource) { return; }
    source = new EventSource(wanted);
    source.addEventListener("refresh", function () {
      count("liveRefreshes");
      var current = document.getElementById("live");
      if (current && window.htmx) { window.htmx.trigger(current, "jobs-changed"); }
    });
    source.addEventListener("end", function () {
      if (source) { source.close(); source = null; }
    });
  }

  document.addEventListener("DOMContentLoaded", follow);
  document.addEventListener("htmx:afterSwap", function () {
    count("liveSwaps");
    follow();
  });
}());
