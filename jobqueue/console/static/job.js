/* jobqueue console: a job's page. Follows the job live over server-sent events (GET /live/jobs/<id>: each `card`
   event is the page's changing part, `end` closes) and copies the job id with one click. No polling; without
   JavaScript the page reads the same, once. */
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (live && live.dataset.liveSrc && window.EventSource) {
    var source = new EventSource(live.dataset.liveSrc);
    source.addEventListener("card", function (event) {
      live.innerHTML = event.data;  /* server-rendered, escaped by the template */
      live.dataset.updates = String(Number(live.dataset.updates || "0") + 1);
    });
    source.addEventListener("end", function (event) {
      source.close();
      live.dataset.ended = event.data;
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) { live.dataset.ended = "error"; }
    };
  }

  function copied(button, text) {
    var note = button.parentNode.querySelector(".copied");
    if (note) { note.textContent = text; }
  }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var value = button.dataset.copy;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(value).then(function () { copied(button, "Copied"); },
                                                  function () { copied(button, "Select the id to copy it"); });
      } else {
        var range = document.createRange();
        var id = button.parentNode.querySelector(".id");
        range.selectNodeContents(id);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        copied(button, document.execCommand("copy") ? "Copied" : "Selected: press Ctrl+C to copy");
      }
    });
  });
}());
