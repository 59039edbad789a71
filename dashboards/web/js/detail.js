// Incident detail: fields, description, acknowledgement matrix, notes, timeline, actions.
import { h, clear, $ } from './dom.js';
import { api } from './api.js';
import { state, upsert, canAck, canClose, needsMyAck, partyName, partyZone, fieldName, focalName, ACTIVE } from './store.js';
import { timeEl, countdownEl } from './time.js';
import { tlpBadge, sevBadge, statusBadge, stateBadge, ackButton, toast } from './ui.js';

let current = null; // {id, timeline: [], error}
let refetchTimer = null;

export const currentDetailId = () => current?.id || null;

export function detailSkeleton() {
  return h('section', { id: 'detail-view', class: 'detail', 'aria-live': 'off' });
}

export async function openDetail(id) {
  current = { id, timeline: [], loading: true };
  renderDetail();
  await refetch(id);
  $('#detail-view h1')?.focus();
}

export function closeDetail() { current = null; }

async function refetch(id) {
  try {
    const { data } = await api.incident(id);
    if (!current || current.id !== id) return;
    // Events that arrived live while this was in flight and are not in it came later:
    // they stay, after it.
    const fetched = data.timeline || [];
    const have = new Set(fetched.map((t) => t.cursor));
    current.timeline = fetched.concat(current.timeline.filter((t) => !have.has(t.cursor)));
    current.loading = false;
    current.error = null;
    upsert(data);
  } catch (e) {
    if (!current || current.id !== id) return;
    current.loading = false;
    current.error = e.status === 404 ? 'This incident does not exist or is not shared with you.' : e.message;
  }
  renderDetail();
}

/** A stream event for the incident on screen: extend the timeline; refetch when the event carries no incident. */
export function detailOnEvent(ev) {
  if (!current || current.id !== ev.incident) return;
  // The timeline comes in log order and the stream continues it: append, unless the
  // event was already in the timeline fetched.
  if (!current.timeline.some((t) => t.cursor === ev.cursor)) current.timeline.push(ev);
  if (!ev.data?.incident && ev.type !== 'incident.note' && ev.type.startsWith('incident.')) {
    clearTimeout(refetchTimer);
    refetchTimer = setTimeout(() => current && refetch(current.id), 300);
  }
  renderDetail();
}

export function renderDetail() {
  const root = $('#detail-view');
  if (!root || !current) return;
  const inc = state.incidents.get(current.id);
  // Keep what the user is typing across live re-renders.
  const keep = Object.fromEntries(Array.from(root.querySelectorAll('textarea, input')).map((i) => [i.name, i.value]));
  const focusName = root.contains(document.activeElement) ? document.activeElement.name || document.activeElement.dataset.focusKey : null;
  const reasonOpen = root.querySelector('.close-form:not([hidden])')?.dataset.kind;
  clear(root);
  root.append(h('p', { class: 'back' }, h('a', { href: '#/', dataset: { focusKey: 'back' } }, '← Board')));
  if (current.error) {
    root.append(h('h1', { tabindex: '-1' }, 'Incident not available'), h('p', { class: 'error-box' }, current.error));
    return;
  }
  if (!inc) { root.append(h('h1', { tabindex: '-1' }, 'Loading…')); return; }

  root.append(
    h('div', { class: 'detail-badges' }, h('span', { class: 'ref big' }, inc.ref), tlpBadge(inc.tlp), sevBadge(inc.severity), statusBadge(inc.status), stateBadge(inc.state)),
    h('h1', { tabindex: '-1', class: 'detail-title' }, inc.title || '(no title)'),
    actions(inc, reasonOpen),
    h('div', { class: 'detail-grid' },
      h('div', { class: 'col' },
        fieldsList(inc),
        h('h2', null, 'Description'),
        h('p', { class: 'description' }, inc.description || '—')),
      h('div', { class: 'col' },
        h('h2', null, 'Acknowledgement'), matrix(inc))),
    h('h2', null, `Notes (${(inc.notes || []).length})`),
    ...notes(inc),
    h('h2', null, 'Timeline'),
    timeline(inc));

  for (const [name, v] of Object.entries(keep)) { const el = root.querySelector(`[name="${name}"]`); if (el && v) el.value = v; }
  if (focusName) root.querySelector(`[name="${focusName}"], [data-focus-key="${focusName}"]`)?.focus();
}

function actions(inc, reasonOpen) {
  const bar = h('div', { class: 'actions' });
  if (canAck(inc)) bar.append(ackButton(inc));
  else if (needsMyAck(inc)) bar.append(h('span', { class: 'callout' }, `${state.me.party} has not acknowledged (your role cannot acknowledge)`));
  bar.append(h('a', { class: 'btn ghost', href: '#note-text' }, 'Add note'));
  if (canClose(inc)) {
    for (const kind of ['resolve', 'cancel']) {
      const label = kind === 'resolve' ? 'Resolve' : 'Cancel incident';
      const form = h('form', { class: 'close-form', dataset: { kind }, hidden: reasonOpen !== kind },
        h('label', null, `Reason for ${kind === 'resolve' ? 'resolving' : 'cancelling'} (optional)`,
          h('input', { name: 'reason', type: 'text', maxlength: '2000', autocomplete: 'off' })),
        h('button', { type: 'submit', class: `btn ${kind === 'resolve' ? 'primary' : 'danger'}` }, `Confirm: ${label.toLowerCase()}`),
        h('button', { type: 'button', class: 'btn ghost', onclick: () => { form.hidden = true; } }, 'Back'));
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        const btn = form.querySelector('[type=submit]');
        btn.disabled = true;
        try {
          const reason = form.reason.value.trim();
          const { data } = await (kind === 'resolve' ? api.resolve(inc.id, reason) : api.cancel(inc.id, reason));
          form.reason.value = '';
          upsert(data);
          toast(`${inc.ref} ${kind === 'resolve' ? 'resolved' : 'cancelled'}.`);
        } catch (err) {
          btn.disabled = false;
          toast(`${inc.ref}: ${err.message}`, 'error');
        }
      });
      bar.append(h('button', {
        type: 'button', class: `btn ${kind === 'resolve' ? 'secondary' : 'ghost danger-text'}`,
        onclick: () => { bar.querySelectorAll('.close-form').forEach((f) => { f.hidden = f !== form; }); form.querySelector('input').focus(); },
      }, `${label}…`), form);
    }
  }
  return bar;
}

function row(label, ...value) { return [h('dt', null, label), h('dd', null, ...value)]; }

function fieldsList(inc) {
  const oz = partyZone(inc.originator?.party);
  const area = inc.area;
  return h('dl', { class: 'fields' },
    row('Field', fieldName(inc.field)),
    row('Originator', `${partyName(inc.originator?.party)} (${inc.originator?.party})`, inc.originator?.officer ? h('span', { class: 'muted' }, ` · ${focalName(inc.originator.officer)}`) : null),
    row('Addressed to', (inc.parties || []).map((p) => partyName(p)).join(', ')),
    row('Severity · urgency · certainty', `${inc.severity} · ${inc.urgency || '—'} · ${inc.certainty || '—'}`),
    row('Status', inc.status || 'actual'),
    inc.tlp === 'red' ? row('Named recipients', (inc.recipients || []).map(focalName).join(', ') || '—') : null,
    row('Area', area ? [area.text || '', (area.lat != null && area.lon != null) ? h('span', { class: 'muted' }, ` (${area.lat}, ${area.lon})`) : null] : '—'),
    row('Raised', timeEl(inc.raised_at, oz)),
    row('Updated', timeEl(inc.updated_at, oz)),
    inc.closed_at ? row('Closed', timeEl(inc.closed_at, oz)) : null,
    inc.dedup_key ? row('Dedup key', h('code', null, inc.dedup_key)) : null);
}

function matrix(inc) {
  const states = new Map((inc.party_states || []).map((p) => [p.party, p]));
  const active = ACTIVE.has(inc.state);
  return h('div', { class: 'table-wrap' }, h('table', { class: 'matrix' },
    h('thead', null, h('tr', null, ['Party', 'State', 'By', 'When', 'Escalation', 'Next step'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', null, (inc.parties || []).map((code) => {
      const ps = states.get(code) || { party: code };
      const zone = partyZone(code);
      const esc = ps.escalation;
      return h('tr', { class: ps.acknowledged ? 'acked' : 'pending', dataset: { testid: 'matrix-row', party: code, acked: String(!!ps.acknowledged) } },
        h('th', { scope: 'row', title: partyName(code) }, code),
        h('td', null, ps.acknowledged ? h('span', { class: 'ok' }, '✓ acknowledged') : h('span', { class: active ? 'warn' : 'muted' }, 'pending')),
        h('td', null, ps.acknowledged_by ? focalName(ps.acknowledged_by) : '—', ps.via ? h('span', { class: 'muted' }, ` via ${ps.via}`) : null),
        h('td', null, ps.acknowledged_at ? timeEl(ps.acknowledged_at, zone) : '—'),
        h('td', null, esc ? `step ${esc.step}${esc.loop ? `, loop ${esc.loop}` : ''} · ${esc.state}` : '—'),
        h('td', null, esc && !ps.acknowledged && active ? (countdownEl(esc.next_at, zone, 'in ') || '—') : '—'));
    }))));
}

function notes(inc) {
  const list = h('ol', { class: 'notes' }, (inc.notes || []).map((n) =>
    h('li', null,
      h('div', { class: 'note-head' }, h('strong', null, focalName(n.by)), h('span', { class: 'muted' }, ` · ${n.party} · `), timeEl(n.at, partyZone(n.party))),
      h('p', { class: 'note-text' }, n.text))));
  const form = h('form', { class: 'note-form', 'aria-label': 'Add note' },
    h('label', { for: 'note-text' }, 'Add note'),
    h('textarea', { id: 'note-text', name: 'text', rows: '3', maxlength: '4000', required: true }),
    h('div', { class: 'form-error', id: 'note-error', role: 'alert' }),
    h('button', { type: 'submit', class: 'btn secondary' }, 'Add note'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = form.text.value.trim();
    if (!text) { $('#note-error').textContent = 'Write something first.'; return; }
    const btn = form.querySelector('button');
    btn.disabled = true;
    try {
      const { data } = await api.note(inc.id, text);
      form.text.value = '';
      upsert(data);
    } catch (err) {
      $('#note-error').textContent = err.message;
    } finally { btn.disabled = false; }
  });
  return [(inc.notes || []).length ? list : h('p', { class: 'muted' }, 'No notes yet.'), form];
}

const EVENT_LABEL = {
  'incident.raised': 'Raised', 'incident.updated': 'Updated', 'incident.note': 'Note', 'incident.acknowledged': 'Acknowledged',
  'incident.escalated': 'Escalated', 'incident.unanswered': 'Unanswered', 'incident.resolved': 'Resolved', 'incident.cancelled': 'Cancelled',
  page: 'Paged', 'notification.sent': 'Notification sent', 'notification.delivered': 'Notification delivered', 'notification.failed': 'Notification failed',
};

function describe(ev) {
  const d = ev.data || {};
  switch (ev.type) {
    case 'incident.raised': return d.incident ? `by ${focalName(d.incident.originator?.officer)} for ${(d.incident.parties || []).join(', ')}` : '';
    case 'incident.acknowledged': {
      const ps = (d.incident?.party_states || []).find((p) => p.party === ev.party);
      return ps?.acknowledged_by ? `by ${focalName(ps.acknowledged_by)}${ps.via ? ` via ${ps.via}` : ''}` : (d.by ? `by ${focalName(d.by)}` : '');
    }
    case 'incident.note': return `${focalName(d.by)}: ${d.text || ''}`;
    case 'incident.escalated': return `step ${d.step ?? '?'}${d.loop ? `, loop ${d.loop}` : ''}`;
    case 'page': return `${focalName(d.focal_point)} · step ${d.step ?? '?'} · ${d.channel || ''}`;
    case 'incident.resolved': case 'incident.cancelled': return d.reason || '';
    default: return Object.entries(d).filter(([, v]) => v !== null && typeof v !== 'object').map(([k, v]) => `${k}: ${v}`).join(' · ');
  }
}

function timeline(inc) {
  if (!current.timeline.length) return h('p', { class: 'muted' }, current.loading ? 'Loading…' : 'No events.');
  return h('ol', { class: 'timeline' }, current.timeline.map((ev) => {
    const bad = /failed|unanswered|escalated/.test(ev.type);
    return h('li', { class: `ev ev-${ev.type.replace('.', '-')}${bad ? ' ev-warn' : ''}`, dataset: { cursor: ev.cursor } },
      timeEl(ev.at, partyZone(ev.party || inc.originator?.party), 'ev-time'),
      h('span', { class: 'ev-type' }, EVENT_LABEL[ev.type] || ev.type),
      ev.party ? h('span', { class: 'ev-party' }, ev.party) : null,
      h('span', { class: 'ev-desc' }, describe(ev)));
  }));
}
