// node --test web/dashboard/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { barChart, burndownChart, esc, lineChart, niceMax } from './charts.js';

test('scales end on nice numbers', () => {
  assert.equal(niceMax(0), 1);
  assert.equal(niceMax(7), 10);
  assert.equal(niceMax(120), 200);
  assert.equal(niceMax(0.3), 0.5);
});

test('bars are proportional and labels escaped', () => {
  const svg = barChart([{ label: '<x>', value: 5 }, { label: 'b', value: 10 }], 'Focus "minutes"');
  assert.match(svg, /^<svg /);
  assert.ok(svg.includes('&lt;x&gt;') && !svg.includes('<x>'));
  assert.ok(svg.includes('aria-label="Focus &quot;minutes&quot;"'));
  const heights = [...svg.matchAll(/<rect [^>]*height="([\d.]+)"/g)].map((m) => Number(m[1]));
  assert.equal(heights.length, 2);
  assert.equal(heights[1], heights[0] * 2);
});

test('lines have one point per value, empty series draw nothing', () => {
  const svg = lineChart([1, 2, 3].map((v) => ({ label: `d${v}`, value: v })), 'Messages');
  assert.equal((svg.match(/[ML][\d.]+,[\d.]+/g) || []).length, 3);
  assert.ok(!lineChart([], 'none').includes('<path'));
  assert.equal(esc(`a&'`), 'a&amp;&#39;');
});

test('burndowns draw the remaining points against the ideal line on one scale', () => {
  const days = [
    { label: '03-01', remaining: 8, ideal: 8 },
    { label: '03-02', remaining: 8, ideal: 4 },
    { label: '03-03', remaining: 2, ideal: 0 },
  ];
  const svg = burndownChart(days, 'Sprint <1>');
  const paths = [...svg.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(paths.length, 2);
  const ys = (d) => [...d.matchAll(/[ML][\d.]+,([\d.]+)/g)].map((m) => Number(m[1]));
  const [ideal, remaining] = paths.map(ys);
  assert.equal(ideal.length, 3);
  // Same value, same height; the ideal line ends on the axis, the remaining points above it.
  assert.equal(ideal[0], remaining[0]);
  assert.equal(remaining[0], remaining[1]);
  assert.ok(remaining[2] < ideal[2]);
  assert.ok(svg.includes('Sprint &lt;1&gt;'));
  assert.ok(!burndownChart([], 'none').includes('<path'));
});
