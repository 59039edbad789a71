// Client state: who I am, the directory, the incidents I may see, and the stream position.

export const SEVERITY_RANK = { extreme: 0, severe: 1, moderate: 2, minor: 3, unknown: 4 };
export const ACTIVE = new Set(['open', 'acknowledged']);

export const state = {
  me: null,             // session principal
  network: null,        // {parties, fields, focal_points}
  parties: new Map(),   // code -> party
  fields: new Map(),    // id -> field
  focal: new Map(),     // id -> focal point
  incidents: new Map(), // id -> Incident (no timeline)
  unanswered: new Map(), // id -> Set(party) from incident.unanswered
  paged: new Map(),     // incident id -> last page event data (for me)
  lastCursor: null,     // cursor of the last event received (null: none yet)
  loaded: false,        // initial snapshot applied
};

const listeners = new Set();
export function subscribe(fn) { listeners.add(fn); return () => listeners.delete(fn); }
let scheduled = false;
let pendingIds = new Set();
/** Coalesce change notifications (setTimeout, not rAF: background tabs must still update). */
export function changed(id) {
  if (id) pendingIds.add(id); else pendingIds.add('*');
  if (scheduled) return;
  scheduled = true;
  setTimeout(() => {
    scheduled = false;
    const ids = pendingIds; pendingIds = new Set();
    for (const fn of listeners) { try { fn(ids); } catch (e) { console.error(e); } }
  }, 0);
}

export function reset() {
  state.me = null; state.network = null;
  state.parties.clear(); state.fields.clear(); state.focal.clear();
  state.incidents.clear(); state.unanswered.clear(); state.paged.clear();
  state.lastCursor = null; state.loaded = false;
}

export function setNetwork(net) {
  state.network = net;
  state.parties = new Map((net.parties || []).map((p) => [p.code, p]));
  state.fields = new Map((net.fields || []).map((f) => [f.id, f]));
  state.focal = new Map((net.focal_points || []).map((f) => [f.id, f]));
  if (net.me) state.me = net.me;
}

// ---- names and zones -------------------------------------------------------

export const partyName = (code) => state.parties.get(code)?.name || code;
export const fieldName = (id) => state.fields.get(id)?.name || id;
export const focalName = (id) => state.focal.get(id)?.name || id;
export function partyZone(code) {
  const p = state.parties.get(code);
  return p && p.timezone ? { label: `${p.name || code}`, tz: p.timezone } : null;
}

// ---- permissions (the server decides; these only choose which buttons to show) ----

const hasRole = (r) => !!state.me && (state.me.roles || []).includes(r);
export const isOfficer = () => hasRole('officer');
export const canAckRole = () => hasRole('focal') || hasRole('coordinator');

export function myPartyState(inc) {
  if (!state.me) return null;
  return (inc.party_states || []).find((p) => p.party === state.me.party) || null;
}

/** Addressed to my party, still active, and my party has not acknowledged. */
export function needsMyAck(inc) {
  if (!ACTIVE.has(inc.state) || !state.me) return false;
  if (!(inc.parties || []).includes(state.me.party)) return false;
  const ps = myPartyState(inc);
  return !(ps && ps.acknowledged);
}

export const canAck = (inc) => canAckRole() && needsMyAck(inc);
export const canClose = (inc) => isOfficer() && ACTIVE.has(inc.state) && inc.originator?.party === state.me?.party;

// ---- incidents ---------------------------------------------------------------

/** Insert or replace, never going back in time (snapshot vs. buffered events). */
export function upsert(inc) {
  if (!inc || !inc.id) return false;
  const cur = state.incidents.get(inc.id);
  if (cur && cur.updated_at && inc.updated_at && Date.parse(inc.updated_at) < Date.parse(cur.updated_at)) return false;
  const copy = { ...inc };
  delete copy.timeline;
  state.incidents.set(inc.id, copy);
  if (!needsMyAck(copy)) state.paged.delete(copy.id);
  changed(inc.id);
  return true;
}

export function addNote(id, note) {
  const inc = state.incidents.get(id);
  if (!inc) return false;
  const notes = inc.notes || [];
  if (notes.some((n) => n.at === note.at && n.by === note.by && n.text === note.text)) return true;
  inc.notes = [...notes, note];
  changed(id);
  return true;
}

export function sortedIncidents() {
  const all = Array.from(state.incidents.values());
  const active = all.filter((i) => ACTIVE.has(i.state));
  const closed = all.filter((i) => !ACTIVE.has(i.state));
  active.sort((a, b) =>
    (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9)
    || (a.state === 'open' ? 0 : 1) - (b.state === 'open' ? 0 : 1)
    || Date.parse(a.raised_at) - Date.parse(b.raised_at));
  closed.sort((a, b) => Date.parse(b.closed_at || b.updated_at) - Date.parse(a.closed_at || a.updated_at));
  return { active, closed };
}
