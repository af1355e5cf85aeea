// Larder's pages for people: search as you type, copy buttons. Everything works without it.
"use strict";
(function () {
  const input = document.getElementById("q");
  if (input) {
    const form = input.form;
    const results = document.getElementById(input.dataset.results);
    const params = new URLSearchParams(location.search);
    if (location.pathname.endsWith("/search") && params.get("q")) input.value = params.get("q");
    let timer = null;
    let asked = 0;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(async function () {
        const q = input.value.trim();
        if (!results) return;
        if (!q) { results.innerHTML = ""; return; }
        const n = ++asked;
        const url = form.action + "?fragment=1&q=" + encodeURIComponent(q);
        try {
          const resp = await fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
          if (n !== asked) return; // a newer query is on its way
          results.innerHTML = resp.ok ? await resp.text() : "<p>Search failed (" + resp.status + ").</p>";
        } catch (e) {
          if (n === asked) results.textContent = "Search failed: " + e.message;
        }
      }, 120);
    });
  }
  document.addEventListener("click", async function (event) {
    const button = event.target.closest("button.copy");
    if (!button) return;
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "Copied";
    } catch (e) {
      button.textContent = "Select and copy";
    }
    setTimeout(function () { button.textContent = button.dataset.label || "Copy"; }, 1500);
  });
  for (const b of document.querySelectorAll("button.copy")) b.dataset.label = b.textContent;
})();
