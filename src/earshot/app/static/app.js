// earshot search page: plain JavaScript, no build step. Talks to /search, /search/audio, /audio/{id}.
// Each result: name and folder, score, a waveform strip (peaks stored in the index) with the
// best-matching window shaded and every matching moment marked, a player that starts at that
// window, "also at" copies, "More like this", drag-out of the file, and exports of the list.
"use strict";

const $ = (id) => document.getElementById(id);

function fmtTime(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
  } catch (_) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}`;
}

function drawPeaks(canvas, peaks) {
  // One bar per stored peak, mirrored around the middle; sized to the canvas's CSS box.
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.max(1, Math.round(w * ratio));
  canvas.height = Math.max(1, Math.round(h * ratio));
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = getComputedStyle(canvas).color;
  const n = peaks.length;
  if (!n) { ctx.fillRect(0, h / 2 - 0.5, w, 1); return; }
  const step = w / n;
  for (let i = 0; i < n; i++) {
    const bar = Math.max(1, (peaks[i] / 255) * (h - 2));
    ctx.fillRect(i * step, (h - bar) / 2, Math.max(1, step - 0.5), bar);
  }
}

function strip(r, audio) {
  // Waveform with the best-matching window shaded and a playhead; a click seeks there.
  const box = document.createElement("div");
  box.className = "strip";
  box.title = `best match ${fmtTime(r.window_start)}–${fmtTime(r.window_end)}; click to play from a point`;
  const canvas = document.createElement("canvas");
  const win = document.createElement("div");
  win.className = "window";
  const dur = r.duration > 0 ? r.duration : 1;
  win.style.left = `${(100 * r.window_start) / dur}%`;
  win.style.width = `${(100 * Math.max(r.window_end - r.window_start, 0)) / dur}%`;
  const head = document.createElement("div");
  head.className = "playhead";
  head.style.left = `${(100 * r.window_start) / dur}%`;
  box.append(canvas, win, head);
  (r.moments || []).forEach((m, i) => {
    // Each matching moment: a mark under the waveform; a click plays from its best window.
    const mark = document.createElement("div");
    mark.className = "moment";
    mark.dataset.start = m.peak_start;
    mark.style.left = `${(100 * m.start) / dur}%`;
    mark.style.width = `${(100 * Math.max(m.end - m.start, 0)) / dur}%`;
    mark.title = `moment ${i + 1}: ${fmtTime(m.start)}–${fmtTime(m.end)} (score ${m.score.toFixed(3)}); click to play`;
    mark.addEventListener("click", (e) => { e.stopPropagation(); playFrom(audio, m.peak_start); });
    box.append(mark);
  });
  box.addEventListener("click", (e) => {
    const rect = box.getBoundingClientRect();
    const t = Math.min(Math.max((e.clientX - rect.left) / rect.width, 0), 1) * dur;
    audio.dataset.moved = "1";
    audio.currentTime = t;
    head.style.left = `${(100 * t) / dur}%`;
    audio.play().catch(() => {});
  });
  audio.addEventListener("timeupdate", () => { head.style.left = `${(100 * audio.currentTime) / dur}%`; });
  requestAnimationFrame(() => drawPeaks(canvas, r.peaks || []));
  return box;
}

function playFrom(audio, t) {
  audio.dataset.moved = "1";
  audio.currentTime = t;
  audio.play().catch(() => {});
}

const MEDIA = { wav: "audio/wav", flac: "audio/flac", ogg: "audio/ogg", mp3: "audio/mpeg", aif: "audio/aiff", aiff: "audio/aiff" };

function extras(li, r, audio) {
  // What a library needs after a result: its moments, its copies, more like it, and the file itself.
  const parts = [];
  if (r.also_at && r.also_at.length) {
    const also = document.createElement("p");
    also.className = "also";
    also.textContent = `also at ${r.also_at.join(", ")}`;
    parts.push(also);
  }
  const moments = document.createElement("div");  // buttons, not <li>s: results stay the only list items
  moments.className = "moments";
  moments.setAttribute("role", "group");
  moments.hidden = true;
  moments.setAttribute("aria-label", `moments in ${r.name}`);
  (r.moments || []).forEach((m) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.start = m.peak_start;
    b.textContent = `${fmtTime(m.start)}–${fmtTime(m.end)} · ${m.score.toFixed(3)}`;
    b.addEventListener("click", () => playFrom(audio, m.peak_start));
    moments.append(b);
  });
  const actions = document.createElement("div");
  actions.className = "actions";
  const like = document.createElement("button");
  like.type = "button";
  like.className = "like";
  like.textContent = "More like this";
  like.title = "find sounds like this file's best-matching moment";
  like.addEventListener("click", () => searchLike(r));
  const show = document.createElement("button");
  show.type = "button";
  show.className = "show-moments";
  show.textContent = `Moments (${(r.moments || []).length})`;
  show.disabled = !(r.moments || []).length;
  show.addEventListener("click", () => { moments.hidden = !moments.hidden; });
  actions.append(show, like);
  parts.push(actions, moments);
  // Drag out to a desktop or DAW: Chromium saves a DownloadURL drop as the file itself.
  li.draggable = true;
  li.addEventListener("dragstart", (e) => {
    const url = new URL(r.audio_url, window.location.href).href;
    const ext = r.name.split(".").pop().toLowerCase();
    e.dataTransfer.setData("DownloadURL", `${MEDIA[ext] || "application/octet-stream"}:${r.name}:${url}`);
    e.dataTransfer.setData("text/uri-list", url);
    e.dataTransfer.setData("text/plain", url);
    e.dataTransfer.effectAllowed = "copy";
  });
  return parts;
}

function exportLinks(data) {
  // CSV, JSON and M3U of the shown results, made here from the response (no second request).
  const box = $("export");
  if (!box) return;
  box.hidden = !data.results.length;
  const abs = (r) => new URL(r.audio_url, window.location.href).href;
  const q = (v) => `"${String(v).replace(/"/g, '""')}"`;
  const csv = ["rank,score,path,duration,window_start,window_end,moments,url"].concat(data.results.map((r) =>
    [r.rank, r.score.toFixed(6), q(r.path), r.duration.toFixed(3), r.window_start.toFixed(3), r.window_end.toFixed(3),
     q((r.moments || []).map((m) => `${m.start.toFixed(2)}-${m.end.toFixed(2)}`).join(" ")), abs(r)].join(","))).join("\n") + "\n";
  const m3u = ["#EXTM3U"].concat(data.results.flatMap((r) =>
    [`#EXTINF:${Math.round(r.duration)},${r.name}`, abs(r)])).join("\n") + "\n";
  const set = (id, text, type) => {
    const a = $(id);
    if (a.href.startsWith("blob:")) URL.revokeObjectURL(a.href);
    a.href = URL.createObjectURL(new Blob([text], { type }));
  };
  set("export-csv", csv, "text/csv");
  set("export-json", JSON.stringify(data, null, 2), "application/json");
  set("export-m3u", m3u, "audio/x-mpegurl");
}

function filterParams() {
  const p = new URLSearchParams();
  const where = $("where") ? $("where").value.trim() : "";
  const folder = $("folder") ? $("folder").value.trim() : "";
  if (where) p.set("where", where);
  if (folder) p.set("folder", folder);
  return p;
}

async function searchLike(r) {
  const p = filterParams();
  p.set("id", r.id);
  p.set("start", r.window_start);
  p.set("k", $("k").value || "10");
  setStatus(`searching for sounds like ${r.name}…`);
  const resp = await fetch(`/search/like?${p}`);
  if (!resp.ok) { clearResults(); setStatus(await errorText(resp), true); return; }
  render(await resp.json());
}

function clearResults() {
  $("results").replaceChildren();
  if ($("export")) $("export").hidden = true;
}

function render(data) {
  const list = $("results");
  list.replaceChildren();
  data.results.forEach((r) => {
    const li = document.createElement("li");
    li.tabIndex = 0;
    li.className = "result";
    li.dataset.id = r.id;
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = r.rank;
    const title = document.createElement("div");
    title.className = "title";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.name;
    name.title = r.path;
    const folder = document.createElement("span");
    folder.className = "folder";
    folder.textContent = r.folder ? `${r.folder}/` : "(top folder)";
    title.append(name, folder);
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `score ${r.score.toFixed(3)} · ${fmtTime(r.duration)} · best ${fmtTime(r.window_start)}–${fmtTime(r.window_end)}`;
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = r.audio_url;
    audio.dataset.start = r.window_start;
    audio.setAttribute("aria-label", `play ${r.name}`);
    // Start where the query matches best: on load (so the player shows it) and on the first play.
    const toWindow = () => {
      if (!audio.dataset.moved && audio.currentTime === 0) audio.currentTime = Number(audio.dataset.start || 0);
    };
    audio.addEventListener("loadedmetadata", toWindow);
    audio.addEventListener("play", () => { toWindow(); audio.dataset.moved = "1"; });
    audio.addEventListener("seeking", () => { if (audio.currentTime !== Number(audio.dataset.start)) audio.dataset.moved = "1"; });
    li.peaks = r.peaks || [];
    li.append(rank, title, meta, strip(r, audio), audio, ...extras(li, r, audio));
    list.append(li);
  });
  exportLinks(data);
  setStatus(data.results.length ? `${data.results.length} result(s) for “${data.query}”` : `no results for “${data.query}”`);
  const first = list.querySelector("li");
  if (first) first.focus();
}

async function searchText(event) {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) { setStatus("type some words describing the sound", true); return; }
  const k = $("k").value || "10";
  setStatus("searching…");
  const p = filterParams();
  p.set("q", q);
  p.set("k", k);
  if ($("mode")) p.set("mode", $("mode").value);
  let resp;
  try {
    resp = await fetch(`/search?${p}`);
  } catch (err) {  // the server is gone or unreachable: say so, and drop results of an older query
    clearResults();
    setStatus(`search failed: ${err.message} (is \`earshot serve\` still running?)`, true);
    return;
  }
  if (!resp.ok) { clearResults(); setStatus(await errorText(resp), true); return; }
  render(await resp.json());
}

// The index's own state from /health: partial (an unfinished `earshot index` run), updating
// (a re-index is being picked up) or needing a restart; shown above the results, polled.
async function checkHealth() {
  let note = "";
  try {
    const resp = await fetch("/health");
    const h = await resp.json();
    if (h.restart_needed) note = h.restart_needed;
    else if (h.partial) note = `${h.partial}${h.updating ? "; updating" : ""}`;
    else if (h.updating) note = "the index is being updated; results may change";
  } catch (err) {
    note = "the server does not answer";
  }
  let el = $("index-state");
  if (!el) {
    el = document.createElement("p");
    el.id = "index-state";
    el.setAttribute("aria-live", "polite");
    $("status").after(el);
  }
  el.textContent = note;
  el.hidden = !note;
}

async function searchAudio(event) {
  event.preventDefault();
  const file = $("clip").files[0];
  if (!file) { setStatus("choose an audio file first", true); return; }
  const body = new FormData();
  body.append("file", file);
  setStatus(`searching for sounds like ${file.name}…`);
  let resp;
  try {
    const p = filterParams();
    p.set("k", $("k").value || "10");
    resp = await fetch(`/search/audio?${p}`, { method: "POST", body });
  } catch (err) {
    clearResults();
    setStatus(`upload failed: ${err.message}`, true);
    return;
  }
  if (!resp.ok) { clearResults(); setStatus(`${file.name}: ${await errorText(resp)}`.replace(`${file.name}: ${file.name}: `, `${file.name}: `), true); return; }
  render(await resp.json());
}

function onKey(event) {
  const active = document.activeElement;
  const typing = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA");
  if (event.key === "/" && !typing) { event.preventDefault(); $("q").focus(); $("q").select(); return; }
  if (!active || !active.classList || !active.classList.contains("result")) return;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const next = event.key === "ArrowDown" ? active.nextElementSibling : active.previousElementSibling;
    if (next) next.focus();
  } else if (event.key === "Enter") {
    event.preventDefault();
    const moments = active.querySelector(".moments");
    if (moments && moments.children.length) {
      moments.hidden = !moments.hidden;
      if (!moments.hidden) moments.querySelector("button").focus();
    }
  } else if (event.key === " ") {
    event.preventDefault();
    const audio = active.querySelector("audio");
    if (audio.paused) {
      if (audio.currentTime === 0) audio.currentTime = Number(audio.dataset.start || 0);
      audio.play().catch(() => {});
    } else {
      audio.pause();
    }
  }
}

function redrawAll() {
  document.querySelectorAll("#results .strip canvas").forEach((c) => {
    const li = c.closest("li");
    if (li && li.peaks) drawPeaks(c, li.peaks);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("resize", redrawAll);
  $("text-form").addEventListener("submit", searchText);
  $("audio-form").addEventListener("submit", searchAudio);
  document.addEventListener("keydown", onKey);
  checkHealth();
  setInterval(checkHealth, 5000);
});
