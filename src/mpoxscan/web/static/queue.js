// The expert's queue: refreshed every minute while "Refresh every minute" is ticked (ticked unless this browser was
// told otherwise; the choice is kept here). It replaces a <meta http-equiv="refresh">, a timed reload the expert
// could not stop (axe: meta-refresh, WCAG 2.2.1).
"use strict";
(() => {
  const KEY = "mpoxscan-queue-auto-refresh", box = document.getElementById("auto-refresh");
  if (!box) return;
  box.checked = localStorage.getItem(KEY) !== "off";
  let timer = null;
  const arm = () => {
    clearTimeout(timer);
    // The refresh link's address: the same order, without a one-off notice such as "?answered=...".
    timer = box.checked ? setTimeout(() => location.assign(document.getElementById("refresh").href),
                                     1000 * Number(box.dataset.seconds)) : null;
    document.body.dataset.autoRefresh = box.checked ? "on" : "off";
  };
  box.addEventListener("change", () => { localStorage.setItem(KEY, box.checked ? "on" : "off"); arm(); });
  arm();
})();
