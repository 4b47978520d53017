// Browser notifications and a sound for what needs a mentor now (with the mentor's permission).
// console.js passes every live event on as a "sanad:event"; the strings come from the page's JSON
// (bot/web/console/i18n.py JS_KEYS), in the console's language.
(function () {
  "use strict";
  var body = document.body;
  var me = Number(body.getAttribute("data-me"));
  var lead = body.getAttribute("data-role") === "lead";
  var strings = {};
  try { strings = JSON.parse(document.getElementById("console-strings").textContent) || {}; } catch (err) { strings = {}; }
  function tr(name) { return strings[name] || ""; }
  var button = document.getElementById("notify-on");
  var audio = null;

  function canNotify() { return "Notification" in window && Notification.permission === "granted"; }
  function showButton() {
    if (!button) return;
    var needsPermission = "Notification" in window && Notification.permission === "default";
    button.hidden = !(needsPermission || !audio);
  }
  function enable() {
    // sound needs a gesture of the user before the browser lets it play
    var Context = window.AudioContext || window.webkitAudioContext;
    if (Context && !audio) { audio = new Context(); }
    if (audio && audio.state === "suspended") { audio.resume(); }
    try { sessionStorage.setItem("sanad-sound", "1"); } catch (err) { /* private mode */ }
    if ("Notification" in window && Notification.permission === "default") {
      Notification.requestPermission().then(showButton, showButton);
    } else { showButton(); }
  }
  function beep(urgent) {
    if (!audio || audio.state !== "running") return;
    var times = urgent ? [0, 0.25, 0.5] : [0];
    times.forEach(function (at) {
      var osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = urgent ? 880 : 660;
      gain.gain.setValueAtTime(0.001, audio.currentTime + at);
      gain.gain.exponentialRampToValueAtTime(0.25, audio.currentTime + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + at + 0.2);
      osc.connect(gain); gain.connect(audio.destination);
      osc.start(audio.currentTime + at); osc.stop(audio.currentTime + at + 0.22);
    });
  }
  function tell(text, ev, urgent) {
    if (!text) return;
    beep(urgent);
    if (canNotify() && document.visibilityState !== "visible") {
      var n = new Notification(text, {tag: "sanad-" + ev.handoff_id, renotify: true, requireInteraction: urgent});
      n.onclick = function () { window.focus(); location.href = "/console/h/" + ev.handoff_id; n.close(); };
    }
  }
  // which live events are worth a notification, and how loud
  function message(ev) {
    if (ev.type === "handoff_urgent" || (ev.type === "alert" && ev.urgent)) return [tr("urgent"), true];
    if (ev.type === "lead_alert" && lead) return [tr("lead_" + ev.why) || tr("lead"), true];
    if (ev.type === "offer" && ev.offered_to === me) return [tr("offer"), false];
    if (ev.type === "handoff_new" && !ev.urgent) return [tr("waiting"), false];
    if (ev.type === "message" && ev.mentor_id === me) return [tr("message"), false];
    if (ev.type === "handoff_transferred" && ev.mentor_id === me) return [tr("transferred"), false];
    return null;
  }

  if (button) { button.addEventListener("click", enable); }
  try { if (sessionStorage.getItem("sanad-sound") === "1") { document.addEventListener("click", enable, {once: true}); } } catch (err) { /* private mode */ }
  showButton();
  document.addEventListener("sanad:event", function (e) {
    var found = message(e.detail || {});
    if (found) tell(found[0], e.detail, found[1]);
  });
})();
