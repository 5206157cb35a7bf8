/* The worker form of a crowdprop HIT, shared by the worker pages (included inline: an HTMLQuestion
   loads no script). One question shows at a time (.cp-question.cur); an answer moves on to the next
   open question; Up/Backspace and Down move back and forth; Enter submits once every question is
   answered. In preview (no assignmentId, or ASSIGNMENT_ID_NOT_AVAILABLE) nothing can be chosen; the
   form posts to turkSubmitTo + "/mturk/externalSubmit" with assignmentId (and workerId when the page
   was given one), and only to an http(s) turkSubmitTo.

   cpWorkerForm({key: function (key, pick) {...}, dot: function (value) {...}}):
   key   maps a key press to an answer: it calls pick(selector of the input within the current
         question) and returns true, or returns false for a key it does not use;
   dot   (pages with #cp-dots) the class of a question's dot from its answer. */
function cpWorkerForm(opt) {
  "use strict";
  var P = new URLSearchParams(window.location.search);
  var F = document.getElementById("cp-form"), B = document.getElementById("cp-submit");
  var M = document.getElementById("cp-msg"), D = document.getElementById("cp-dots");
  var Q = Array.prototype.slice.call(document.querySelectorAll(".cp-question"));
  var N = Q.length, cur = 0, seen = false, aid = P.get("assignmentId") || "", to = P.get("turkSubmitTo") || "";
  var preview = !aid || aid === "ASSIGNMENT_ID_NOT_AVAILABLE";
  var okTarget = /^https?:\/\/[^\s"'<>]+$/.test(to);
  document.getElementById("cp-aid").value = aid;
  if (okTarget) { F.action = to.replace(/\/+$/, "") + "/mturk/externalSubmit"; }
  var wid = P.get("workerId");
  if (wid) {
    var w = document.createElement("input");
    w.type = "hidden"; w.name = "workerId"; w.value = wid; F.appendChild(w);
  }
  if (preview) {
    document.body.className = "preview";
    Q.forEach(function (q) { q.querySelectorAll("input").forEach(function (i) { i.disabled = true; }); });
  }
  function val(i) { var c = Q[i].querySelector("input:checked"); return c ? c.value : null; }
  function answered() { var k = 0; for (var i = 0; i < N; i++) { if (val(i)) { k++; } } return k; }
  if (D) {
    for (var i = 0; i < N; i++) {
      var s = document.createElement("span");
      s.title = "question " + (i + 1);
      s.setAttribute("data-i", i);
      D.appendChild(s);
    }
    D.addEventListener("click", function (e) { var i = e.target.getAttribute("data-i"); if (i !== null) { show(+i); } });
  }
  function update() {
    var k = answered();
    if (D) {
      for (var i = 0; i < N; i++) {
        var v = val(i);
        D.children[i].className = (v && opt.dot ? opt.dot(v) : "") + (i === cur ? " c" : "");
      }
    }
    document.getElementById("cp-done").textContent = k;
    B.disabled = preview || !okTarget || k < N;
    if (preview) { M.textContent = "Accept the HIT to start"; }
    else if (!okTarget) { M.textContent = "This page was opened without a valid turkSubmitTo; it cannot be submitted."; }
    else if (k < N) { M.textContent = (N - k) + " question(s) left"; }
    else { M.textContent = "All answered: press Enter or click Submit"; }
  }
  function show(i) {
    cur = Math.max(0, Math.min(N - 1, i));
    Q.forEach(function (q, j) { q.classList.toggle("cur", j === cur); });
    document.getElementById("cp-k").textContent = N ? cur + 1 : 0;
    update();
  }
  function nextOpen() {
    for (var j = 1; j <= N; j++) { var i = (cur + j) % N; if (!val(i)) { return i; } }
    return Math.min(cur + 1, N - 1);
  }
  function pick(selector) {
    if (preview || !N) { return false; }
    var input = Q[cur].querySelector(selector);
    if (!input) { return false; }
    input.checked = true;
    if (!seen) { seen = true; var d = document.querySelector("details"); if (d) { d.open = false; } }
    show(nextOpen());
    return true;
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var k = e.key;
    if (opt.key && opt.key(k, pick)) { e.preventDefault(); }
    else if (k === "ArrowUp" || k === "Backspace") { show(cur - 1); e.preventDefault(); }
    else if (k === "ArrowDown") { show(cur + 1); e.preventDefault(); }
    else if (k === "Enter") { e.preventDefault(); if (!B.disabled) { B.click(); } }
  });
  F.addEventListener("change", function (e) {
    var i = Q.indexOf(e.target.closest(".cp-question"));
    if (i === cur) { show(nextOpen()); } else { update(); }
  });
  F.addEventListener("submit", function (e) { if (B.disabled) { e.preventDefault(); } });
  show(0);
}
