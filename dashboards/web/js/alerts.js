// Opt-in alerts for pages: a short WebAudio beep and a browser Notification.
const KEY = 'focalpoint.alerts';
let ctx = null;

export const alertsEnabled = () => localStorage.getItem(KEY) === 'on';

export async function setAlerts(on) {
  localStorage.setItem(KEY, on ? 'on' : 'off');
  if (on) {
    unlockAudio();
    if ('Notification' in window && Notification.permission === 'default') {
      try { await Notification.requestPermission(); } catch {}
    }
  }
}

export function notificationState() {
  if (!('Notification' in window)) return 'unsupported';
  return Notification.permission; // granted | denied | default
}

/** Must run inside a user gesture at least once per page load for audio to play. */
export function unlockAudio() {
  try {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    if (!ctx) ctx = new AC();
    if (ctx.state === 'suspended') ctx.resume().catch(() => {});
  } catch {}
}
export const audioReady = () => !!ctx && ctx.state === 'running';

export function beep() {
  if (!ctx) unlockAudio();
  if (!ctx) return;
  const t0 = ctx.currentTime + 0.02;
  for (const [i, f] of [[0, 880], [1, 660], [2, 880]]) {
    const osc = ctx.createOscillator();
    const g = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.value = f;
    const s = t0 + i * 0.22;
    g.gain.setValueAtTime(0.0001, s);
    g.gain.exponentialRampToValueAtTime(0.3, s + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, s + 0.18);
    osc.connect(g).connect(ctx.destination);
    osc.start(s);
    osc.stop(s + 0.2);
  }
}

/** title/body must already respect the TLP label (the lock screen is outside the network). */
export function notify(title, body, tag, onClick) {
  if (notificationState() !== 'granted') return;
  try {
    const n = new Notification(title, { body, tag, renotify: true, requireInteraction: true });
    n.onclick = () => { window.focus(); onClick?.(); n.close(); };
  } catch {}
}
