// Inline SVG charts as strings: no build step, no DOM needed (so they are testable in Node).
// Every text that reaches the markup goes through esc().

export function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

/** A scale maximum that is a "nice" number at or above `max` (1, 2 or 5 times a power of ten). */
export function niceMax(max) {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((m) => m * power).find((v) => v >= max);
}

const W = 640;
const H = 220;
const PAD = { top: 16, right: 12, bottom: 28, left: 44 };

function frame(title, top, body, labels) {
  const ticks = [0, 0.5, 1].map((f) => {
    const y = PAD.top + (1 - f) * (H - PAD.top - PAD.bottom);
    return `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y}" y2="${y}" stroke="#ddd"/>` +
      `<text x="${PAD.left - 6}" y="${y + 4}" text-anchor="end" font-size="11">${esc(Math.round(top * f))}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">` +
    `<title>${esc(title)}</title>${ticks.join('')}${body}${labels}</svg>`;
}

function xLabels(points, x) {
  // At most ~8 labels so they never overlap.
  const every = Math.max(1, Math.ceil(points.length / 8));
  return points
    .map((p, i) => (i % every === 0
      ? `<text x="${x(i)}" y="${H - 8}" text-anchor="middle" font-size="11">${esc(p.label)}</text>` : ''))
    .join('');
}

/** Bars for [{label, value}]. */
export function barChart(points, title) {
  const top = niceMax(Math.max(0, ...points.map((p) => p.value)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(1, points.length);
  const x = (i) => PAD.left + slot * (i + 0.5);
  const bars = points.map((p, i) => {
    const h = (Math.max(0, p.value) / top) * plotH;
    return `<rect x="${x(i) - slot * 0.35}" y="${PAD.top + plotH - h}" width="${slot * 0.7}" height="${h}" fill="#4f7cff">` +
      `<title>${esc(p.label)}: ${esc(p.value)}</title></rect>`;
  });
  return frame(title, top, bars.join(''), xLabels(points, x));
}

/** A line through [{label, value}]. */
export function lineChart(points, title) {
  const top = niceMax(Math.max(0, ...points.map((p) => p.value)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (points.length > 1 ? (plotW * i) / (points.length - 1) : plotW / 2);
  const y = (v) => PAD.top + plotH - (Math.max(0, v) / top) * plotH;
  const path = points.map((p, i) => `${i ? 'L' : 'M'}${x(i)},${y(p.value)}`).join(' ');
  const line = points.length ? `<path d="${path}" fill="none" stroke="#1c9a6c" stroke-width="2"/>` : '';
  return frame(title, top, line, xLabels(points, x));
}

/**
 * A sprint burndown: remaining points per day (solid) against the ideal line (dashed), over
 * [{label, remaining, ideal}].
 */
export function burndownChart(points, title) {
  const top = niceMax(Math.max(0, ...points.flatMap((p) => [p.remaining, p.ideal])));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (points.length > 1 ? (plotW * i) / (points.length - 1) : plotW / 2);
  const y = (v) => PAD.top + plotH - (Math.max(0, v) / top) * plotH;
  const path = (key) => points.map((p, i) => `${i ? 'L' : 'M'}${x(i)},${y(p[key])}`).join(' ');
  const lines = points.length
    ? `<path d="${path('ideal')}" fill="none" stroke="#999" stroke-width="1.5" stroke-dasharray="4 4"/>` +
      `<path d="${path('remaining')}" fill="none" stroke="#e0533d" stroke-width="2"/>`
    : '';
  return frame(title, top, lines, xLabels(points, x));
}
