// wantbuild web view: the little glue htmx and Mermaid need. No framework.
(function () {
  "use strict";
  var MAX_ROWS = 500;

  function renderGraphs(root) {
    if (!window.mermaid) return;
    var nodes = Array.prototype.slice.call((root || document).querySelectorAll("pre.mermaid:not([data-processed])"));
    if (!nodes.length) return;
    window.mermaid.run({ nodes: nodes }).then(function () { nodes.forEach(linkNodes); })
      .catch(function (err) { console.error("mermaid", err); });
  }

  // Node nI of a flowchart links to data-links[I] (the server numbers nodes in that order).
  function linkNodes(pre) {
    var links;
    try { links = JSON.parse(pre.getAttribute("data-links") || "[]"); } catch (e) { return; }
    if (!links.length) return;
    pre.querySelectorAll("g.node").forEach(function (g) {
      var m = /(?:^|-)n(\d+)-/.exec(g.id || "");
      if (!m || !links[+m[1]]) return;
      g.classList.add("linked");
      g.setAttribute("data-href", links[+m[1]]);
      g.addEventListener("click", function () { window.location.href = links[+m[1]]; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (window.mermaid) {
      window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral",
        flowchart: { htmlLabels: false, useMaxWidth: true }, state: { useMaxWidth: true } });
    }
    renderGraphs(document);
  });

  document.body.addEventListener("htmx:afterSwap", function (ev) { renderGraphs(ev.target.parentNode || document); });
  document.body.addEventListener("htmx:oobAfterSwap", function (ev) { renderGraphs(document); });

  // New rows on the events page: mark them, and keep the table bounded.
  document.body.addEventListener("htmx:sseBeforeMessage", function (ev) {
    if (ev.detail && ev.detail.type === "rows") {
      var body = document.getElementById("rows");
      if (body) { window.setTimeout(function () { trim(body); }, 0); }
    }
  });
  function trim(body) {
    var rows = body.rows;
    for (var i = 0; i < rows.length && i < 200; i++) { if (!rows[i].dataset.seen) { rows[i].classList.add("fresh"); rows[i].dataset.seen = "1"; } }
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  }
})();
