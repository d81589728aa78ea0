// The analytics dashboard: the caller's focus and messages, a team's overview (with meeting
// minutes per member) and a project's current sprint burndown, as inline SVG charts. Uses the
// web client's saved sign-in (localStorage `convene.auth`).

import { barChart, burndownChart, esc, lineChart } from './charts.js';

const auth = JSON.parse(localStorage.getItem('convene.auth') || 'null');
const $ = (id) => document.getElementById(id);

async function get(path) {
  const res = await fetch(`/api/v1${path}`, { headers: { authorization: `Bearer ${auth?.access_token}` } });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(body?.error?.message ?? `request failed (${res.status})`);
  return body;
}

const tz = `tz_offset_minutes=${-new Date().getTimezoneOffset()}`;
const days = (list, key) => list.map((d) => ({ label: d.day.slice(5), value: d[key] }));
const card = (label, value) => `<div class="card">${esc(label)}<b>${esc(value)}</b></div>`;

function renderMe(me) {
  $('me').innerHTML = `<h2>You, ${esc(me.from)} – ${esc(me.to)}</h2>
    <div class="cards">${card('Focus hours', (me.focus_minutes / 60).toFixed(1))}${card('Sessions', me.focus_sessions)}
    ${card('Completed', me.completed_sessions)}${card('Interruptions', me.interruptions)}
    ${card('Goals met', `${me.goals_met}/${me.goal_days}`)}${card('Messages', me.messages)}</div>
    ${barChart(days(me.days, 'focus_minutes'), 'Focus minutes per day')}
    ${lineChart(days(me.days, 'messages'), 'Messages per day')}`;
}

function renderTeam(o) {
  const rows = o.members.map((m) => `<tr><td>${esc(m.display_name)} <small>${esc(m.role)}</small></td>
    <td class="n">${esc(m.focus_minutes)}</td><td class="n">${esc(m.messages)}</td>
    <td class="n">${esc(m.tasks_completed)}</td><td class="n">${esc(m.notes_written)}</td>
    <td class="n">${esc(m.files_uploaded)}</td><td class="n">${esc(m.meeting_minutes.toFixed(1))}</td></tr>`);
  const meetings = o.members.map((m) => ({ label: m.display_name, value: m.meeting_minutes }));
  $('team-overview').innerHTML = `<div class="cards">${card('Focus hours', (o.focus_minutes / 60).toFixed(1))}
    ${card('Messages', o.messages)}${card('Tasks done', o.tasks_completed)}${card('Notes', o.notes)}
    ${card('Files', o.files)}${card('Meeting hours', (o.meeting_minutes / 60).toFixed(1))}</div>
    ${barChart(days(o.days, 'focus_minutes'), 'Team focus minutes per day')}
    ${lineChart(days(o.days, 'messages'), 'Team messages per day')}
    ${barChart(meetings, 'Meeting minutes per member')}
    <table><tr><th>Member</th><th class="n">Focus min</th><th class="n">Messages</th><th class="n">Tasks done</th><th class="n">Notes</th>
    <th class="n">Files</th><th class="n">Meeting min</th></tr>${rows.join('')}</table>`;
}

function renderProject(o) {
  const b = o.burndown;
  const points = (b?.days ?? []).map((d) => ({ label: d.date.slice(5), remaining: d.remaining_points, ideal: d.ideal_points }));
  $('project-overview').innerHTML = `<div class="cards">${card('Open tasks', o.tasks)}${card('Overdue', o.overdue)}
    ${card('Cycle hours', o.average_cycle_hours == null ? '–' : o.average_cycle_hours.toFixed(1))}</div>
    ${b ? `<h2>Burndown: ${esc(b.name)} <small>(${esc(b.status)}, ${esc(b.start_date)} – ${esc(b.end_date)})</small></h2>
      ${burndownChart(points, `Remaining points of ${b.name}`)}` : '<p>No sprint has started.</p>'}`;
}

async function showProject(id) {
  try {
    renderProject(await get(`/analytics/projects/${encodeURIComponent(id)}/overview`));
  } catch (e) {
    $('project-overview').innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

async function showProjects(teamId) {
  const projects = await get(`/projects?team_id=${encodeURIComponent(teamId)}&limit=200`);
  $('project').innerHTML = projects.items.map((p) => `<option value="${esc(p.id)}">${esc(p.name)}</option>`).join('');
  $('project-overview').innerHTML = '';
  if (projects.items.length) await showProject(projects.items[0].id);
}

async function showTeam(id) {
  try {
    renderTeam(await get(`/analytics/teams/${encodeURIComponent(id)}/overview?${tz}`));
    await showProjects(id);
  } catch (e) {
    $('team-overview').innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

async function main() {
  if (!auth) {
    $('status').innerHTML = 'Please <a href="/#/signin">sign in</a> first.';
    return;
  }
  try {
    const [me, teams] = await Promise.all([get(`/analytics/users/me?${tz}`), get('/teams?limit=200')]);
    renderMe(me);
    $('team').innerHTML = teams.items.map((t) => `<option value="${esc(t.id)}">${esc(t.name)}</option>`).join('');
    $('team').onchange = () => showTeam($('team').value);
    $('project').onchange = () => showProject($('project').value);
    $('status').textContent = '';
    if (teams.items.length) await showTeam(teams.items[0].id);
  } catch (e) {
    $('status').innerHTML = `<span class="error">${esc(e.message)}</span> <a href="/#/signin">Sign in again</a>`;
  }
}

main();
