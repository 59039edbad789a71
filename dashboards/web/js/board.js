// The board: active incidents (most severe, then oldest unacknowledged first), closed ones below.
import { h, clear, $ } from './dom.js';
import { state, sortedIncidents, needsMyAck, canAck, partyName, partyZone, fieldName } from './store.js';
import { timeEl, countdownEl, ago } from './time.js';
import { tlpBadge, sevBadge, statusBadge, stateBadge, ackButton } from './ui.js';

const cache = new Map(); // id -> {key, el}

export function boardSkeleton() {
  return h('section', { id: 'board-view', 'aria-labelledby': 'board-title' },
    h('div', { class: 'board-head' },
      h('h1', { id: 'board-title' }, 'Incidents'),
      h('p', { id: 'board-summary', class: 'summary', 'aria-live': 'polite' })),
    h('div', { id: 'active-list', class: 'cards', role: 'list', 'aria-label': 'Open incidents' }),
    h('p', { id: 'active-empty', class: 'empty', hidden: true }, 'No open incidents.'),
    h('details', { id: 'closed-section', class: 'closed-section' },
      h('summary', null, h('span', { id: 'closed-count' }, 'Closed')),
      h('div', { id: 'closed-list', class: 'cards', role: 'list', 'aria-label': 'Closed incidents' })));
}

export function renderBoard() {
  if (!$('#board-view')) return;
  const { active, closed } = sortedIncidents();
  place($('#active-list'), active);
  place($('#closed-list'), closed);
  const live = new Set([...active, ...closed].map((i) => i.id));
  for (const id of cache.keys()) if (!live.has(id)) { cache.get(id).el.remove(); cache.delete(id); }

  $('#active-empty').hidden = active.length > 0 || !state.loaded;
  $('#closed-count').textContent = `Closed (${closed.length})`;
  $('#closed-section').hidden = closed.length === 0;
  const mine = active.filter(needsMyAck).length;
  const summary = $('#board-summary');
  clear(summary);
  if (!state.loaded) summary.textContent = 'Loading…';
  else {
    summary.append(`${active.length} open`);
    if (state.me && mine) summary.append(' · ', h('strong', { class: 'attn' }, `${mine} awaiting ${state.me.party} acknowledgement`));
  }
  const sel = (location.hash.match(/^#\/incident\/([^/?#]+)/) || [])[1];
  for (const { el } of cache.values()) {
    const on = !!sel && el.dataset.incidentId === decodeURIComponent(sel);
    el.classList.toggle('selected', on);
    if (on) el.setAttribute('aria-current', 'true'); else el.removeAttribute('aria-current');
  }
  document.title = mine ? `(${mine}) focalpoint` : 'focalpoint';
}

function place(list, incs) {
  let prev = null;
  for (const inc of incs) {
    const key = cardKey(inc);
    let entry = cache.get(inc.id);
    if (!entry || entry.key !== key) {
      const el = card(inc);
      if (entry) {
        const hadFocus = entry.el.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
        entry.el.replaceWith(el);
        if (hadFocus) el.querySelector(`[data-focus-key="${hadFocus}"]`)?.focus();
      }
      entry = { key, el };
      cache.set(inc.id, entry);
    }
    const want = prev ? prev.nextSibling : list.firstChild;
    if (entry.el !== want || entry.el.parentNode !== list) list.insertBefore(entry.el, want);
    prev = entry.el;
  }
}

function cardKey(inc) {
  return JSON.stringify([state.me?.id, inc, needsMyAck(inc), state.paged.has(inc.id), [...(state.unanswered.get(inc.id) || [])]]);
}

function card(inc) {
  const mine = needsMyAck(inc);
  const paged = mine && state.paged.has(inc.id);
  const closed = !['open', 'acknowledged'].includes(inc.state);
  const href = `#/incident/${encodeURIComponent(inc.id)}`;
  const el = h('article', {
    class: `card sev-${inc.severity}${mine ? ' needs-ack' : ''}${paged ? ' paged' : ''}${closed ? ' closed' : ''}`,
    role: 'listitem',
    dataset: { testid: 'incident-card', incidentId: inc.id, ref: inc.ref, state: inc.state },
  },
  h('div', { class: 'card-top' },
    h('a', { class: 'ref', href, dataset: { focusKey: 'ref' }, 'aria-label': `Incident ${inc.ref}: open details` }, inc.ref),
    tlpBadge(inc.tlp), sevBadge(inc.severity), statusBadge(inc.status),
    inc.state !== 'open' ? stateBadge(inc.state) : null,
    h('span', { class: 'raised' },
      timeEl(inc.raised_at, partyZone(inc.originator?.party)),
      h('span', { class: 'ago', dataset: { ago: inc.raised_at } }, ago(inc.raised_at)))),
  h('h2', { class: 'card-title' }, h('a', { href, dataset: { focusKey: 'title' } }, inc.title || '(no title)')),
  h('div', { class: 'card-meta' },
    h('span', null, fieldName(inc.field)), ' · from ',
    h('span', { title: partyName(inc.originator?.party) }, inc.originator?.party || '?'),
    inc.originator?.officer ? h('span', { class: 'muted' }, ` (${inc.originator.officer})`) : null),
  partyAcks(inc, closed),
  mine ? h('div', { class: 'card-actions' },
    h('span', { class: 'callout' }, paged ? `You were paged · ${state.me.party} has not acknowledged` : `${state.me.party} has not acknowledged`),
    canAck(inc) ? ackButton(inc) : null) : null);
  el.addEventListener('click', (e) => {
    if (e.target.closest('a, button, input, select, textarea, summary')) return;
    if (String(window.getSelection?.() || '')) return; // selecting text, not navigating
    location.hash = href;
  });
  return el;
}

function partyAcks(inc, closed) {
  const unanswered = state.unanswered.get(inc.id) || new Set();
  const states = new Map((inc.party_states || []).map((p) => [p.party, p]));
  return h('ul', { class: 'acks', 'aria-label': 'Acknowledgement by party' },
    (inc.parties || []).map((code) => {
      const ps = states.get(code) || { party: code, acknowledged: false };
      const acked = !!ps.acknowledged;
      const zone = partyZone(code);
      const esc = ps.escalation;
      return h('li', {
        class: `ack-chip ${acked ? 'acked' : 'pending'}${state.me?.party === code ? ' me' : ''}`,
        dataset: { testid: 'party-ack', party: code, acked: String(acked) },
        title: partyName(code),
      },
      h('span', { class: 'code' }, code),
      acked
        ? h('span', { class: 'ack-state' }, h('span', { 'aria-hidden': 'true' }, '✓ '), 'acked ', timeEl(ps.acknowledged_at, zone))
        : h('span', { class: 'ack-state' }, closed ? 'not acked' : 'pending'),
      !acked && !closed && (unanswered.has(code) || esc?.state === 'exhausted') ? h('span', { class: 'unanswered' }, 'unanswered') : null,
      !acked && !closed && esc && esc.state !== 'stopped' ? countdownEl(esc.next_at, zone) : null);
    }));
}
