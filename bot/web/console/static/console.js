// Live updates: the server pushes small events (ids only); the page re-reads the fragment they concern.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var queue = document.getElementById("queue");
  var conv = document.querySelector(".conversation");
  var transcriptBox = document.getElementById("transcript");
  // the page's strings in the console's language (bot/i18n/locales/<lang>/console.json, rendered by base.html)
  var strings = {};
  try { strings = JSON.parse(document.getElementById("console-strings").textContent) || {}; } catch (err) { strings = {}; }
  function tr(name) { return strings[name] || ""; }
  // dates in the console's language, Gregorian and with Latin digits as Babel writes the rest of the page
  var uiLang = document.documentElement.lang || "en";
  var locales = [uiLang + "-u-ca-gregory-nu-latn", uiLang];

  function toast(text) {
    if (!live || !text) return;
    live.textContent = text; live.hidden = false;
    clearTimeout(toast.t); toast.t = setTimeout(function () { live.hidden = true; }, 4000);
  }
  function localTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) el.textContent = d.toLocaleString(locales, {day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit"});
    });
  }
  function refresh(box) {
    return fetch(box.getAttribute("data-fragment"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (r.status === 401) { location.href = "/console/login"; } return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || html === undefined) return;
        var atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
        box.innerHTML = html; localTimes(box);
        if (box === transcriptBox && atBottom) box.scrollTop = box.scrollHeight;
      });
  }
  function scrollDown() { if (transcriptBox) transcriptBox.scrollTop = transcriptBox.scrollHeight; }

  var submitting = false;  // a form is on its way: never reload over its navigation
  document.addEventListener("submit", function () { submitting = true; }, true);

  localTimes(); scrollDown();
  if (!window.EventSource) return;
  var source = new EventSource("/console/events");
  source.addEventListener("hello", function () { document.body.setAttribute("data-live", "1"); });
  source.addEventListener("console", function (e) {
    var ev; try { ev = JSON.parse(e.data); } catch (err) { return; }
    // notify.js turns some of these into browser notifications and a sound
    document.dispatchEvent(new CustomEvent("sanad:event", {detail: ev}));
    if (ev.type === "security_alert") toast(tr("security_alert"));
    if (queue) {
      refresh(queue);
      if (ev.type === "handoff_new" || ev.type === "alert") toast(tr(ev.urgent ? "urgent" : "waiting"));
    }
    if (conv && String(ev.handoff_id) === conv.getAttribute("data-handoff")) {
      var stateChange = ev.type === "handoff_claimed" || ev.type === "handoff_closed" || ev.type === "handoff_transferred";
      var draft = document.querySelector("form.reply textarea");
      if (submitting) return;
      if (stateChange && ev.state !== conv.getAttribute("data-state") && !(draft && draft.value)) { location.reload(); return; }
      if (transcriptBox) refresh(transcriptBox);
      if (ev.type === "message") toast(tr("message"));
    }
  });
})();
