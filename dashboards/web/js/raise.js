// Raise form (officers). Input names equal the API field names; server 422 errors land next to their field.
import { h, $, $$, randomId } from './dom.js';
import { api } from './api.js';
import { state, upsert } from './store.js';
import { TLP_LABEL, toast } from './ui.js';

const SEVERITIES = ['extreme', 'severe', 'moderate', 'minor', 'unknown'];
const URGENCIES = ['immediate', 'expected', 'future', 'past', 'unknown'];
const CERTAINTIES = ['observed', 'likely', 'possible', 'unlikely', 'unknown'];
const STATUSES = ['actual', 'exercise', 'test'];
const TLPS = ['clear', 'green', 'amber', 'amber+strict', 'red'];

let idemKey = null;

const opt = (v, label, sel) => h('option', { value: v, selected: v === sel }, label ?? v);
const select = (name, values, sel, labels = {}) =>
  h('select', { name, id: `f-${name}` }, values.map((v) => opt(v, labels[v] ?? v, sel)));

function fieldBox(name, label, control, hint) {
  return h('div', { class: 'form-row', dataset: { for: name } },
    h('label', { for: `f-${name}` }, label), control,
    hint ? h('p', { class: 'hint' }, hint) : null,
    h('p', { class: 'field-error', id: `err-${name}`, role: 'alert' }));
}

export function raiseView() {
  idemKey = randomId();
  const me = state.me;
  const parties = (state.network?.parties || []);
  const form = h('form', { class: 'raise-form', dataset: { testid: 'raise-form' }, novalidate: true, 'aria-labelledby': 'raise-title' },
    h('p', { class: 'form-error top-error', id: 'raise-error', role: 'alert' }),
    h('fieldset', { class: 'form-row parties', dataset: { for: 'parties' }, 'aria-describedby': 'err-parties' },
      h('legend', null, 'Addressed parties'),
      h('div', { class: 'checks' }, parties.map((p) => h('label', { class: 'check', title: p.name },
        h('input', { type: 'checkbox', name: 'parties', value: p.code }), h('span', null, p.code), h('span', { class: 'muted pname' }, p.name)))),
      h('p', { class: 'field-error', id: 'err-parties', role: 'alert' })),
    h('div', { class: 'grid2' },
      fieldBox('field', 'Field', h('select', { name: 'field', id: 'f-field' },
        (state.network?.fields || []).map((f) => opt(f.id, f.name, (me.fields || [])[0])))),
      fieldBox('severity', 'Severity', select('severity', SEVERITIES, 'severe')),
      fieldBox('urgency', 'Urgency', select('urgency', URGENCIES, 'immediate')),
      fieldBox('certainty', 'Certainty', select('certainty', CERTAINTIES, 'likely')),
      fieldBox('status', 'Status', select('status', STATUSES, 'actual', { actual: 'actual', exercise: 'exercise (drill)', test: 'test' })),
      fieldBox('tlp', 'TLP', select('tlp', TLPS, 'amber', TLP_LABEL))),
    fieldBox('recipients', 'Named recipients (required for TLP:RED)',
      h('select', { name: 'recipients', id: 'f-recipients', multiple: true, size: '6' }),
      'Only these focal points (and you) will see a RED incident. Ctrl/⌘-click to choose several.'),
    fieldBox('title', 'Title', h('input', { name: 'title', id: 'f-title', type: 'text', maxlength: '200', autocomplete: 'off', required: true })),
    fieldBox('description', 'Description', h('textarea', { name: 'description', id: 'f-description', rows: '5', maxlength: '10000' })),
    h('div', { class: 'grid3' },
      fieldBox('area', 'Area', h('input', { name: 'area', id: 'f-area', type: 'text', maxlength: '500', placeholder: 'e.g. Mekong river, Chiang Saen port' })),
      fieldBox('area.lat', 'Latitude', h('input', { name: 'area.lat', id: 'f-area.lat', type: 'text', inputmode: 'decimal', placeholder: 'optional' })),
      fieldBox('area.lon', 'Longitude', h('input', { name: 'area.lon', id: 'f-area.lon', type: 'text', inputmode: 'decimal', placeholder: 'optional' }))),
    fieldBox('dedup_key', 'Dedup key', h('input', { name: 'dedup_key', id: 'f-dedup_key', type: 'text', maxlength: '200', autocomplete: 'off' }),
      'Optional. Raising again with the same key while the incident is open returns the existing incident.'),
    h('div', { class: 'form-actions' },
      h('button', { type: 'submit', class: 'btn primary' }, 'Raise incident'),
      h('a', { class: 'btn ghost', href: '#/' }, 'Cancel')));

  form.addEventListener('change', (e) => {
    if (['parties', 'tlp', 'field'].includes(e.target.name)) syncRecipients(form);
  });
  form.addEventListener('submit', (e) => { e.preventDefault(); submit(form); });
  syncRecipients(form);
  return h('section', { id: 'raise-view' }, h('p', { class: 'back' }, h('a', { href: '#/' }, '← Board')),
    h('h1', { id: 'raise-title', tabindex: '-1' }, `Raise an incident for ${me.party}`), form);
}

function syncRecipients(form) {
  const red = form.tlp.value === 'red';
  const row = form.querySelector('[data-for="recipients"]');
  row.hidden = !red;
  const sel = form.recipients;
  const chosen = new Set($$('input[name=parties]:checked', form).map((i) => i.value));
  const kept = new Set(Array.from(sel.selectedOptions).map((o) => o.value));
  sel.replaceChildren(...Array.from(state.focal.values())
    .filter((f) => chosen.has(f.party) && f.id !== state.me.id)
    .sort((a, b) => a.party.localeCompare(b.party) || a.id.localeCompare(b.id))
    .map((f) => h('option', { value: f.id, selected: kept.has(f.id) },
      `${f.party} · ${f.name || f.id} (${f.id})${(f.fields || []).includes(form.field.value) ? '' : ' — other field'}`)));
  sel.required = red;
}

function showErrors(form, errors) {
  $$('.field-error', form).forEach((e) => { e.textContent = ''; });
  $$('[aria-invalid]', form).forEach((e) => e.removeAttribute('aria-invalid'));
  $('#raise-error').textContent = '';
  let first = null;
  for (const { field, message } of errors) {
    const key = field && findRow(form, field);
    if (key) {
      form.querySelector(`#err-${CSS.escape(key)}`).textContent = message;
      const input = form.querySelector(`[name="${key}"]`);
      input?.setAttribute('aria-invalid', 'true');
      first ||= input;
    } else {
      $('#raise-error').textContent = message;
      first ||= $('#raise-error');
    }
  }
  if (first) { first.focus?.(); first.scrollIntoView?.({ block: 'center' }); }
}

/** "area.text" -> "area", "parties[2]" -> "parties", "area.lat" stays. */
function findRow(form, field) {
  const candidates = [field, field.replace(/\[\d+\]$/, ''), field.replace(/\.text$/, ''), field.split(/[.[]/)[0]];
  return candidates.find((c) => form.querySelector(`#err-${CSS.escape(c)}`)) || null;
}

function collect(form) {
  const v = (n) => form.elements[n].value.trim();
  const body = {
    title: v('title'),
    description: v('description'),
    field: v('field'),
    severity: v('severity'),
    urgency: v('urgency'),
    certainty: v('certainty'),
    status: v('status'),
    tlp: v('tlp'),
    parties: $$('input[name=parties]:checked', form).map((i) => i.value),
  };
  if (body.tlp === 'red') body.recipients = Array.from(form.recipients.selectedOptions).map((o) => o.value);
  const errors = [];
  const areaText = v('area'), lat = v('area.lat'), lon = v('area.lon');
  if (areaText || lat || lon) {
    body.area = { text: areaText };
    for (const [k, raw] of [['lat', lat], ['lon', lon]]) {
      if (!raw) continue;
      const n = Number(raw.replace(',', '.'));
      if (!Number.isFinite(n)) errors.push({ field: `area.${k}`, message: 'Enter a number in decimal degrees.' });
      else body.area[k] = n;
    }
  }
  if (v('dedup_key')) body.dedup_key = v('dedup_key');
  if (!body.parties.length) errors.push({ field: 'parties', message: 'Choose at least one party.' });
  if (!body.title) errors.push({ field: 'title', message: 'A title is required.' });
  if (body.tlp === 'red' && !body.recipients.length) errors.push({ field: 'recipients', message: 'TLP:RED needs at least one named recipient.' });
  return { body, errors };
}

async function submit(form) {
  const { body, errors } = collect(form);
  showErrors(form, errors);
  if (errors.length) return;
  const btn = form.querySelector('[type=submit]');
  btn.disabled = true;
  btn.textContent = 'Raising…';
  try {
    const { status, data } = await api.raise(body, idemKey);
    upsert(data);
    idemKey = randomId();
    toast(status === 200 ? `An open incident with this dedup key already exists: ${data.ref}.` : `Raised ${data.ref}.`, status === 200 ? 'warn' : 'info');
    location.hash = `#/incident/${encodeURIComponent(data.id)}`;
  } catch (e) {
    btn.disabled = false;
    btn.textContent = 'Raise incident';
    // Same Idempotency-Key on retry after a network failure: the hub will not raise twice.
    showErrors(form, [{ field: e.field, message: e.status === 0 ? e.message : `${e.message}` }]);
  }
}
