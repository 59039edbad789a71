// focalpoint dashboard: entry point. Plain ES modules, no build step, no network beyond the hub.
import { h, clear, $ } from './js/dom.js';
import { api, setUnauthorizedHandler } from './js/api.js';
import { state, subscribe, changed, reset, setNetwork, upsert, addNote, needsMyAck, isOfficer, fieldName, partyName } from './js/store.js';
import { Stream } from './js/stream.js';
import { clock, tickCountdowns } from './js/time.js';
import { boardSkeleton, renderBoard } from './js/board.js';
import { detailSkeleton, openDetail, closeDetail, renderDetail, detailOnEvent, currentDetailId } from './js/detail.js';
import { raiseView } from './js/raise.js';
import { alertsEnabled, setAlerts, unlockAudio, beep, notify, notificationState } from './js/alerts.js';
import { acknowledge, toast } from './js/ui.js';

const main = $('#main');
let stream = null;
let buffer = null; // events received before the snapshot is applied
const rung = new Set();   // page alerts already rung (incident:step:loop)
const seen = new Set();   // recent cursors, to drop an event delivered twice

// ---------------------------------------------------------------- connection indicator

function showConn(s, since) {
  const el = $('#conn');
  el.dataset.state = s;
  const text = s === 'live' ? 'live'
    : s === 'offline' ? (since ? `offline since ${clock(since)}` : 'offline')
      : state.loaded ? 'reconnecting…' : 'connecting…';
  $('#conn-text').textContent = text;
  el.title = s === 'live' ? 'Receiving events live'
    : s === 'offline' ? 'The hub cannot be reached. The board may be out of date; it will catch up when the connection returns.'
      : 'Connection lost; reconnecting. Events will be caught up.';
  document.body.classList.toggle('stale', s === 'offline');
  const note = $('#stale-note');
  if (note) {
    note.hidden = s !== 'offline' || !state.me;
    note.textContent = since ? `Not connected to the hub since ${clock(since)}. This board may be out of date; it will catch up automatically when the connection returns.` : '';
  }
}

// ---------------------------------------------------------------- session

async function boot() {
  setUnauthorizedHandler(() => signedOut('Your session has ended. Please sign in again.'));
  $('#signout').addEventListener('click', signOut);
  $('#alerts-toggle').addEventListener('click', toggleAlerts);
  document.addEventListener('pointerdown', () => { if (alertsEnabled()) unlockAudio(); }, { once: true });
  document.addEventListener('keydown', () => { if (alertsEnabled()) unlockAudio(); }, { once: true });
  window.addEventListener('hashchange', route);
  setInterval(() => tickCountdowns(), 1000);
  try {
    const { data } = await api.session();
    await signedIn(data.me);
  } catch (e) {
    if (e.status === 401) signedOut();
    else {
      showConn('offline', new Date());
      signedOut(`The hub cannot be reached (${e.message}). Reload to try again.`);
    }
  }
}

function signinView(message) {
  const form = h('form', { class: 'signin-form', dataset: { testid: 'signin-form' }, 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('p', { class: 'muted' }, 'Focal point network on emergency management'),
    h('p', { class: 'form-error', id: 'signin-error', role: 'alert' }, message || ''),
    h('label', { for: 'signin-id' }, 'Focal point id'),
    h('input', { id: 'signin-id', name: 'id', type: 'text', autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false', required: true }),
    h('label', { for: 'signin-password' }, 'Password'),
    h('input', { id: 'signin-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    h('button', { type: 'submit', class: 'btn primary wide' }, 'Sign in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const id = form.elements.id.value.trim();
    const password = form.elements.password.value;
    const err = $('#signin-error');
    if (!id || !password) { err.textContent = 'Enter your focal point id and password.'; return; }
    const btn = form.querySelector('button');
    btn.disabled = true; btn.textContent = 'Signing in…';
    try {
      const { data } = await api.signIn(id, password);
      await signedIn(data.me);
    } catch (ex) {
      btn.disabled = false; btn.textContent = 'Sign in';
      err.textContent = ex.status === 401 ? 'Wrong focal point id or password.'
        : ex.status === 429 ? `Too many attempts. Wait${ex.retryAfter ? ` ${ex.retryAfter} s` : ' a minute'} and try again.`
          : ex.message;
      form.elements.password.select();
    }
  });
  return h('section', { id: 'signin-view', class: 'signin' }, form);
}

function signedOut(message) {
  stream?.stop(); stream = null;
  reset();
  closeDetail();
  $('#top-actions').hidden = true;
  $('#page-banner').hidden = true;
  seen.clear();
  showConn('offline', null);
  $('#conn-text').textContent = 'signed out';
  clear(main).append(signinView(message));
  $('#signin-id')?.focus();
  document.title = 'focalpoint';
}

async function signOut() {
  try { await api.signOut(); } catch {}
  signedOut('Signed out.');
}

async function signedIn(me) {
  state.me = me;
  $('#whoami').textContent = `${me.id} · ${me.party}`;
  $('#whoami').title = `${me.name || me.id} — ${partyName(me.party)} — roles: ${(me.roles || []).join(', ')}`;
  $('#top-actions').hidden = false;
  paintAlertsToggle();
  try {
    const { data } = await api.network();
    setNetwork(data);
  } catch (e) {
    if (e.status === 401) return;
    toast(`Could not load the directory: ${e.message}`, 'error');
  }
  $('#raise-link').hidden = !isOfficer();
  restorePaged();
  startStream();
  route();
}

// ---------------------------------------------------------------- data flow

function startStream() {
  buffer = [];
  stream = new Stream({
    getAfter: () => state.lastCursor,
    onEvent,
    onControl,
    onState: (s, { since }) => showConn(s, since),
    onOpenFailure: async () => {
      try { await api.session(); return true; } catch (e) {
        if (e.status === 401) { signedOut('Your session has ended. Please sign in again.'); return false; }
        return true; // hub unreachable: keep trying
      }
    },
  });
  stream.start();
  // Subscribe first, then take the snapshot: nothing falls between the two.
  const s = stream;
  Promise.race([s.whenLiveOrFailed(), new Promise((r) => setTimeout(r, 4000))]).then(() => { if (stream === s) loadSnapshot(); });
}

async function loadSnapshot() {
  try {
    const got = [];
    let cursor = null;
    for (let page = 0; page < 10; page++) {
      const { data } = await api.incidents({ state: 'active', limit: 100, ...(cursor ? { cursor } : {}) });
      got.push(...(data.incidents || []));
      cursor = data.next_cursor;
      if (!cursor) break;
    }
    for (const st of ['resolved', 'cancelled']) {
      const { data } = await api.incidents({ state: st, limit: 25 });
      got.push(...(data.incidents || []));
    }
    for (const inc of got) upsert(inc);
  } catch (e) {
    if (e.status === 401) return;
    toast(`Could not load incidents: ${e.message}`, 'error');
    setTimeout(() => { if (stream && !state.loaded) loadSnapshot(); }, 5000);
    return;
  }
  state.loaded = true;
  const pending = buffer || [];
  buffer = null;
  for (const [ev, meta] of pending) applyEvent(ev, meta);
  changed();
}

function onControl(msg) {
  if (msg.type === 'stream.live') {
    if (typeof msg.cursor === 'string') state.lastCursor = msg.cursor;
    return;
  }
  if (msg.type === 'ack.result') return;
  if (msg.type === 'error') { console.warn('stream error', msg); return; }
  // unknown control messages are ignored
}

function onEvent(ev, meta) {
  if (seen.has(ev.cursor)) return;
  seen.add(ev.cursor);
  if (seen.size > 5000) seen.delete(seen.values().next().value);
  // Cursors are opaque (they hide how many events this viewer is not shown) and the
  // stream sends in order: the latest one is where to resume.
  state.lastCursor = ev.cursor;
  if (buffer) { buffer.push([ev, meta]); return; }
  applyEvent(ev, meta);
}

const fetching = new Set();
async function fetchIncident(id) {
  if (fetching.has(id)) return;
  fetching.add(id);
  try { const { data } = await api.incident(id); upsert(data); } catch {} finally { fetching.delete(id); }
}

function applyEvent(ev, meta) {
  const id = ev.incident;
  const data = ev.data || {};
  switch (ev.type) {
    case 'incident.raised': case 'incident.updated': case 'incident.acknowledged': case 'incident.escalated':
    case 'incident.resolved': case 'incident.cancelled': case 'incident.unanswered':
      if (data.incident) upsert(data.incident);
      else if (id) fetchIncident(id);
      if (ev.type === 'incident.unanswered' && id && ev.party) {
        if (!state.unanswered.has(id)) state.unanswered.set(id, new Set());
        state.unanswered.get(id).add(ev.party);
        changed(id);
      }
      break;
    case 'incident.note':
      if (!addNote(id, { by: data.by, party: data.party, at: ev.at, text: data.text })) fetchIncident(id);
      break;
    case 'page':
      onPage(ev, meta);
      break;
    default:
      break; // notification.* and unknown types: nothing on the board
  }
  if (id) detailOnEvent(ev);
}

// ---------------------------------------------------------------- pages and alerts

function pagedKey() { return `focalpoint.paged.${state.me?.id}`; }
function restorePaged() {
  try {
    for (const [id, d] of JSON.parse(sessionStorage.getItem(pagedKey()) || '[]')) state.paged.set(id, d);
  } catch {}
}
function savePaged() {
  try { sessionStorage.setItem(pagedKey(), JSON.stringify([...state.paged])); } catch {}
}

function onPage(ev, meta) {
  const id = ev.incident;
  const d = ev.data || {};
  const inc = state.incidents.get(id);
  if (inc && !needsMyAck(inc)) return; // already acknowledged: history only
  state.paged.set(id, { ...d, at: ev.at });
  savePaged();
  changed(id);
  if (!inc) fetchIncident(id);
  const fresh = meta.live || Date.now() - Date.parse(ev.at) < 120000;
  const key = `${id}:${d.step}:${d.loop}`;
  if (!fresh || rung.has(key)) return;
  rung.add(key);
  if (alertsEnabled()) {
    beep();
    // The lock screen is outside the network: beyond CLEAR/GREEN show a pointer only.
    const shareable = inc && ['clear', 'green'].includes(inc.tlp);
    notify(`focalpoint page: ${d.ref || inc?.ref || ''} ${String(d.severity || inc?.severity || '').toUpperCase()}`,
      shareable ? inc.title : `${inc ? fieldName(inc.field) + ' · from ' + inc.originator?.party + ' · ' : ''}open focalpoint to acknowledge`,
      id, () => { location.hash = `#/incident/${encodeURIComponent(id)}`; });
  }
}

function renderPageBanner() {
  const banner = $('#page-banner');
  const paged = [...state.paged.keys()].map((id) => state.incidents.get(id)).filter((i) => i && needsMyAck(i));
  if (!paged.length) { banner.hidden = true; clear(banner); return; }
  const sig = paged.map((i) => i.id).join(',');
  if (banner.dataset.sig === sig && !banner.hidden) return;
  banner.dataset.sig = sig;
  clear(banner);
  banner.append(h('strong', null, paged.length === 1 ? 'You were paged: ' : `You were paged for ${paged.length} incidents: `));
  for (const inc of paged.slice(0, 3)) {
    banner.append(h('a', { href: `#/incident/${encodeURIComponent(inc.id)}` }, `${inc.ref} ${inc.severity.toUpperCase()} ${fieldName(inc.field)}`), ' ');
  }
  if (!alertsEnabled()) banner.append(h('span', { class: 'muted' }, ' · turn on alerts to hear pages'));
  banner.hidden = false;
}

function paintAlertsToggle() {
  const on = alertsEnabled();
  const b = $('#alerts-toggle');
  b.setAttribute('aria-pressed', String(on));
  const denied = on && notificationState() === 'denied';
  b.textContent = on ? (denied ? 'Alerts on (sound only)' : 'Alerts on') : 'Enable alerts';
  b.title = on ? 'Pages beep and show a notification. Click to turn off.' : 'Beep and show a notification when you are paged';
}

async function toggleAlerts() {
  const on = !alertsEnabled();
  await setAlerts(on);
  paintAlertsToggle();
  if (on) beep(); // a short test tone confirms sound works
  renderPageBanner();
}

// ---------------------------------------------------------------- routing and rendering

function ensureBoard() {
  if (!$('#board-view')) main.append(boardSkeleton());
}

function route() {
  if (!state.me) return;
  const hash = location.hash || '#/';
  $('#signin-view')?.remove();
  const m = hash.match(/^#\/incident\/([^/?#]+)/);
  $('#raise-view')?.remove();
  ensureBoard();
  main.classList.remove('with-detail', 'with-raise');
  if (m) {
    const id = decodeURIComponent(m[1]);
    if (!$('#detail-view')) main.append(detailSkeleton());
    main.classList.add('with-detail');
    if (currentDetailId() !== id) openDetail(id);
  } else {
    closeDetail();
    $('#detail-view')?.remove();
    if (hash.startsWith('#/raise') && isOfficer() && state.network) {
      main.append(raiseView());
      main.classList.add('with-raise');
      $('#raise-title').focus();
    }
  }
  renderBoard();
}

subscribe((ids) => {
  renderBoard();
  const cur = currentDetailId();
  if (cur && (ids.has('*') || ids.has(cur))) renderDetail();
  for (const id of [...state.paged.keys()]) {
    const inc = state.incidents.get(id);
    if (inc && !needsMyAck(inc)) state.paged.delete(id);
  }
  savePaged();
  renderPageBanner();
});

// Debug/test handle (read-only use).
window.focalpoint = { state, get stream() { return stream; }, acknowledge };

boot();
