// Hand-drawn SVG charts: stacked bars per hour and a line with gaps for empty hours.
// A chart is drawn at the width its card gives it (one SVG unit = one CSS pixel) and drawn again
// when that width changes, so its text is FONT_PX pixels at any screen size (style.css).
const NS = "http://www.w3.org/2000/svg";
const H = 220, PAD = { left: 48, right: 10, top: 12, bottom: 30 };
const FIRST_W = 600, MIN_W = 200;
const LABEL_SPACING = 56; // px between the x labels' centres ("13:00" at 12 px is ~35 px wide)
const drawings = new WeakMap(); // svg → (svg, width) => void

const resized = typeof ResizeObserver === "undefined" ? null : new ResizeObserver((entries) => {
  for (const entry of entries) {
    if (!entry.target.isConnected) resized.unobserve(entry.target); // replaced by a refresh
    else if (entry.contentRect.width > 0) render(entry.target, entry.contentRect.width);
  }
});

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(draw) {
  const svg = el("svg", { class: "chart", role: "img" });
  drawings.set(svg, draw);
  render(svg, FIRST_W);
  if (resized) resized.observe(svg);
  return svg;
}

function render(svg, width) {
  const w = Math.max(MIN_W, Math.round(width));
  if (svg.dataset.width === String(w)) return;
  svg.dataset.width = String(w);
  svg.setAttribute("viewBox", `0 0 ${w} ${H}`);
  svg.replaceChildren();
  drawings.get(svg)(svg, w);
}

function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function frame(svg, W, labels, yMax, format) {
  const plotW = W - PAD.left - PAD.right, plotH = H - PAD.top - PAD.bottom;
  for (let i = 0; i <= 4; i++) {
    const y = PAD.top + plotH - (plotH * i) / 4;
    svg.append(el("line", { class: i ? "grid" : "axis", x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
    svg.append(el("text", { x: PAD.left - 6, y, "text-anchor": "end", "dominant-baseline": "middle" }, format((yMax * i) / 4)));
  }
  const every = Math.max(1, Math.ceil(labels.length / Math.max(1, Math.floor(plotW / LABEL_SPACING))));
  labels.forEach((label, i) => {
    if (i % every) return;
    const x = PAD.left + (plotW * (i + 0.5)) / labels.length;
    svg.append(el("text", { x, y: H - 10, "text-anchor": "middle" }, label));
  });
  return { plotW, plotH };
}

// series: [{key, label, color}]; rows: [{label, values: {key: n}}]
export function stackedBars(rows, series) {
  const totals = rows.map((row) => series.reduce((sum, s) => sum + (row.values[s.key] || 0), 0));
  const yMax = Math.max(4, niceMax(Math.max(0, ...totals))); // counts: whole-number ticks
  return chart((svg, W) => {
    const { plotW, plotH } = frame(svg, W, rows.map((r) => r.label), yMax, (v) => (Number.isInteger(v) ? v : v.toFixed(1)));
    const slot = plotW / Math.max(1, rows.length), barW = Math.max(2, slot * 0.7);
    rows.forEach((row, i) => {
      let y = PAD.top + plotH;
      for (const s of series) {
        const value = row.values[s.key] || 0;
        if (!value) continue;
        const height = (plotH * value) / yMax;
        y -= height;
        const rect = el("rect", { x: PAD.left + slot * i + (slot - barW) / 2, y, width: barW, height, fill: s.color });
        rect.append(el("title", {}, `${row.label}: ${value} ${s.label}`));
        svg.append(rect);
      }
    });
  });
}

// points: [{label, value | null}]
export function line(points, { max = null, color = "#2856d8", format = (v) => v.toFixed(0), unit = "" } = {}) {
  const values = points.map((p) => p.value).filter((v) => v !== null && v !== undefined);
  const yMax = max ?? niceMax(Math.max(0, ...values));
  return chart((svg, W) => {
    const { plotW, plotH } = frame(svg, W, points.map((p) => p.label), yMax, format);
    const x = (i) => PAD.left + (plotW * (i + 0.5)) / points.length;
    const y = (v) => PAD.top + plotH - (plotH * v) / yMax;
    let path = "", pen = false;
    points.forEach((p, i) => {
      if (p.value === null || p.value === undefined) { pen = false; return; }
      path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(p.value).toFixed(1)}`;
      pen = true;
      const dot = el("circle", { cx: x(i), cy: y(p.value), r: 3, fill: color });
      dot.append(el("title", {}, `${p.label}: ${format(p.value)}${unit}`));
      svg.append(dot);
    });
    if (path) svg.prepend(el("path", { d: path, fill: "none", stroke: color, "stroke-width": 2 }));
    if (!values.length) svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no finished tasks in this period"));
  });
}

export function legend(series) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color;
    item.append(swatch, s.label);
    box.append(item);
  }
  return box;
}
