/* jobqueue console: keep the reader's place across htmx's live refreshes (no inline script: the CSP forbids it).
 * A refresh swaps in a new copy of the page's live part. htmx gives the focus back to the element with the same id;
 * this gives back the scroll position of every scrolling region with an id, so a table scrolled sideways on a
 * phone, or read from the keyboard, stays where it was instead of jumping back every few seconds. */
(function () {
  "use strict";
  var kept = [];
  document.addEventListener("htmx:beforeSwap", function () {
    kept = Array.prototype.map.call(document.querySelectorAll(".scroll[id]"), function (region) {
      return [region.id, region.scrollLeft, region.scrollTop];
    });
  });
  document.addEventListener("htmx:afterSwap", function () {
    kept.forEach(function (place) {
      var region = document.getElementById(place[0]);
      if (region) {
        region.scrollLeft = place[1];
        region.scrollTop = place[2];
      }
    });
  });
})();
