// Time display: viewer's zone by default; party-local time in the title attribute.
import { h } from './dom.js';

const hm = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
const dayHm = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
const dayKey = new Intl.DateTimeFormat('en-CA', { year: 'numeric', month: '2-digit', day: '2-digit' });
const zoneFmts = new Map();

function fullIn(tz) {
  const key = tz || '';
  if (!zoneFmts.has(key)) {
    try {
      zoneFmts.set(key, new Intl.DateTimeFormat(undefined, {
        year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
        hourCycle: 'h23', timeZoneName: 'short', ...(tz ? { timeZone: tz } : {}),
      }));
    } catch {
      zoneFmts.set(key, fullIn(null)); // unknown zone name: fall back to the viewer's zone
    }
  }
  return zoneFmts.get(key);
}

export function parse(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "03:12" today, "29 Nov 03:12" otherwise (viewer's zone). */
export function short(iso) {
  const d = parse(iso);
  if (!d) return '—';
  return dayKey.format(d) === dayKey.format(new Date()) ? hm.format(d) : dayHm.format(d);
}

export function clock(date) { return hm.format(date); }

export function full(iso, tz) {
  const d = parse(iso);
  return d ? fullIn(tz).format(d) : '';
}

/**
 * <time> element in the viewer's zone; hovering shows the given party's local time.
 * zone: {label, tz} or null.
 */
export function timeEl(iso, zone, cls) {
  const d = parse(iso);
  if (!d) return h('span', { class: 'muted' }, '—');
  const lines = [`Your time: ${full(iso)}`];
  if (zone && zone.tz) lines.unshift(`${zone.label} local time: ${full(iso, zone.tz)}`);
  lines.push(`UTC: ${d.toISOString().replace('.000Z', 'Z')}`);
  return h('time', { datetime: d.toISOString(), title: lines.join('\n'), class: cls }, short(iso));
}

/** "4:05", "1:02:09" */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const p = (n) => String(n).padStart(2, '0');
  return hh ? `${hh}:${p(mm)}:${p(ss)}` : `${mm}:${p(ss)}`;
}

/** "just now", "5 min ago", "3 h ago", "2 d ago" */
export function ago(iso) {
  const d = parse(iso);
  if (!d) return '';
  const s = (Date.now() - d.getTime()) / 1000;
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400 * 2) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/**
 * A live countdown to an escalation deadline. Updated by tickCountdowns() once a second.
 * Renders nothing when iso is null.
 */
export function countdownEl(iso, zone, prefix = 'next step in ') {
  const d = parse(iso);
  if (!d) return null;
  const lines = [`Next escalation step at ${full(iso)} (your time)`];
  if (zone && zone.tz) lines.push(`${zone.label} local time: ${full(iso, zone.tz)}`);
  const el = h('span', { class: 'countdown', dataset: { deadline: d.getTime(), prefix }, title: lines.join('\n') });
  paintCountdown(el, Date.now());
  return el;
}

function paintCountdown(el, now) {
  const left = Number(el.dataset.deadline) - now;
  if (left <= 0) {
    if (el.dataset.over !== '1') { el.dataset.over = '1'; el.classList.add('overdue'); }
    el.textContent = 'overdue';
  } else {
    el.textContent = `${el.dataset.prefix ?? 'next step in '}${duration(left)}`;
    if (left < 60000) el.classList.add('soon');
  }
}

export function tickCountdowns(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('[data-deadline]')) paintCountdown(el, now);
  for (const el of root.querySelectorAll('[data-ago]')) el.textContent = ago(el.dataset.ago);
}
