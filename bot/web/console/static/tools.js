// The conversation page's tools: saved replies (type "/" in the reply box, or the picker) and the
// delivered/read ticks of the mentor's replies, re-read while some are not read yet.
(function () {
  "use strict";
  var box = document.querySelector("form.reply textarea");
  var list = document.getElementById("saved-suggest");
  var picker = document.getElementById("saved-picker");
  var replies = [];
  try { replies = JSON.parse(document.getElementById("saved-replies").textContent) || []; } catch (err) { replies = []; }

  function insert(name) {
    var found = replies.filter(function (r) { return r.name === name; })[0];
    if (!found || !box) return;
    box.value = box.value.replace(/^\/\S*\s?/, "");
    box.value = box.value ? found.text + " " + box.value : found.text;
    if (list) list.hidden = true;
    box.focus();
  }
  function suggest() {
    if (!box || !list) return;
    var match = /^\/(\S*)$/.exec(box.value);
    list.innerHTML = "";
    if (!match || !replies.length) { list.hidden = true; return; }
    var wanted = match[1].toLowerCase();
    var shown = replies.filter(function (r) { return r.name.toLowerCase().indexOf(wanted) === 0; }).slice(0, 8);
    shown.forEach(function (r, index) {
      var item = document.createElement("li");
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "/" + r.name + " — " + r.text.slice(0, 80);
      button.setAttribute("dir", "auto");
      button.addEventListener("click", function () { insert(r.name); });
      if (index === 0) button.className = "first";
      item.appendChild(button); list.appendChild(item);
    });
    list.hidden = shown.length === 0;
  }
  if (box) {
    box.addEventListener("input", suggest);
    box.addEventListener("keydown", function (e) {
      if ((e.key === "Tab" || e.key === "Enter") && list && !list.hidden) {
        var first = list.querySelector("button.first");
        if (first) { e.preventDefault(); first.click(); }
      } else if (e.key === "Escape" && list) { list.hidden = true; }
    });
  }
  if (picker) {
    picker.addEventListener("change", function () { if (picker.value) { insert(picker.value); picker.value = ""; } });
  }

  // ticks: WhatsApp reports delivered and read after the send; re-read the transcript until all are read
  var transcript = document.getElementById("transcript");
  function pending() { return transcript && transcript.querySelector('.ticks:not([data-delivery="read"])'); }
  setInterval(function () {
    if (!pending() || document.visibilityState !== "visible") return;
    fetch(transcript.getAttribute("data-fragment"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html) { transcript.innerHTML = html; } });
  }, 20000);
})();
