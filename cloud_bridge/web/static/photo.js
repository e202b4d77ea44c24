// The resident's photo page (templates/photo.html, cloud_bridge/web/photo.py): upload a photo, show what the
// reader proposes with the counter box and the wheel boxes over the photo, let the resident drag or resize
// the counter box (mouse, pen and touch alike: pointer events) to read it again, and send the value.
// Every text the resident reads comes from the server in their language.
(function () {
  "use strict";
  var form = document.getElementById("photo-upload");
  if (!form) { return; }
  var csrf = form.dataset.csrf;
  var maxBytes = parseInt(form.dataset.maxBytes, 10);
  var statusEl = document.getElementById("photo-status");
  var result = document.getElementById("photo-result");
  var stage = document.getElementById("photo-stage");
  var img = document.getElementById("photo-img");
  var box = document.getElementById("counter-box");
  var handle = document.getElementById("counter-handle");
  var proposed = document.getElementById("photo-proposed");
  var sure = document.getElementById("photo-sure");
  var message = document.getElementById("photo-message");
  var sendForm = document.getElementById("photo-send");
  var valueInput = document.getElementById("photo-value");
  var confirmBtn = document.getElementById("photo-confirm");
  var outcome = document.getElementById("photo-outcome");
  var next = document.getElementById("photo-next");
  var historyLink = document.getElementById("photo-history");
  var current = null;  // the server's answer for the photo on the page
  var rect = null;     // the counter box in photo pixels [x, y, w, h]

  function say(el, text, tone) {
    el.textContent = text || "";
    el.className = tone || "note";
    el.hidden = !text;
  }

  function post(url, body, isJson) {
    var headers = {"X-CSRF-Token": csrf, "Accept": "application/json"};
    if (isJson) { headers["Content-Type"] = "application/json"; }
    return fetch(url, {method: "POST", body: isJson ? JSON.stringify(body) : body, headers: headers,
                       credentials: "same-origin"})
      .then(function (r) {
        return r.json().catch(function () { return {error: "http_" + r.status, message: form.dataset.failed}; })
          .then(function (data) { data.httpStatus = r.status; return data; });
      }, function () { return {error: "network", message: form.dataset.failed}; });
  }

  function place(el, b) {
    var w = current.width, h = current.height;
    el.style.left = (100 * b[0] / w) + "%";
    el.style.top = (100 * b[1] / h) + "%";
    el.style.width = (100 * b[2] / w) + "%";
    el.style.height = (100 * b[3] / h) + "%";
  }

  function drawWheels(boxes, angle) {
    Array.prototype.forEach.call(stage.querySelectorAll(".wheel-box"), function (el) { el.remove(); });
    (boxes || []).forEach(function (b) {
      if (!Array.isArray(b) || b.length !== 4) { return; }
      var el = document.createElement("div");
      el.className = "wheel-box";
      place(el, b);
      if (angle) { el.style.transform = "rotate(" + angle + "deg)"; }  // a wheel's box is given unturned
      stage.appendChild(el);
    });
  }

  function show(data) {
    current = data;
    result.hidden = false;
    if (img.getAttribute("src") !== data.image) { img.src = data.image; }
    if (Array.isArray(data.counter_box) && data.counter_box.length === 4) {
      rect = data.counter_box.slice();
    } else {  // nothing found: a frame in the middle for the resident to drag onto the digits
      rect = [Math.round(data.width * 0.2), Math.round(data.height * 0.4), Math.round(data.width * 0.6),
              Math.round(data.height * 0.2)];
    }
    box.classList.toggle("unsure", data.status === "unsure");
    box.classList.toggle("missing", data.status === "no_counter");
    place(box, rect);
    drawWheels(data.boxes, typeof data.angle_deg === "number" ? data.angle_deg : 0);
    proposed.textContent = data.value || "—";
    say(sure, data.sure, data.tone === "ok" ? "" : data.tone);
    say(message, data.message, "warn");
    if (data.value) { valueInput.value = data.value; }
    confirmBtn.disabled = data.status === "no_counter";
  }

  function upload(file) {
    say(outcome, "");
    next.hidden = true;
    if (file.size > maxBytes) { say(statusEl, form.dataset.tooLarge, "error"); result.hidden = true; return; }
    var body = new FormData();
    body.append("meter", document.getElementById("photo-meter").value);
    body.append("photo", file, file.name || "photo.jpg");
    say(statusEl, form.dataset.reading, "note");
    post(form.dataset.base, body, false).then(function (data) {
      if (data.error) { say(statusEl, data.message, "error"); result.hidden = true; return; }
      say(statusEl, "");
      valueInput.value = "";
      sendForm.hidden = false;
      show(data);
      result.scrollIntoView({block: "start"});
    });
  }

  ["photo-camera", "photo-file"].forEach(function (id) {
    var input = document.getElementById(id);
    input.addEventListener("change", function () {
      if (input.files && input.files[0]) { upload(input.files[0]); }
      input.value = "";  // the same file may be chosen again
    });
  });

  // Dragging: the box moves, the round handle resizes; in photo pixels, kept inside the photo.
  var drag = null;
  function scale() { return current.width / img.clientWidth; }

  function start(ev, mode) {
    if (!current || ev.button > 0) { return; }
    ev.preventDefault();
    ev.stopPropagation();
    drag = {mode: mode, x: ev.clientX, y: ev.clientY, start: rect.slice(), id: ev.pointerId, moved: false};
    try { (mode === "move" ? box : handle).setPointerCapture(ev.pointerId); } catch (e) { /* a lost pointer */ }
  }

  function move(ev) {
    if (!drag || ev.pointerId !== drag.id) { return; }
    ev.preventDefault();
    var k = scale(), dx = (ev.clientX - drag.x) * k, dy = (ev.clientY - drag.y) * k;
    var s = drag.start, W = current.width, H = current.height, min = Math.max(12, Math.round(W / 40));
    if (Math.abs(dx) + Math.abs(dy) > 2) { drag.moved = true; }
    if (drag.mode === "move") {
      rect = [Math.min(Math.max(s[0] + dx, 0), W - s[2]), Math.min(Math.max(s[1] + dy, 0), H - s[3]), s[2], s[3]];
    } else {
      rect = [s[0], s[1], Math.min(Math.max(s[2] + dx, min), W - s[0]), Math.min(Math.max(s[3] + dy, min), H - s[1])];
    }
    rect = rect.map(Math.round);
    place(box, rect);
  }

  function end(ev) {
    if (!drag || ev.pointerId !== drag.id) { return; }
    var moved = drag.moved;
    drag = null;
    if (moved) { reread(); }
  }

  function reread() {
    stage.classList.add("busy");
    drawWheels([]);
    say(statusEl, form.dataset.reading, "note");
    post(form.dataset.base + "/" + current.photo_id + "/box", {counter_box: rect}, true)
      .then(function (data) {
        stage.classList.remove("busy");
        if (data.error) { say(statusEl, data.message, "error"); return; }
        say(statusEl, "");
        valueInput.value = "";
        show(data);
      });
  }

  box.addEventListener("pointerdown", function (ev) { start(ev, "move"); });
  handle.addEventListener("pointerdown", function (ev) { start(ev, "resize"); });
  [box, handle].forEach(function (el) {
    el.addEventListener("pointermove", move);
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
  });
  // Keyboard: arrows move the frame by 1 % of the photo (Shift: resize); Enter reads again.
  box.addEventListener("keydown", function (ev) {
    if (!current) { return; }
    var step = Math.max(1, Math.round(current.width / 100)), d = {ArrowLeft: [-step, 0], ArrowRight: [step, 0],
      ArrowUp: [0, -step], ArrowDown: [0, step]}[ev.key];
    if (ev.key === "Enter") { ev.preventDefault(); reread(); return; }
    if (!d) { return; }
    ev.preventDefault();
    var W = current.width, H = current.height;
    if (ev.shiftKey) {
      rect = [rect[0], rect[1], Math.min(Math.max(rect[2] + d[0], 12), W - rect[0]),
              Math.min(Math.max(rect[3] + d[1], 12), H - rect[1])];
    } else {
      rect = [Math.min(Math.max(rect[0] + d[0], 0), W - rect[2]), Math.min(Math.max(rect[1] + d[1], 0), H - rect[3]),
              rect[2], rect[3]];
    }
    place(box, rect);
  });

  sendForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!current) { return; }
    confirmBtn.disabled = true;
    say(outcome, form.dataset.sending, "note");
    post(form.dataset.base + "/" + current.photo_id + "/send",
         {value: valueInput.value}, true).then(function (data) {
      if (data.error) {
        confirmBtn.disabled = false;
        say(outcome, data.message, "error");
        outcome.scrollIntoView({block: "center"});
        return;
      }
      say(outcome, data.message, data.tone);
      sendForm.hidden = true;
      historyLink.href = data.history;
      next.hidden = false;
      outcome.scrollIntoView({block: "center"});
    });
  });
}());
