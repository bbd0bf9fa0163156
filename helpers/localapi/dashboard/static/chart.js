// A small SVG line chart, hand-written (no library): lines, dots and squares on shared axes, an HTML legend.
// Each series is drawn in a <g class="series" data-name=… data-count=…> so a reader (or a test) can count points.

const SVG = "http://www.w3.org/2000/svg";
const W = 640, H = 280, M = { left: 56, right: 16, top: 12, bottom: 40 };

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map(f => f * mag).find(s => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
  return ticks;
}

function fmt(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3);
}

/**
 * Draw series into `box` (replacing what was there).
 * series: [{name, label, color, style: "line" | "dots" | "line-squares", points: [[x, y], ...]}]
 */
export function lineChart(box, { series, xMax = null, xLabel = "", yLabel = "", emptyText = "还没有数据" }) {
  box.replaceChildren();
  box.classList.add("chart");
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": yLabel });
  box.append(svg);
  const all = series.flatMap(s => s.points);
  const plotW = W - M.left - M.right, plotH = H - M.top - M.bottom;
  svg.append(el("line", { class: "axis", x1: M.left, y1: M.top + plotH, x2: M.left + plotW, y2: M.top + plotH }));
  svg.append(el("line", { class: "axis", x1: M.left, y1: M.top, x2: M.left, y2: M.top + plotH }));
  svg.append(el("text", { x: M.left + plotW / 2, y: H - 4, "text-anchor": "middle" }, xLabel));
  svg.append(el("text", { x: 12, y: M.top + plotH / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${M.top + plotH / 2})` }, yLabel));
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.className = s.style === "dots" ? "dots" : "line";
    item.style.setProperty("--c", s.color);
    item.textContent = `${s.label}（${s.points.length}）`;
    legend.append(item);
  }
  box.append(legend);
  if (!all.length) {
    svg.append(el("text", { class: "empty", x: M.left + plotW / 2, y: M.top + plotH / 2, "text-anchor": "middle" }, emptyText));
    for (const s of series) svg.append(el("g", { class: "series", "data-name": s.name, "data-count": 0 }));
    return;
  }
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(1, ...xs), x1 = Math.max(xMax || 0, ...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.1 || 0.1;
  y0 -= pad; y1 += pad;
  const sx = x => M.left + (x - x0) / (x1 - x0) * plotW;
  const sy = y => M.top + plotH - (y - y0) / (y1 - y0) * plotH;
  for (const t of niceTicks(y0, y1, 6)) {
    svg.append(el("line", { class: "grid", x1: M.left, x2: M.left + plotW, y1: sy(t), y2: sy(t) }));
    svg.append(el("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt(t)));
  }
  for (const t of niceTicks(x0, x1).filter(t => Number.isInteger(t))) {
    svg.append(el("line", { class: "axis", x1: sx(t), x2: sx(t), y1: M.top + plotH, y2: M.top + plotH + 4 }));
    svg.append(el("text", { x: sx(t), y: M.top + plotH + 16, "text-anchor": "middle" }, String(t)));
  }
  for (const s of series) {
    const g = el("g", { class: "series", "data-name": s.name, "data-count": s.points.length });
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    if (s.style !== "dots" && pts.length > 1) {
      g.append(el("polyline", { points: pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
        fill: "none", stroke: s.color, "stroke-width": 1.6, "stroke-linejoin": "round" }));
    }
    for (const [x, y] of pts) {
      let mark = null;
      if (s.style === "dots") mark = el("circle", { cx: sx(x), cy: sy(y), r: 3.2, fill: s.color, "fill-opacity": 0.7 });
      else if (s.style === "line-squares") mark = el("rect", { x: sx(x) - 4, y: sy(y) - 4, width: 8, height: 8, fill: s.color });
      else if (pts.length === 1) mark = el("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: s.color });
      if (mark) {
        mark.append(el("title", {}, `${s.label}\n第 ${x} 步：${y.toFixed(4)}`));
        g.append(mark);
      }
    }
    svg.append(g);
  }
}
