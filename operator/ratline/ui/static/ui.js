// Ratline UI: live runs list (polling the table body) and full values on demand.
// No inline script anywhere: the page's CSP allows only this file.
"use strict";

function pollRows() {
  const body = document.getElementById("rows");
  if (!body || body.dataset.frozen) return;  // an older page does not move under the reader
  const live = document.getElementById("live");
  const tick = async () => {
    try {
      const response = await fetch(body.dataset.src, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      body.innerHTML = await response.text();
      if (live) { live.textContent = "live"; live.classList.remove("stale"); }
    } catch (err) {
      if (live) { live.textContent = "not updating (" + err.message + ")"; live.classList.add("stale"); }
    }
  };
  setInterval(tick, 2000);
}

function fullValues() {
  const box = document.getElementById("full-value");
  if (!box) return;
  document.querySelectorAll("a.full").forEach((link) => {
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      const response = await fetch(link.href, { credentials: "same-origin" });
      box.textContent = await response.text();
      box.hidden = false;
      box.scrollIntoView({ block: "nearest" });
    });
  });
}

document.addEventListener("DOMContentLoaded", () => { pollRows(); fullValues(); });
