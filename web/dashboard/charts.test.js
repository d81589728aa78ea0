// node --test web/dashboard/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { barChart, esc, lineChart, niceMax } from './charts.js';

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
