// The desk's keyboard: Enter confirms, typing corrects, 1-4 reject, Shift+N picks a candidate.
// Loaded from /static (no inline script), so the page runs under CSP default-src 'self'.
(function () {
  "use strict";
  var REASONS = { "1": "plate_unreadable", "2": "wrong_vehicle", "3": "implausible_measurement", "4": "other" };
  var plain = function (e) { return !e.ctrlKey && !e.metaKey && !e.altKey; };
  var inField = function (el) { return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT"); };

  var form = document.getElementById("decision");
  // Says the keys are live (tests, and a style could show it): set once listeners are on.
  var ready = function () { document.documentElement.dataset.keys = "ready"; };
  if (!form) {
    var start = document.getElementById("start");
    if (start) {
      document.addEventListener("keydown", function (e) {
        if (e.key === "Enter" && plain(e) && !inField(e.target)) { e.preventDefault(); start.requestSubmit(); }
      });
    }
    ready();
    return;
  }
  var plate = document.getElementById("plate");
  var note = document.getElementById("note");
  var hint = document.getElementById("hint");
  var sent = false;
  var button = function (value) { return form.querySelector('button[name="action"][value="' + value + '"]'); };
  var submit = function (value) {
    var b = button(value);
    if (sent || !b) { return; }
    sent = true;
    form.requestSubmit(b);
  };

  document.addEventListener("keydown", function (e) {
    if (!plain(e)) { return; }
    var target = e.target;
    if (target === note) {
      if (e.key === "Enter") { e.preventDefault(); submit("other"); }
      else if (e.key === "Escape") { note.blur(); }
      return;
    }
    if (target === plate) {
      if (e.key === "Enter") { e.preventDefault(); submit("plate"); }
      else if (e.key === "Escape") { plate.blur(); }
      return;
    }
    if (inField(target)) { return; }
    if (form.dataset.state === "withdrawn") {
      if (e.key === "Enter") { e.preventDefault(); submit("acknowledge"); }
      return;
    }
    if (e.key === "Enter") { e.preventDefault(); submit("plate"); return; }
    if (e.shiftKey && /^Digit[1-9]$/.test(e.code)) {
      var picked = document.querySelectorAll("#candidates [data-candidate]")[Number(e.code.slice(5)) - 1];
      if (picked) { e.preventDefault(); plate.value = picked.dataset.candidate; plate.focus(); }
      return;
    }
    if (!e.shiftKey && Object.prototype.hasOwnProperty.call(REASONS, e.key)) {
      e.preventDefault();
      if (REASONS[e.key] === "other" && note.value.trim() === "") {
        note.focus();
        hint.textContent = "Type the reason for rejecting, then Enter.";
        return;
      }
      submit(REASONS[e.key]);
      return;
    }
    if (/^[A-Za-z0-9]$/.test(e.key)) {  // the first character of a correction
      e.preventDefault();
      plate.value = e.key.toUpperCase();
      plate.focus();
      plate.setSelectionRange(plate.value.length, plate.value.length);
    }
  });
  ready();
})();
