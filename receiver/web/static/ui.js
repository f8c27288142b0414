// Follows the page without a reload: every data-refresh seconds, the page's live part is
// asked for again (?fragment=live, server-rendered and escaped) and swapped in. Served as a
// file so that the pages' Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch || !window.URL) {
    return;
  }
  var seconds = Number(live.getAttribute("data-refresh")) || 5;

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "live");
    return url.toString();
  }

  function swap(html) {
    // Keep what the reader opened (<details> with an id) open across the swap.
    var open = [];
    live.querySelectorAll("details[open][id]").forEach(function (d) { open.push(d.id); });
    live.innerHTML = html;
    open.forEach(function (id) {
      var d = document.getElementById(id);
      if (d) { d.open = true; }
    });
    live.setAttribute("data-updated", new Date().toISOString());
  }

  function poll() {
    fetch(fragmentUrl(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(swap)
      .catch(function () { live.setAttribute("data-stale", "true"); })
      .then(function () { window.setTimeout(poll, seconds * 1000); });
  }

  window.setTimeout(poll, seconds * 1000);
})();
