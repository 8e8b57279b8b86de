"""The live page: one HTML file, its stylesheet and its script, all served by the daemon.

Nothing comes from elsewhere (an offline Pi serves everything itself), so the Content-Security-
Policy allows this origin only; no inline script or style, no external fonts. The frame is the
MJPEG stream in an <img>; everything else is polled from /api/live once a second and drawn with
plain DOM and SVG. Read-only: the page only ever GETs.
"""

from __future__ import annotations

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

INDEX = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pi-infer</title>
<link rel="stylesheet" href="app.css">
<script src="app.js" defer></script>
</head>
<body>
<header><h1>pi-infer</h1><span id="state" class="state">connecting</span></header>
<main>
<section class="frame">
<img id="frame" src="stream.mjpg" alt="the camera's latest frame with the top labels">
<p id="frame-note" class="note" hidden></p>
</section>
<section id="regions-section" hidden>
<h2>Regions</h2>
<ul id="regions"></ul>
</section>
<section>
<h2>Top predictions</h2>
<ol id="topk"></ol>
</section>
<section>
<h2>Frames per second <span id="fps-now" class="now"></span></h2>
<svg id="fps-graph" class="graph" viewBox="0 0 300 90" role="img"
 aria-label="frames per second over the last minutes"></svg>
<h2>Latency <span id="latency-now" class="now"></span></h2>
<svg id="latency-graph" class="graph" viewBox="0 0 300 90" role="img"
 aria-label="latency p50 and p95 over the last minutes"></svg>
<p class="legend"><span class="key p50"></span>p50 <span class="key p95"></span>p95</p>
</section>
<section>
<h2>Daemon</h2>
<dl id="facts">
<dt>Camera</dt><dd id="camera">-</dd>
<dt>Model</dt><dd id="model">-</dd>
<dt>Engine</dt><dd id="engine">-</dd>
<dt>Uptime</dt><dd id="uptime">-</dd>
<dt>Processed</dt><dd id="processed">-</dd>
<dt>Dropped</dt><dd id="dropped">-</dd>
<dt>Failed</dt><dd id="failed">-</dd>
<dt>Bad frames</dt><dd id="bad">-</dd>
</dl>
</section>
</main>
<footer id="conn" class="note"></footer>
</body>
</html>
"""

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,sans-serif;background:#111;color:#eee}
header{display:flex;align-items:center;justify-content:space-between;padding:.5em 1em;
background:#222}
h1{font-size:1.2em;margin:0}
h2{font-size:1em;margin:.8em 0 .3em;color:#aaa;font-weight:600}
main{display:grid;gap:0 1.5em;padding:0 1em 1em;grid-template-columns:1fr}
@media (min-width:900px){main{grid-template-columns:3fr 2fr}.frame{grid-row:span 3}}
.frame img{width:100%;height:auto;display:block;margin-top:1em;background:#000;
border-radius:4px;min-height:120px}
.state{padding:.1em .6em;border-radius:1em;background:#444}
.state.streaming{background:#1d6b35}.state.waiting,.state.lost{background:#8a2a1d}
ol{margin:0;padding-left:1.4em}
li{display:grid;grid-template-columns:1fr 6em 3.2em;gap:.5em;align-items:center}
progress{width:100%;height:.7em}
.score,.now{font-variant-numeric:tabular-nums;color:#ccc}
.graph{width:100%;height:auto;background:#1a1a1a;border-radius:4px}
.graph polyline{fill:none;stroke-width:1.5}
.graph .fps,.key.p50{stroke:#4fc3f7;background:#4fc3f7}
.graph .p50{stroke:#4fc3f7}.graph .p95,.key.p95{stroke:#ffb74d;background:#ffb74d}
.graph text{fill:#888;font-size:9px}.graph line{stroke:#333}
.key{display:inline-block;width:1em;height:.3em;margin:0 .3em .2em .8em}
.legend{margin:.2em 0;color:#aaa;font-size:.85em}
dl{display:grid;grid-template-columns:auto 1fr;gap:.2em 1em;margin:0}
dt{color:#aaa}dd{margin:0;overflow-wrap:anywhere}
.note{color:#ffb74d;padding:0 1em}
"""

JS = """
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const W = 300, H = 90, WINDOW = 300;

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function uptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60);
  return (d ? d + " d " : "") + (d || h ? h + " h " : "") + m + " min " +
         (d ? "" : Math.floor(s % 60) + " s");
}

function graph(svg, ago, series) {
  const values = series.flatMap((s) => s.values).filter((v) => v !== null);
  const top = Math.max(1, ...values) * 1.15;
  svg.replaceChildren(
    svgEl("line", {x1: 0, y1: H - 1, x2: W, y2: H - 1}),
    svgEl("line", {x1: 0, y1: H / 2, x2: W, y2: H / 2}));
  const label = svgEl("text", {x: 2, y: 10});
  label.textContent = top.toFixed(top < 10 ? 1 : 0);
  const span = svgEl("text", {x: 2, y: H - 4});
  span.textContent = "-" + Math.round(WINDOW / 60) + " min";
  svg.append(label, span);
  for (const s of series) {
    const points = [];
    s.values.forEach((v, i) => {
      if (v === null) return;
      const x = W - ago[i] / WINDOW * W, y = H - 2 - v / top * (H - 14);
      points.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    if (points.length) svg.append(svgEl("polyline", {points: points.join(" "), class: s.cls}));
  }
}

function render(d) {
  const s = d.status, h = d.history;
  const state = $("state");
  state.textContent = d.camera.state;
  state.className = "state " + d.camera.state;
  const list = $("topk");
  list.replaceChildren(...d.top.map(([label, score]) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = score;
    const value = document.createElement("span");
    value.className = "score";
    value.textContent = score.toFixed(2);
    li.append(name, bar, value);
    return li;
  }));
  $("regions-section").hidden = d.regions.length === 0;
  $("regions").replaceChildren(...d.regions.map((r) => {
    const li = document.createElement("li");
    li.textContent = r.name + ": " + (r.state ?? "unknown");
    return li;
  }));
  graph($("fps-graph"), h.ago, [{values: h.fps, cls: "fps"}]);
  graph($("latency-graph"), h.ago, [{values: h.p95, cls: "p95"}, {values: h.p50, cls: "p50"}]);
  $("fps-now").textContent = s.fps.toFixed(1);
  $("latency-now").textContent = s.latency_p50_ms === null ? "" :
    s.latency_p50_ms.toFixed(1) + " / " + (s.latency_p95_ms ?? 0).toFixed(1) + " ms";
  $("camera").textContent = d.camera.status;
  $("model").textContent = d.model;
  $("engine").textContent = d.engine;
  $("uptime").textContent = uptime(d.uptime_s);
  $("processed").textContent = s.processed;
  $("dropped").textContent = s.dropped;
  $("failed").textContent = s.failed_frames;
  $("bad").textContent = s.bad_frames;
}

async function poll() {
  try {
    const r = await fetch("api/live", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("conn").textContent = "";
  } catch (e) {
    $("conn").textContent = "cannot reach the daemon (" + e.message + "); retrying";
  }
  setTimeout(poll, 1000);
}

const frame = $("frame");
frame.addEventListener("error", () => {
  const note = $("frame-note");
  note.hidden = false;
  note.textContent = "no live frame (too many viewers, or the daemon restarted); retrying";
  setTimeout(() => { frame.src = "stream.mjpg?" + Date.now(); }, 5000);
});
frame.addEventListener("load", () => { $("frame-note").hidden = true; });
poll();
"""
