// Signpost web UI: the live parts and the writes. Our own, no framework: the pages are rendered
// by the agent; this script swaps in fresh sections when something changes and sends edits.
//
// Token: kept in sessionStorage (this tab only), sent as X-Consul-Token on API calls, as
// ?token= on the watch stream (EventSource sends no headers), and mirrored into a cookie
// scoped to /ui so the pages themselves are rendered for it.
"use strict";
(function () {
  const TOKEN_KEY = "signpost-token";
  const COOKIE = "signpost_token";
  const $ = (sel) => document.querySelector(sel);

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  function setToken(t) {
    if (t) {
      sessionStorage.setItem(TOKEN_KEY, t);
      document.cookie = COOKIE + "=" + encodeURIComponent(t) + "; path=/ui; SameSite=Strict";
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
      document.cookie = COOKIE + "=; path=/ui; SameSite=Strict; max-age=0";
    }
  }
  // The cookie follows this tab's token (another tab may have set its own).
  setToken(token());

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h["X-Consul-Token"] = token();
    return h;
  }

  function status(text) { const s = $("#live-status"); if (s) s.textContent = text || ""; }

  // The API's own words for a failed answer.
  async function apiError(resp) {
    let text = "";
    try { text = await resp.text(); const body = JSON.parse(text); if (body && body.error) return body.error; } catch (e) { /* not JSON */ }
    return text || resp.status + " " + resp.statusText;
  }

  function askToken(why) {
    const form = $("#token-form");
    form.hidden = false;
    $("#token-toggle").setAttribute("aria-expanded", "true");
    $("#token-why").textContent = why || "";
    $("#token-input").focus();
  }

  async function api(method, url, body) {
    const resp = await fetch(url, { method, headers: headers(), body, cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      const msg = await apiError(resp);
      askToken("The agent refused: " + msg);
      const e = new Error(msg); e.status = resp.status; throw e;
    }
    return resp;
  }

  function setupToken() {
    const form = $("#token-form");
    $("#token-toggle").addEventListener("click", () => {
      form.hidden = !form.hidden;
      $("#token-toggle").setAttribute("aria-expanded", String(!form.hidden));
      if (!form.hidden) $("#token-input").focus();
    });
    form.addEventListener("submit", (ev) => { ev.preventDefault(); setToken($("#token-input").value.trim()); location.reload(); });
    $("#token-clear").addEventListener("click", () => { setToken(""); location.reload(); });
  }

  // Replaces the element with id `id` by the same section freshly rendered at `url`.
  async function swap(id, url) {
    const resp = await fetch(url, { headers: headers(), cache: "no-store" });
    if (!resp.ok) throw new Error(await apiError(resp));
    const tpl = document.createElement("template");
    tpl.innerHTML = await resp.text(); // rendered (and escaped) by the agent
    const fresh = tpl.content.querySelector("#" + id);
    const old = document.getElementById(id);
    if (fresh && old) old.replaceWith(fresh);
    return fresh;
  }

  // One refresh at a time; a change during a refresh asks for one more after it.
  function coalesced(fn) {
    let running = false, again = false;
    return async function run() {
      if (running) { again = true; return; }
      running = true;
      try { do { again = false; await fn(); } while (again); }
      catch (e) { status("Could not refresh: " + e.message); }
      finally { running = false; }
    };
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // Services page: a blocking query on the catalog index; each change re-renders the table.
  function servicesPage() {
    const form = $("#services-filter");
    const q = $("#q");
    const fragment = () => "/ui/fragments/services?" + new URLSearchParams(new FormData(form)).toString();
    const refresh = coalesced(() => swap("services", fragment()));
    let timer = 0;
    q.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { history.replaceState(null, "", "?" + new URLSearchParams(new FormData(form))); refresh(); }, 120);
    });
    $("#sort").addEventListener("change", () => { history.replaceState(null, "", "?" + new URLSearchParams(new FormData(form))); refresh(); });
    form.addEventListener("submit", (ev) => { ev.preventDefault(); history.replaceState(null, "", "?" + new URLSearchParams(new FormData(form))); refresh(); });
    (async function follow() {
      let index = Number($("#services").dataset.index) || 0;
      let backoff = 500;
      for (;;) {
        try {
          const resp = await api("GET", "/api/v1/services?index=" + index + "&wait=60s");
          if (!resp.ok) throw new Error(await apiError(resp));
          const next = Number(resp.headers.get("X-Signpost-Index")) || index;
          if (next !== index) { index = next; await refresh(); }
          status(""); backoff = 500;
        } catch (e) {
          if (e.status === 401 || e.status === 403) return;
          status("Live updates paused: " + e.message + " (retrying)");
          await sleep(backoff); backoff = Math.min(backoff * 2, 10000);
        }
      }
    })();
  }

  // Service page: the watch stream; each event re-renders the instances section.
  function servicePage() {
    const section = $("#instances");
    const name = section.dataset.service;
    const fragment = "/ui/fragments/services/" + encodeURIComponent(name) + "/instances";
    const refresh = coalesced(() => swap("instances", fragment));
    let url = "/api/v1/services/" + encodeURIComponent(name) + "/watch?status=any";
    if (token()) url += "&token=" + encodeURIComponent(token());
    const source = new EventSource(url);
    const onEvent = (ev) => {
      let index = 0;
      try { index = JSON.parse(ev.data).index || 0; } catch (e) { /* refresh anyway */ }
      const shown = Number(($("#instances") || section).dataset.index) || 0;
      if (ev.type === "reset" && index && index <= shown) return; // already on the page
      status("");
      refresh();
    };
    for (const kind of ["reset", "add", "update", "remove"]) source.addEventListener(kind, onEvent);
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // A refusal closes the stream for good: ask why through a plain request.
        api("GET", "/api/v1/services/" + encodeURIComponent(name) + "/instances?status=any")
          .then(async (r) => status(r.ok ? "Live updates stopped." : "Live updates stopped: " + await apiError(r)))
          .catch((e) => status("Live updates stopped: " + e.message));
      } else {
        status("Live updates interrupted; reconnecting…");
      }
    };
  }

  function kvUrl(key, query) {
    return "/api/v1/kv/" + key.split("/").map(encodeURIComponent).join("/") + (query ? "?" + query : "");
  }
  function uiKvUrl(key) { return "/ui/kv/" + key.split("/").map(encodeURIComponent).join("/"); }

  function say(el, text, ok) { el.textContent = text; el.classList.toggle("ok", !!ok); }

  // KV pages: save with cas (a stale edit is refused and said so), delete, create.
  function kvPage() {
    const edit = $("#kv-edit");
    if (edit) {
      const msg = $("#kv-message");
      const key = edit.dataset.key;
      edit.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const value = $("#kv-value");
        if (!value || value.readOnly) return;
        try {
          const resp = await api("PUT", kvUrl(key, "cas=" + edit.dataset.cas), value.value);
          if (resp.status === 409) {
            say(msg, "Not saved: " + await apiError(resp) + ". Someone changed this value since you opened it; reload to see it.");
          } else if (!resp.ok) {
            say(msg, "Not saved: " + await apiError(resp));
          } else {
            const entry = await resp.json();
            edit.dataset.cas = String(entry.modify_index);
            const shown = $("#kv-modify-index"); if (shown) shown.textContent = String(entry.modify_index);
            say(msg, "Saved at index " + entry.modify_index + ".", true);
          }
        } catch (e) { say(msg, "Not saved: " + e.message); }
      });
      const del = $("#kv-delete");
      if (del) del.addEventListener("click", async () => {
        if (!confirm("Delete " + key + "?")) return;
        try {
          const resp = await api("DELETE", kvUrl(key, "cas=" + edit.dataset.cas));
          if (resp.status === 409) say(msg, "Not deleted: " + await apiError(resp) + ". Someone changed this value since you opened it; reload to see it.");
          else if (!resp.ok) say(msg, "Not deleted: " + await apiError(resp));
          else location.href = uiKvUrl(key.slice(0, key.lastIndexOf("/") + 1));
        } catch (e) { say(msg, "Not deleted: " + e.message); }
      });
    }
    const create = $("#kv-create");
    if (create) create.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const msg = create.querySelector(".message");
      const key = $("#kv-new-key").value;
      try {
        // cas=0: only if the key does not exist yet.
        const resp = await api("PUT", kvUrl(key, "cas=0"), $("#kv-new-value").value);
        if (resp.status === 409) say(msg, "Not created: " + key + " already exists.");
        else if (!resp.ok) say(msg, "Not created: " + await apiError(resp));
        else location.href = uiKvUrl(key);
      } catch (e) { say(msg, "Not created: " + e.message); }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupToken();
    const page = document.body.dataset.page;
    if (page === "services") servicesPage();
    else if (page === "service") servicePage();
    else if (page === "kv") kvPage();
    else if (page === "error") {
      // A page the token may not see (or no token): ask for one.
      const err = $("p.error");
      if (err && (err.dataset.status === "401" || err.dataset.status === "403")) askToken("The agent refused: " + err.textContent);
    }
  });
})();
