// The desk's keyboard (docs/desk.md, "An officer's screen"): Enter confirms, typing corrects, 1-4 reject,
// Shift+N picks a candidate. Loaded from /static (no inline script), so the page runs under
// CSP default-src 'self'.
//
// A key decides only what the officer meant:
// - a focused control does what it says: Enter on a button, a link or a filter field is that
//   control's own action; Enter confirms only from the plate field or with nothing focused;
// - key auto-repeat never decides (a held Enter is one press);
// - no decision key counts before the fine's photo has been decoded, painted and on screen
//   for min_look_ms (data-min-look-ms on the form); the form then carries shown_ms, how
//   long it was on screen, and photo_sha256, the photo the officer saw.
// One-key shortcuts can be turned off or remapped (WCAG 2.2, 2.1.4): the Keys panel in the
// header, kept in localStorage. Ctrl+Z undoes the last decision inside its undo window.
(function () {
  "use strict";
  var REASONS = ["plate_unreadable", "wrong_vehicle", "implausible_measurement", "other"];
  var DEFAULT_KEYS = { plate_unreadable: "1", wrong_vehicle: "2", implausible_measurement: "3", other: "4" };
  var STORAGE = "desk.keys";
  var plain = function (e) { return !e.ctrlKey && !e.metaKey && !e.altKey; };
  var inField = function (el) { return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT"); };
  // Nothing is focused: the page itself receives the key.
  var unfocused = function (el) { return !el || el === document.body || el === document.documentElement; };

  // -- settings: on/off and the reject keys ----------------------------------------------
  var settings = (function () {
    var saved = {};
    try { saved = JSON.parse(window.localStorage.getItem(STORAGE) || "{}") || {}; } catch (err) { saved = {}; }
    var keys = {};
    REASONS.forEach(function (r) {
      var k = saved.keys && typeof saved.keys[r] === "string" && saved.keys[r].length === 1 ? saved.keys[r] : DEFAULT_KEYS[r];
      keys[r] = k;
    });
    return { enabled: saved.enabled !== false, keys: keys };
  })();
  var save = function () {
    try { window.localStorage.setItem(STORAGE, JSON.stringify(settings)); } catch (err) { /* private mode: this page only */ }
  };
  var reasonFor = function (key) {
    for (var i = 0; i < REASONS.length; i++) {
      if (settings.keys[REASONS[i]].toLowerCase() === key.toLowerCase()) { return REASONS[i]; }
    }
    return null;
  };
  var showKeys = function () {
    document.documentElement.dataset.shortcuts = settings.enabled ? "on" : "off";
    document.querySelectorAll("[data-key-for]").forEach(function (el) {
      el.textContent = settings.keys[el.dataset.keyFor];
    });
    var hint = document.getElementById("hint");
    if (hint && hint.dataset.fixed !== "yes") {
      var k = settings.keys;
      hint.textContent = settings.enabled
        ? "Enter confirms the plate as shown · type to correct it, then Enter · " + k.plate_unreadable + ", " +
          k.wrong_vehicle + ", " + k.implausible_measurement + " reject · " + k.other +
          " rejects with a note (type it, then Enter) · Esc leaves a field"
        : "One-key shortcuts are off: Tab to a button and press Enter or Space; Enter in the plate field confirms it";
    }
  };
  var panel = function () {
    var toggle = document.getElementById("keys-enabled");
    if (!toggle) { return; }
    toggle.checked = settings.enabled;
    toggle.addEventListener("change", function () { settings.enabled = toggle.checked; save(); showKeys(); });
    var inputs = document.querySelectorAll("input[data-remap]");
    var problem = document.getElementById("keys-problem");
    var fill = function () { inputs.forEach(function (i) { i.value = settings.keys[i.dataset.remap]; }); };
    fill();
    inputs.forEach(function (input) {
      input.addEventListener("change", function () {
        var key = input.value.trim();
        var taken = reasonFor(key);
        if (key.length !== 1 || key === " " || (taken && taken !== input.dataset.remap)) {
          problem.textContent = key.length !== 1 ? "A shortcut is one character." : "\u201c" + key + "\u201d already rejects as " + taken.replace(/_/g, " ") + ".";
          fill();
          return;
        }
        problem.textContent = "";
        settings.keys[input.dataset.remap] = key;
        save(); showKeys();
      });
    });
    document.getElementById("keys-default").addEventListener("click", function () {
      REASONS.forEach(function (r) { settings.keys[r] = DEFAULT_KEYS[r]; });
      settings.enabled = true; toggle.checked = true; problem.textContent = "";
      fill(); save(); showKeys();
    });
  };
  panel();
  showKeys();

  // Ctrl+Z (Cmd+Z) undoes the last decision while its window is open (the banner's Undo
  // form). In a text field Ctrl+Z stays the field's own undo; a held key is one press.
  var undo = document.getElementById("undo");
  if (undo) {
    document.addEventListener("keydown", function (e) {
      if (!(e.ctrlKey || e.metaKey) || e.altKey || e.shiftKey || e.key.toLowerCase() !== "z") { return; }
      if (e.repeat || inField(e.target)) { return; }
      e.preventDefault();
      undo.requestSubmit();
    });
  }

  // Says the keys are live (tests wait on it): on a fine, once its photo has been looked at.
  var ready = function () { document.documentElement.dataset.keys = "ready"; };
  var form = document.getElementById("decision");

  // -- the queue ---------------------------------------------------------------------------
  if (!form) {
    var start = document.getElementById("start");
    if (start) {
      document.addEventListener("keydown", function (e) {
        // Enter on a link, the Filter button or a filter field does what that control does.
        if (e.key !== "Enter" || !plain(e) || e.repeat || !settings.enabled || !unfocused(e.target)) { return; }
        e.preventDefault();
        start.requestSubmit();
      });
    }
    ready();
    return;
  }

  // -- one fine ----------------------------------------------------------------------------
  var plate = document.getElementById("plate");
  var note = document.getElementById("note");
  var hint = document.getElementById("hint");
  var photo = document.getElementById("photo");
  var shownMs = form.querySelector('input[name="shown_ms"]');
  var minLook = Number(form.dataset.minLookMs || "500");
  var say = function (text) { // replaces the key hints until the keys change
    if (hint) { hint.dataset.fixed = "yes"; hint.textContent = text; }
  };
  var sent = false;

  // The claim lasts while the page is open: renewed every third of its lease while the page
  // is visible (a closed laptop stops renewing, and the short lease runs out), released
  // when the page is left unless a decision was sent (it ends the claim itself).
  var claimField = form.querySelector('input[name="claim_id"]');
  var csrfField = form.querySelector('input[name="csrf"]');
  var claimUrl = form.getAttribute("action").replace(/\/decision$/, "/claim/");
  var servedField = form.querySelector('input[name="served_at"]');
  var claimBody = function () {
    return new URLSearchParams({
      csrf: csrfField.value,
      claim_id: claimField.value,
      served_at: servedField ? servedField.value : ""
    });
  };
  var renewMs = Number(form.dataset.renewMs || "20000");
  var renewing = null;
  var renew = function () {
    if (sent || document.visibilityState !== "visible") { return; }
    fetch(claimUrl + "renew", { method: "POST", body: claimBody(), credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 409) { clearInterval(renewing); say("Your claim on this fine has ended: reload the page."); }
      }, function () { /* offline: the next renewal tries again */ });
  };
  renew(); // at once: a reload's pagehide released the claim this page goes on with
  renewing = setInterval(renew, renewMs);
  window.addEventListener("pagehide", function () {
    clearInterval(renewing);
    if (!sent && navigator.sendBeacon) { navigator.sendBeacon(claimUrl + "release", claimBody()); }
  });

  var shownAt = null; // performance.now() when the photo (or, without one, the page) was painted
  var looked = false; // on screen for minLook
  var photoShown = !photo; // without a photo nothing can be confirmed on the server anyway

  var onScreen = function () {
    requestAnimationFrame(function () {
      requestAnimationFrame(function () { // painted, not only decoded
        shownAt = performance.now();
        // The photo is on screen (a benchmark of key press -> next fine shown waits on it).
        document.documentElement.dataset.photo = photo ? "shown" : "none";
        setTimeout(function () { looked = true; form.dataset.look = "done"; ready(); }, minLook);
      });
    });
  };
  if (photo) {
    var decoded = photo.decode ? photo.decode() : Promise.resolve();
    decoded.then(function () { photoShown = true; onScreen(); }, function () {
      // A broken photo: rejecting stays possible, confirming does not.
      say("The photo did not load: reload the page, or reject the fine.");
      onScreen();
    });
  } else {
    onScreen();
  }

  var notYet = function () {
    say("Look at the photo first: a decision counts once it has been on screen a moment.");
    setTimeout(function () { if (hint) { hint.dataset.fixed = ""; } showKeys(); }, minLook);
  };
  var button = function (value) { return form.querySelector('button[name="action"][value="' + value + '"]'); };
  var submit = function (value) {
    var b = button(value);
    if (b) { form.requestSubmit(b); }
  };
  // Every way of deciding (a key, Enter on a focused button, a click) passes here.
  form.addEventListener("submit", function (e) {
    var action = e.submitter ? e.submitter.value : "plate";
    if (sent || !looked || (action === "plate" && !photoShown)) {
      e.preventDefault();
      if (!sent && looked) { say("The photo did not load: reload the page, or reject the fine."); }
      else if (!sent) { notYet(); }
      return;
    }
    if (shownMs && shownAt !== null) { shownMs.value = String(Math.round(performance.now() - shownAt)); }
    sent = true;
  });

  document.addEventListener("keydown", function (e) {
    if (!plain(e)) { return; }
    var target = e.target;
    if (e.repeat) {
      // A held key is one press: its repeats decide nothing (nor click a focused button);
      // in a text field a held character still types.
      if (e.key === "Enter" || (!inField(target) && (e.key === " " || reasonFor(e.key)))) { e.preventDefault(); }
      return;
    }
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
    if (e.key === "Enter") {
      // A focused button, link or summary does what it says, natively.
      if (!unfocused(target) || !settings.enabled) { return; }
      e.preventDefault();
      submit(form.dataset.state === "withdrawn" ? "acknowledge" : "plate");
      return;
    }
    if (!settings.enabled || form.dataset.state === "withdrawn") { return; }
    if (e.shiftKey && /^Digit[1-9]$/.test(e.code)) {
      var picked = document.querySelectorAll("#candidates [data-candidate]")[Number(e.code.slice(5)) - 1];
      if (picked) { e.preventDefault(); plate.value = picked.dataset.candidate; plate.focus(); }
      return;
    }
    var reason = e.shiftKey && /^[0-9]$/.test(e.key) ? null : reasonFor(e.key);
    if (reason) {
      e.preventDefault();
      if (reason === "other" && note.value.trim() === "") {
        note.focus();
        say("Type the reason for rejecting, then Enter.");
        return;
      }
      submit(reason);
      return;
    }
    if (/^[A-Za-z0-9]$/.test(e.key)) { // the first character of a correction
      e.preventDefault();
      plate.value = e.key.toUpperCase();
      plate.focus();
      plate.setSelectionRange(plate.value.length, plate.value.length);
    }
  });
})();
