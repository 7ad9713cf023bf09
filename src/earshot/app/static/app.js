// earshot search page: plain JavaScript, no build step. Talks to /search, /search/audio, /audio/{id}.
// Each result: name and folder, score, a waveform strip (peaks stored in the index) with the
// best-matching window shaded, and a player that starts at that window.
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

function clearResults() {
  $("results").replaceChildren();
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
    li.append(rank, title, meta, strip(r, audio), audio);
    list.append(li);
  });
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
  let resp;
  try {
    resp = await fetch(`/search?q=${encodeURIComponent(q)}&k=${encodeURIComponent(k)}`);
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
    resp = await fetch(`/search/audio?k=${encodeURIComponent($("k").value || "10")}`, { method: "POST", body });
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
  } else if (event.key === " " || event.key === "Enter") {
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
