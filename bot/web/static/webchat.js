// The web chat page: messages go out from a small outbox kept in localStorage (so nothing typed is
// lost on a flaky connection); replies are polled. The page's strings come from the catalogue as JSON.
(function () {
  "use strict";
  var S = {};
  try { S = JSON.parse(document.getElementById("webchat-strings").textContent) || {}; } catch (err) { S = {}; }
  var lang = document.documentElement.lang;
  var log = document.getElementById("log"), text = document.getElementById("text");
  var statusEl = document.getElementById("status");
  document.getElementById("send").textContent = S.webchat_send || "";
  text.placeholder = S.webchat_placeholder || "";

  function rid() {
    var a = new Uint8Array(16); crypto.getRandomValues(a);
    return Array.from(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  var clientId = localStorage.getItem("sanad_client_id");
  if (!clientId) { clientId = rid(); localStorage.setItem("sanad_client_id", clientId); }
  var after = 0, outbox = JSON.parse(localStorage.getItem("sanad_unsent") || "[]");

  function bubble(cls, t) {
    var d = document.createElement("div"); d.className = "msg " + cls; d.dir = "auto";
    d.textContent = t; log.appendChild(d); log.scrollTop = log.scrollHeight; return d;
  }
  function buttons(list) {
    if (!list || !list.length) return;
    var w = document.createElement("div"); w.className = "buttons";
    list.forEach(function (b) {
      var x = document.createElement("button"); x.type = "button"; x.textContent = b.title;
      x.addEventListener("click", function () { w.remove(); queue({payload: b.payload}, b.title); });
      w.appendChild(x);
    });
    log.appendChild(w); log.scrollTop = log.scrollHeight;
  }
  bubble("bot", S.webchat_intro || "");

  function save() { localStorage.setItem("sanad_unsent", JSON.stringify(outbox)); }
  function queue(msg, shown) {
    outbox.push({message_id: rid(), client_id: clientId, language: lang, text: msg.text, payload: msg.payload,
                 shown: shown});
    bubble("me pending", shown); save(); flush();
  }
  var flushing = false;
  function flush() {
    if (flushing || !outbox.length) return;
    flushing = true;
    var m = outbox[0], retryMs = 2000;
    var body = {client_id: m.client_id, message_id: m.message_id, language: m.language};
    if (m.payload) body.payload = m.payload; else body.text = m.text;
    fetch("/chat/api/messages", {method: "POST", headers: {"Content-Type": "application/json",
      "X-Requested-With": "sanad-webchat"}, body: JSON.stringify(body)})
      .then(function (r) {
        if (r.status === 429) {
          // too many messages: say so, keep the message and send it when the wait is over
          return r.json().catch(function () { return {}; }).then(function (d) {
            statusEl.textContent = d.message || "";
            retryMs = Math.max(1000, 1000 * (d.retry_after_s || 5));
            throw new Error("slow down");
          });
        }
        if (r.status >= 500) throw new Error("retry");
        outbox.shift(); save(); statusEl.textContent = "";
        var pending = document.querySelector(".pending"); if (pending) pending.classList.remove("pending");
      })
      .catch(function (err) { if (String(err && err.message) !== "slow down") statusEl.textContent = S.webchat_offline; })
      .finally(function () { flushing = false; if (outbox.length) setTimeout(flush, retryMs); });
  }
  function poll() {
    fetch("/chat/api/messages?client_id=" + clientId + "&after=" + after)
      .then(function (r) { return r.json(); })
      .then(function (d) {
        (d.messages || []).forEach(function (m) { after = Math.max(after, m.id); bubble(m.from, m.text); buttons(m.buttons); });
        if (d.language && d.language !== lang) {
          lang = d.language; document.documentElement.lang = lang;
          document.documentElement.dir = (lang === "ar" || lang === "fa") ? "rtl" : "ltr";
        }
      })
      .catch(function () {})
      .finally(function () { setTimeout(poll, document.hidden ? 4000 : 1000); });
  }
  document.getElementById("form").addEventListener("submit", function (e) {
    e.preventDefault(); var t = text.value.trim();
    if (!t) return; text.value = ""; queue({text: t}, t);
  });
  document.getElementById("lang").addEventListener("change", function (e) { location.search = "?lang=" + e.target.value; });
  window.addEventListener("online", flush);
  outbox.forEach(function (m) { bubble("me pending", m.shown); });
  flush(); poll();
})();
