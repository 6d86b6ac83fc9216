// acklog console: the only script. It follows new events on the live page by polling
// /ui/events/rows (rows are rendered and escaped on the server, parsed inertly here).
"use strict";
(function () {
  const body = document.getElementById("events-body");
  if (!body || !body.dataset.rowsUrl) return;
  const state = document.getElementById("live-state");
  const toggle = document.getElementById("live-toggle");
  const MAX_ROWS = 200;
  let after = Number(body.dataset.after || "0");
  let paused = false;
  let timer = null;

  function rowsUrl() {
    const url = new URL(body.dataset.rowsUrl, window.location.origin);
    url.searchParams.set("after", String(after));
    return url.toString();
  }

  async function poll() {
    timer = null;
    if (paused) return;
    try {
      const answer = await fetch(rowsUrl(), { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (answer.status === 401) { state.textContent = "Signed out: reload to sign in."; return; }
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const data = await answer.json();
      const doc = new DOMParser().parseFromString("<table><tbody>" + data.html + "</tbody></table>", "text/html");
      const rows = Array.from(doc.querySelectorAll("tbody > tr"));
      for (const row of rows.reverse()) body.insertBefore(document.adoptNode(row), body.firstChild);
      while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
      after = data.after;
      state.textContent = "Following new events… last position #" + after;
    } catch (err) {
      state.textContent = "Cannot reach acklog (" + err.message + "); retrying.";
    }
    timer = window.setTimeout(poll, 1500);
  }

  toggle.addEventListener("click", function () {
    paused = !paused;
    toggle.textContent = paused ? "Resume" : "Pause";
    toggle.setAttribute("aria-pressed", String(paused));
    state.textContent = paused ? "Paused." : "Following new events…";
    if (!paused && timer === null) poll();
  });
  timer = window.setTimeout(poll, 500);
})();
