"use strict";
// The yard: a night-time scene of houses, a tree and an arch with one lamp fixture per
// channel (lanterns along the path beyond 8), drawn into an <svg viewBox="0 0 1200 530">.
// One drawing for the preview page (pi/offline/preview.py inlines this file) and the web panel
// (pi/web serves it). Each lamp is a <g class="lamp off|on" data-channel="N">.
function drawYard(svg, C) {
  const SVGNS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    const e = document.createElementNS(SVGNS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.append(e);
    return e;
  }
  let seed = 7;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const defs = el("defs", {}, svg);
  function grad(id, kind, stops, attrs) {
    const g = el(kind, Object.assign({ id }, attrs || {}), defs);
    for (const [o, c, a] of stops) el("stop", { offset: o, "stop-color": c, "stop-opacity": a }, g);
  }
  grad("sky", "linearGradient", [[0, "#02040d", 1], [0.55, "#0a1230", 1], [1, "#1b2552", 1]], { x1: 0, y1: 0, x2: 0, y2: 1 });
  grad("snow", "linearGradient", [[0, "#27304a", 1], [1, "#121726", 1]], { x1: 0, y1: 0, x2: 0, y2: 1 });
  grad("moonglow", "radialGradient", [[0, "#cfd8ff", 0.35], [1, "#cfd8ff", 0]]);
  const scenery = el("g", {}, svg);
  el("rect", { x: 0, y: 0, width: 1200, height: 560, fill: "url(#sky)" }, scenery);
  for (let i = 0; i < 90; i++) {
    el("circle", { cx: (rnd() * 1200).toFixed(1), cy: (rnd() * 300).toFixed(1),
      r: (0.4 + rnd() * 1.1).toFixed(2), fill: "#fff", opacity: (0.25 + rnd() * 0.6).toFixed(2) }, scenery);
  }
  el("circle", { cx: 1090, cy: 78, r: 90, fill: "url(#moonglow)" }, scenery);
  const mask = el("mask", { id: "crescent" }, defs);
  el("rect", { x: 1000, y: 0, width: 200, height: 200, fill: "#fff" }, mask);
  el("circle", { cx: 1101, cy: 69, r: 23, fill: "#000" }, mask);
  el("circle", { cx: 1090, cy: 78, r: 26, fill: "#e9ecff", mask: "url(#crescent)" }, scenery);
  el("path", { d: "M0 380 Q150 330 300 360 T620 350 T900 345 T1200 360 V560 H0Z", fill: "#0a0f22" }, scenery);
  el("path", { d: "M0 430 Q300 410 600 425 T1200 420 V560 H0Z", fill: "url(#snow)" }, scenery);

  // Houses, tree, arch: the dark shapes the lamps hang on.
  function house(x, w, wallTop, peakY, wall, roof) {
    const g = el("g", {}, scenery);
    el("rect", { x, y: wallTop, width: w, height: 440 - wallTop, fill: wall }, g);
    el("path", { d: `M${x - 18} ${wallTop} L${x + w / 2} ${peakY} L${x + w + 18} ${wallTop}Z`, fill: roof }, g);
    el("rect", { x: x + w * 0.68, y: peakY + 30, width: 22, height: 50, fill: roof }, g); // chimney
    return g;
  }
  house(60, 300, 262, 150, "#161c30", "#0c1020");
  el("rect", { x: 186, y: 350, width: 48, height: 90, rx: 3, fill: "#0b0e18" }, scenery);
  house(830, 310, 238, 128, "#141a2d", "#0b0f1e");
  el("rect", { x: 962, y: 352, width: 46, height: 88, rx: 3, fill: "#0a0d17" }, scenery);
  const tree = el("g", {}, scenery);
  el("rect", { x: 511, y: 410, width: 18, height: 32, fill: "#1a120c" }, tree);
  for (const [top, base, half] of [[190, 290, 62], [240, 350, 88], [290, 418, 115]]) {
    el("path", { d: `M520 ${top} L${520 + half} ${base} L${520 - half} ${base}Z`, fill: "#0b1c16" }, tree);
  }
  el("path", { d: "M630 442 V330 A70 70 0 0 1 770 330 V442", fill: "none", stroke: "#151a28", "stroke-width": 9 }, scenery);
  el("path", { d: "M648 442 L752 442 L820 560 L580 560Z", fill: "#303a57", opacity: 0.4 }, scenery);

  // Fixtures: one per channel; each returns its lamp group's content.
  function bulbsAlong(g, pts, r) {
    const wire = el("polyline", { class: "wire", points: pts.map(p => p.join(",")).join(" ") }, g);
    const bs = el("g", { class: "bulbs" }, g);
    for (const [x, y] of pts) el("circle", { class: "bulb", cx: x.toFixed(1), cy: y.toFixed(1), r }, bs);
    return wire;
  }
  function line(x0, y0, x1, y1, n) {
    const pts = [];
    for (let i = 0; i <= n; i++) pts.push([x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n]);
    return pts;
  }
  function spill(g, ch, cx, cy, rx, ry) {
    el("ellipse", { class: "spill", cx, cy, rx, ry, fill: `url(#spill${ch})` }, g);
  }
  function panes(g, rects) {
    const p = el("g", { class: "panes" }, g);
    for (const [x, y, w, h] of rects) {
      el("rect", { class: "pane", x, y, width: w, height: h, rx: 2 }, p);
      el("path", { d: `M${x + w / 2} ${y} V${y + h} M${x} ${y + h / 2} H${x + w}`, stroke: "#05070d", "stroke-width": 2.5 }, g);
    }
  }
  function star(cx, cy, R, r) {
    const pts = [];
    for (let i = 0; i < 10; i++) {
      const a = -Math.PI / 2 + i * Math.PI / 5, rr = i % 2 ? r : R;
      pts.push((cx + rr * Math.cos(a)).toFixed(1) + "," + (cy + rr * Math.sin(a)).toFixed(1));
    }
    return pts.join(" ");
  }
  const FIXTURES = [
    ["roof line", "#ffe3a3", (g, ch) => {
      spill(g, ch, 210, 262, 190, 40);
      bulbsAlong(g, line(42, 262, 210, 150, 11).concat(line(210, 150, 378, 262, 11).slice(1)), 4.2);
    }],
    ["windows", "#ffc44d", (g, ch) => {
      spill(g, ch, 210, 445, 180, 22);
      panes(g, [[92, 296, 62, 58], [266, 296, 62, 58], [92, 372, 62, 50], [266, 372, 62, 50]]);
    }],
    ["tree", "#3dff86", (g, ch) => {
      spill(g, ch, 520, 430, 150, 24);
      const pts = [];
      for (let k = 0; k < 46; k++) {
        const f = k / 45, y = 205 + f * 205, half = 18 + f * 92, x = 520 + half * Math.sin(k * 1.35);
        pts.push([x, y]);
      }
      const bs = el("g", { class: "bulbs" }, g);
      for (const [x, y] of pts) el("circle", { class: "bulb", cx: x.toFixed(1), cy: y.toFixed(1), r: 3.6 }, bs);
    }],
    ["star", "#fff07a", (g, ch) => {
      el("circle", { class: "spill", cx: 520, cy: 178, r: 60, fill: `url(#spill${ch})` }, g);
      const bs = el("g", { class: "bulbs" }, g);
      el("polygon", { class: "star-shape", points: star(520, 178, 22, 9) }, bs);
    }],
    ["arch", "#ff4646", (g, ch) => {
      spill(g, ch, 700, 450, 120, 22);
      const pts = [];
      for (let i = 0; i <= 9; i++) pts.push([630, 442 - i * 12.4]);
      for (let i = 1; i < 16; i++) { const a = Math.PI - i * Math.PI / 16; pts.push([700 + 70 * Math.cos(a), 330 - 70 * Math.sin(a)]); }
      for (let i = 9; i >= 0; i--) pts.push([770, 442 - i * 12.4]);
      bulbsAlong(g, pts, 4.6);
    }],
    ["icicles", "#86d8ff", (g, ch) => {
      spill(g, ch, 985, 250, 200, 46);
      bulbsAlong(g, line(812, 238, 985, 128, 12).concat(line(985, 128, 1158, 238, 12).slice(1)), 3.6);
      const ic = el("g", { class: "bulbs" }, g);
      for (let i = 0; i < 22; i++) {
        const x = 836 + i * 14, len = 10 + ((i * 7) % 5) * 5;
        for (let k = 1; k <= Math.floor(len / 7); k++) el("circle", { class: "bulb", cx: x, cy: 238 + k * 7, r: 2.3 }, ic);
      }
    }],
    ["windows", "#ff9c3d", (g, ch) => {
      spill(g, ch, 985, 445, 170, 22);
      panes(g, [[862, 270, 58, 52], [956, 270, 58, 52], [1050, 270, 58, 52], [862, 360, 70, 56], [1038, 360, 70, 56]]);
    }],
    ["bushes", "#b57bff", (g, ch) => {
      spill(g, ch, 300, 470, 300, 34);
      for (const [cx, cy, rx, ry] of [[80, 440, 52, 30], [340, 442, 56, 32], [880, 448, 44, 24], [1120, 448, 48, 26]]) {
        el("ellipse", { cx, cy, rx, ry, fill: "#0a1712" }, g);
      }
      const bs = el("g", { class: "bulbs" }, g);
      for (const [cx, cy, rx, ry] of [[80, 440, 52, 30], [340, 442, 56, 32], [880, 448, 44, 24], [1120, 448, 48, 26]]) {
        for (let k = 0; k < 14; k++) {
          const a = rnd() * Math.PI, rr = 0.35 + 0.6 * rnd();
          el("circle", { class: "bulb", cx: (cx + rx * rr * Math.cos(a)).toFixed(1), cy: (cy - ry * rr * Math.sin(a) + 6).toFixed(1), r: 2.6 }, bs);
        }
      }
    }],
  ];
  const EXTRA = ["#ff5ec8", "#5effd8", "#ffd25e", "#5e8bff", "#ff7a5e", "#c6ff5e", "#ff5e7a", "#5ed2ff"];
  const nExtra = Math.max(0, C - FIXTURES.length);
  for (let k = 0; k < nExtra; k++) {
    // Extra channels: lanterns along the front path, evenly spread.
    const x = 60 + (1080 * (k + 0.5)) / nExtra;
    FIXTURES.push(["lantern " + (k + 1), EXTRA[k % EXTRA.length], (g, ch) => {
      spill(g, ch, x, 520, 46, 12);
      el("rect", { x: x - 2, y: 490, width: 4, height: 34, fill: "#111522" }, g);
      const bs = el("g", { class: "bulbs" }, g);
      el("circle", { class: "bulb", cx: x, cy: 484, r: 8 }, bs);
    }]);
  }
  const lamps = [], names = [], colors = [];
  for (let c = 0; c < C; c++) {
    const [name, color, build] = FIXTURES[c];
    grad("spill" + (c + 1), "radialGradient", [[0, color, 0.42], [0.5, color, 0.14], [1, color, 0]]);
    const g = el("g", { class: "lamp off", "data-channel": c + 1, "data-name": name, style: "--c:" + color }, svg);
    el("title", {}, g).textContent = `channel ${c + 1}: ${name}`;
    build(g, c + 1);
    lamps.push(g); names.push(name); colors.push(color);
  }
  return { lamps, names, colors };
}
