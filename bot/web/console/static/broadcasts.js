// Live progress of one broadcast: polls its counts (same origin, the console session's cookie) and
// fills the page's [data-field] elements. A static file: the console allows no inline script.
(function () {
  "use strict";
  var box = document.getElementById("broadcast");
  if (!box) { return; }
  var url = box.getAttribute("data-progress-url");
  var statusEl = box.querySelector('[data-field="status"]');
  var labels = {};
  try { labels = JSON.parse(statusEl.getAttribute("data-labels") || "{}"); } catch (e) { labels = {}; }
  var finished = { done: true, cancelled: true, failed: true };
  function show(data) {
    Object.keys(data).forEach(function (name) {
      var el = box.querySelector('[data-field="' + name + '"]');
      if (!el || name === "status") { return; }
      el.textContent = String(data[name]);
    });
    statusEl.textContent = labels[data.status] || data.status;
    if (finished[data.status]) {
      var form = box.querySelector(".cancel-form");
      if (form) { form.hidden = true; }
    }
    return !finished[data.status];
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data && !show(data)) { return; }
        window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 1000);
})();
