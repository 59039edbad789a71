// Shared pieces: badges, toasts, actions used by both board and detail.
import { h, $ } from './dom.js';
import { api } from './api.js';
import { upsert, state } from './store.js';

export const TLP_LABEL = { clear: 'TLP:CLEAR', green: 'TLP:GREEN', amber: 'TLP:AMBER', 'amber+strict': 'TLP:AMBER+STRICT', red: 'TLP:RED' };
const TLP_HELP = {
  clear: 'Shared with the whole network and beyond',
  green: 'Shared with every principal of the network',
  amber: 'Originator party and addressed parties only',
  'amber+strict': 'Originator party and addressed parties only, strictly',
  red: 'Raising officer and named recipients only',
};

export function tlpBadge(tlp) {
  const t = String(tlp || '').toLowerCase();
  return h('span', { class: `tlp tlp-${t.replace('+', '-')}`, title: TLP_HELP[t] || '' }, TLP_LABEL[t] || `TLP:${String(tlp).toUpperCase()}`);
}
export const sevBadge = (sev) => h('span', { class: `sev sev-${sev}`, title: 'Severity' }, String(sev || 'unknown').toUpperCase());
export function statusBadge(status) {
  if (!status || status === 'actual') return null;
  return h('span', { class: `drill drill-${status}`, title: status === 'exercise' ? 'Exercise: not a real emergency' : 'Test message' }, status.toUpperCase());
}
const STATE_LABEL = { open: 'open', acknowledged: 'all acknowledged', resolved: 'resolved', cancelled: 'cancelled' };
export const stateBadge = (st) => h('span', { class: `state state-${st}` }, STATE_LABEL[st] || st);

export function toast(message, kind = 'info') {
  const box = $('#toasts');
  const t = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  box.appendChild(t);
  setTimeout(() => t.remove(), kind === 'error' ? 9000 : 4000);
}

/** Acknowledge for my party through REST (the response is the updated incident). */
export async function acknowledge(inc, button) {
  if (button) { button.disabled = true; button.textContent = 'Acknowledging…'; }
  try {
    const { data } = await api.ack(inc.id);
    upsert(data);
    toast(`${inc.ref}: acknowledged for ${state.me.party}.`);
    return true;
  } catch (e) {
    if (button) { button.disabled = false; button.textContent = `Acknowledge for ${state.me.party}`; }
    toast(`${inc.ref}: could not acknowledge. ${e.message}`, 'error');
    return false;
  }
}

export function ackButton(inc) {
  const b = h('button', { type: 'button', class: 'btn ack', dataset: { testid: 'ack-button', incidentId: inc.id } }, `Acknowledge for ${state.me.party}`);
  b.addEventListener('click', (e) => { e.stopPropagation(); acknowledge(inc, b); });
  return b;
}
