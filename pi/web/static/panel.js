"use strict";
// The panel's pages: one document, a tab per section. Everything goes through the JSON API
// with the session's CSRF token; lamps and status arrive by Server-Sent Events.
(function () {
  const $ = id => document.getElementById(id);
  const body = document.body;
  let csrf = null, C = 0, lamps = [], names = [], overrides = [];
  window.lampLatencyMs = [];  // browser receive time minus the daemon's lamp change time

  async function api(method, url, data, isForm) {
    if (csrf === null && method !== "GET") await session();
    const opts = { method, headers: {}, credentials: "same-origin" };
    if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
    if (data !== undefined) {
      if (isForm) opts.body = data;
      else { opts.body = JSON.stringify(data); opts.headers["Content-Type"] = "application/json"; }
    }
    const r = await fetch(url, opts);
    if (r.status === 401) { location.href = "/login"; throw new Error("log in first"); }
    let out = {};
    try { out = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) throw new Error(out.error || (r.status + " " + r.statusText));
    return out;
  }
  async function session() { csrf = (await api("GET", "/api/session")).csrf; }
  function say(id, text, bad) {
    const el = $(id);
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
    el.dataset.seq = String((Number(el.dataset.seq) || 0) + 1);  // tests wait on this
  }
  const fmtTime = s => s == null ? "" : Math.floor(s / 60) + ":" + String(Math.floor(s % 60)).padStart(2, "0");

  // ---- tabs ------------------------------------------------------------------------------
  const loaders = { songs: loadSongs, schedule: loadSchedule, config: loadConfig, log: loadLog };
  function showTab() {
    const tab = (location.hash || "#yard").slice(1);
    // Sections are "tab-NAME", so that "#NAME" does not scroll the page under the header.
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== "tab-" + tab;
    for (const a of document.querySelectorAll("nav a"))
      a.classList.toggle("here", a.getAttribute("href") === "#" + tab);
    const msg = { songs: "songs-msg", schedule: "sched-msg", config: "config-msg", log: "yard-msg" };
    if (loaders[tab]) loaders[tab]().catch(e => say(msg[tab], e.message, true));
  }
  window.addEventListener("hashchange", showTab);

  // ---- the yard --------------------------------------------------------------------------
  function setupYard(n) {
    const svg = $("yard-svg");
    svg.replaceChildren();
    ({ lamps, names } = drawYard(svg, n));
    C = n;
    const ul = $("channels");
    ul.replaceChildren();
    for (let c = 0; c < n; c++) {
      const li = document.createElement("li");
      li.dataset.channel = c + 1;
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.style.setProperty("--c", lamps[c].style.getPropertyValue("--c"));
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = (c + 1) + " " + names[c];
      const seg = document.createElement("span");
      seg.className = "seg";
      for (const mode of ["auto", "on", "off"]) {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = mode; b.dataset.mode = mode;
        b.addEventListener("click", () => api("POST", "/api/override", { channel: c + 1, mode })
          .then(() => say("yard-msg", `channel ${c + 1}: ${mode}`))
          .catch(e => say("yard-msg", e.message, true)));
        seg.append(b);
      }
      li.append(dot, label, seg);
      ul.append(li);
    }
  }
  function showLamps(arr) {
    if (arr.length !== C) setupYard(arr.length);
    for (let c = 0; c < C; c++) {
      lamps[c].setAttribute("class", arr[c] ? "lamp on" : "lamp off");
      $("channels").children[c].classList.toggle("on", !!arr[c]);
    }
    body.dataset.lamps = arr.map(x => (x ? "1" : "0")).join("");
  }
  function showStatus(st) {
    $("state").textContent = st.state;
    $("state").dataset.state = st.state;
    body.dataset.state = st.state;
    $("song").textContent = st.song || "–";
    body.dataset.song = st.song || "";
    $("position").textContent = fmtTime(st.position_s);
    $("next").textContent = st.next_song ? "next: " + st.next_song : "";
    overrides = st.overrides || [];
    if (st.channels && st.channels !== C) setupYard(st.channels);
    for (let c = 0; c < C; c++) {
      for (const b of $("channels").children[c].querySelectorAll("button"))
        b.classList.toggle("here", b.dataset.mode === (overrides[c] || "auto"));
    }
  }
  function listen() {
    const es = new EventSource("/api/events");
    es.addEventListener("status", e => showStatus(JSON.parse(e.data)));
    es.addEventListener("lamps", e => {
      const m = JSON.parse(e.data);
      if (m.seq !== null && m.wall) {
        window.lampLatencyMs.push(Date.now() - m.wall * 1000);
        if (window.lampLatencyMs.length > 2000) window.lampLatencyMs.shift();
      }
      showLamps(m.lamps);
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {  // 401 or the panel went away
        api("GET", "/api/session").then(() => setTimeout(listen, 2000)).catch(() => {});
      }
    };
  }
  for (const b of document.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", () => {
      const a = b.dataset.action, msg = b.closest("section").querySelector(".msg").id;
      api("POST", "/api/control/" + a).then(() => say(msg, a + ": sent"))
        .catch(e => say(msg, e.message, true));
    });
  }

  // ---- songs -----------------------------------------------------------------------------
  async function loadSongs() {
    const d = await api("GET", "/api/songs");
    $("folder").textContent = d.folder ? "in " + d.folder : "(no music folder)";
    $("upload-file").dataset.maxMb = d.max_upload_mb;
    const ol = $("song-list");
    ol.replaceChildren();
    const order = d.songs.map(s => s.name);
    d.songs.forEach((s, i) => {
      const li = document.createElement("li");
      li.dataset.name = s.name;
      const a = document.createElement("a");
      a.href = "/songs/" + s.name.split("/").map(encodeURIComponent).join("/") + "/preview";
      a.target = "_blank"; a.rel = "noopener"; a.textContent = s.name; a.title = "preview the show";
      const size = document.createElement("span");
      size.className = "dim"; size.textContent = (s.bytes / 1048576).toFixed(1) + " MB";
      const move = (delta) => {
        const o = order.slice(), j = i + delta;
        [o[i], o[j]] = [o[j], o[i]];
        api("PUT", "/api/songs/order", o).then(loadSongs).catch(e => say("songs-msg", e.message, true));
      };
      const up = button("↑", "move up", () => move(-1), i === 0);
      const down = button("↓", "move down", () => move(1), i === d.songs.length - 1);
      const del = button("delete", "delete this song", () => {
        if (del.dataset.sure !== "1") { del.dataset.sure = "1"; del.textContent = "sure?"; return; }
        api("DELETE", "/api/songs/" + encodeURIComponent(s.name))
          .then(() => { say("songs-msg", s.name + " deleted"); return loadSongs(); })
          .catch(e => say("songs-msg", e.message, true));
      });
      del.classList.add("warn");
      li.append(a, size, up, down, del);
      ol.append(li);
    });
  }
  function button(text, title, fn, disabled) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.title = title; b.disabled = !!disabled;
    b.addEventListener("click", fn);
    return b;
  }
  $("upload-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const f = $("upload-file").files[0];
    if (!f) return;
    const fd = new FormData();
    fd.append("file", f, f.name);
    say("songs-msg", "uploading and checking " + f.name + "…");
    api("POST", "/api/songs", fd, true)
      .then(d => { say("songs-msg", d.name + " added"); $("upload-form").reset(); return loadSongs(); })
      .catch(e => say("songs-msg", e.message, true));
  });

  // ---- schedule --------------------------------------------------------------------------
  const SCHED = ["on", "off", "latitude", "longitude", "timezone"];
  function showSchedule(d) {
    const v = d.values;
    $("sched-enabled").checked = v["schedule.enabled"];
    const box = $("sched-days");
    box.replaceChildren();
    for (const day of d.days) {
      const l = document.createElement("label"), c = document.createElement("input");
      c.type = "checkbox"; c.value = day; c.checked = v["schedule.days"].includes(day);
      l.append(c, " " + day); box.append(l);
    }
    for (const k of SCHED) $("sched-" + k).value = v["schedule." + k];
    const when = t => t ? t.replace("T", " ") : "none within a week";
    $("sched-next").textContent = d.on_now === null ? "No schedule: the show plays whenever the service runs." :
      `Now ${d.on_now ? "within" : "outside"} show hours. Next start: ${when(d.next_start)}; next stop: ${when(d.next_stop)}.`;
  }
  async function loadSchedule() {
    const d = await api("GET", "/api/schedule");
    showSchedule(d);
    if (d.error) say("sched-msg", d.error, true);
  }
  $("sched-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const out = { "schedule.enabled": $("sched-enabled").checked,
      "schedule.days": [...$("sched-days").querySelectorAll("input:checked")].map(c => c.value) };
    for (const k of SCHED) out["schedule." + k] = $("sched-" + k).value;
    api("PUT", "/api/schedule", out).then(d => { showSchedule(d); say("sched-msg", d.note); })
      .catch(e => say("sched-msg", e.message, true));
  });

  // ---- config ----------------------------------------------------------------------------
  let configValues = {};
  async function loadConfig() {
    const d = await api("GET", "/api/config");
    configValues = d.values;
    $("config-path").textContent = d.path || "(built-in defaults)";
    if (d.error) say("config-msg", d.error + " (fix the file by hand; showing the last good config)", true);
    const rows = $("config-rows");
    rows.replaceChildren();
    for (const [key, value] of Object.entries(d.values)) {
      const tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
      th.textContent = key;
      const kind = d.editable[key];
      let input = null;
      if (kind === undefined || !d.path) {
        td.textContent = JSON.stringify(value);
      } else if (Array.isArray(kind)) {
        input = document.createElement("select");
        for (const c of kind) { const o = document.createElement("option"); o.value = o.textContent = c; input.append(o); }
        input.value = value;
      } else if (kind === "bool") {
        input = document.createElement("input"); input.type = "checkbox"; input.checked = value;
      } else {
        input = document.createElement("input"); input.type = "text";
        input.value = Array.isArray(value) ? value.join(", ") : String(value);
      }
      if (input) { input.dataset.key = key; input.name = key; td.append(input); }
      tr.append(th, td); rows.append(tr);
    }
  }
  $("config-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const out = {};
    for (const input of $("config-rows").querySelectorAll("[data-key]")) {
      const key = input.dataset.key, old = configValues[key];
      const v = input.type === "checkbox" ? input.checked : input.value;
      const was = Array.isArray(old) ? old.join(", ") : (typeof old === "boolean" ? old : String(old));
      if (v !== was) out[key] = v;
    }
    if (!Object.keys(out).length) { say("config-msg", "nothing changed"); return; }
    api("PUT", "/api/config", out).then(d => { say("config-msg", d.note); return loadConfig(); })
      .catch(e => say("config-msg", e.message, true));
  });

  // ---- log -------------------------------------------------------------------------------
  async function loadLog() {
    const d = await api("GET", "/api/log");
    $("log-lines").textContent = d.lines.length ? d.lines.join("\n") : (d.error || "(nothing yet)");
  }
  $("log-refresh").addEventListener("click", () => loadLog().catch(() => {}));

  session().then(() => { listen(); showTab(); body.dataset.ready = "1"; })
    .catch(e => say("yard-msg", e.message, true));
})();
