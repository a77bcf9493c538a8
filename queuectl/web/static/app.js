// queuectl web: live updates by server-sent events. No framework, no build step.
// The live part of a page (#live) is HTML the server rendered and escaped; the log tail is
// text, added with textContent. Nothing here builds markup from data.
(function () {
  "use strict";
  var conn = document.getElementById("conn");
  function setConn(ok, why) {
    if (!conn) return;
    conn.className = "conn " + (ok ? "up" : "down");
    conn.textContent = ok ? "live" : "offline";
    conn.title = why || (ok ? "live updates" : "reconnecting");
  }

  // Ask before the buttons marked data-confirm do something that cannot be undone.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form && form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
    }
  }, true);

  var live = document.getElementById("live");
  if (live && live.dataset.live && window.EventSource) {
    var es = new EventSource(live.dataset.live);
    es.addEventListener("live", function (e) {
      var focused = document.activeElement;
      // Someone typing in a form of the live part keeps it until they leave the field.
      if (focused && live.contains(focused) && /^(INPUT|SELECT|TEXTAREA)$/.test(focused.tagName)) return;
      live.innerHTML = e.data;
      setConn(true);
      // A job's edit form is for a waiting job: hide it once the job has started or ended.
      var edit = document.getElementById("edit");
      var marker = live.querySelector("[data-waiting]");
      if (edit && marker) edit.hidden = marker.dataset.waiting !== "1";
    });
    es.addEventListener("down", function (e) { setConn(false, e.data); });
    es.onopen = function () { setConn(true); };
    es.onerror = function () { setConn(false); };
  }

  var log = document.getElementById("log");
  var logState = document.getElementById("log-state");
  if (log && log.dataset.log && window.EventSource) {
    var stick = true;
    log.addEventListener("scroll", function () {
      stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    });
    var say = function (text) { if (logState) logState.textContent = text; };
    var add = function (text) {
      log.appendChild(document.createTextNode(text));
      if (stick) log.scrollTop = log.scrollHeight;
    };
    var logs = new EventSource(log.dataset.log);
    logs.onopen = function () { say("following"); };
    logs.addEventListener("log", function (e) { add(JSON.parse(e.data)); });
    logs.addEventListener("attempt", function (e) {
      if (log.textContent) add("\n");
      add("── attempt " + e.data + " ──\n");
      say("following attempt " + e.data);
    });
    logs.addEventListener("end", function (e) { say(e.data); logs.close(); });
    logs.addEventListener("down", function (e) { say("daemon not answering: " + e.data); });
  }
})();
