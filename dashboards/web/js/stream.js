// One WebSocket to /api/v1/stream, resumed with ?after=<last cursor> so no event is missed.
// Connection states (shown in the header): live | reconnecting | offline.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
const OFFLINE_AFTER_MS = 15000;
const LIVE_FALLBACK_MS = 2000;   // if the server never sends stream.live
const SILENCE_LIMIT_MS = 45000;  // only enforced once the server has shown it sends heartbeats

export class Stream {
  /**
   * getAfter(): last cursor seen or null; onEvent(ev, {live}); onControl(msg);
   * onState(state, {since}); onOpenFailure(): async, returns false to stop (e.g. session gone).
   */
  constructor({ getAfter, onEvent, onControl, onState, onOpenFailure }) {
    Object.assign(this, { getAfter, onEvent, onControl, onState, onOpenFailure });
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.state = 'reconnecting';
    this.failingSince = null;
    this.live = false;
    this.timers = {};
    this.heartbeats = false;
    this.lastMessageAt = 0;
    this.liveWaiters = [];
  }

  url() {
    const u = new URL('api/v1/stream', document.baseURI);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    const after = this.getAfter();
    if (after !== null && after !== undefined) u.searchParams.set('after', String(after));
    return u.toString();
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.failingSince = Date.now();
    this.setState('reconnecting');
    this.armOffline();
    this.connect();
    this.onOnline = () => this.kick();
    this.onVisible = () => { if (document.visibilityState === 'visible') this.kick(); };
    window.addEventListener('online', this.onOnline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.timers.watchdog = setInterval(() => {
      if (this.ws && this.live && this.heartbeats && Date.now() - this.lastMessageAt > SILENCE_LIMIT_MS) {
        try { this.ws.close(4000, 'client: no heartbeat'); } catch {}
      }
    }, 5000);
  }

  stop() {
    this.stopped = true;
    for (const t of Object.values(this.timers)) { clearTimeout(t); clearInterval(t); }
    this.timers = {};
    window.removeEventListener('online', this.onOnline);
    document.removeEventListener('visibilitychange', this.onVisible);
    if (this.ws) { const ws = this.ws; this.ws = null; try { ws.close(1000, 'signed out'); } catch {} }
    this.live = false;
    this.resolveLiveWaiters();
  }

  /** Resolves when live, or when the first connection attempt fails (then the board loads anyway). */
  whenLiveOrFailed() {
    if (this.live) return Promise.resolve(true);
    return new Promise((res) => this.liveWaiters.push(res));
  }
  resolveLiveWaiters(v = false) { const w = this.liveWaiters; this.liveWaiters = []; w.forEach((f) => f(v)); }

  /** Reconnect now if we are waiting in backoff (network came back, tab became visible). */
  kick() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timers.retry);
    this.connect();
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(obj)); return true; }
    return false;
  }

  connect() {
    if (this.stopped) return;
    let opened = false;
    let ws;
    try { ws = new WebSocket(this.url()); } catch (e) { this.scheduleRetry(false); return; }
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.lastMessageAt = Date.now();
      clearTimeout(this.timers.liveFallback);
      this.timers.liveFallback = setTimeout(() => { if (this.ws === ws && !this.live) this.goLive(); }, LIVE_FALLBACK_MS);
    };
    ws.onmessage = (m) => {
      if (this.ws !== ws) return;
      this.lastMessageAt = Date.now();
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (!msg || typeof msg !== 'object') return;
      if (msg.type === 'stream.live') {
        this.onControl(msg);
        this.goLive();
      } else if (msg.type === 'heartbeat' || msg.type === 'ping') {
        this.heartbeats = true;
      } else if (typeof msg.cursor === 'string' && typeof msg.type === 'string') {
        this.onEvent(msg, { live: this.live });
      } else {
        this.onControl(msg);
      }
    };
    ws.onerror = () => {};
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.timers.liveFallback);
      const wasLive = this.live;
      this.live = false;
      if (this.stopped) return;
      if (wasLive || !this.failingSince) this.failingSince = Date.now();
      this.setState(Date.now() - this.failingSince >= OFFLINE_AFTER_MS ? 'offline' : 'reconnecting');
      this.armOffline();
      this.resolveLiveWaiters(false);
      // 4008: slow consumer, resume at once from our cursor. 4001: our credential ended;
      // ask whether the session is still good (it is not: the sign-in screen) first.
      this.scheduleRetry((opened && e.code !== 4001) || e.code === 4008, e.code);
    };
  }

  async scheduleRetry(opened, code) {
    if (this.stopped) return;
    if (code === 4008) this.attempt = 0;
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt++;
    if (!opened && this.onOpenFailure) {
      // The upgrade was refused: maybe the session has ended. Ask (cheaply) before retrying.
      const keepGoing = await this.onOpenFailure();
      if (!keepGoing) { this.stop(); return; }
    }
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  goLive() {
    this.live = true;
    this.attempt = 0;
    this.failingSince = null;
    clearTimeout(this.timers.offline);
    this.setState('live');
    this.resolveLiveWaiters(true);
  }

  armOffline() {
    clearTimeout(this.timers.offline);
    const left = OFFLINE_AFTER_MS - (Date.now() - this.failingSince);
    this.timers.offline = setTimeout(() => {
      if (!this.live && !this.stopped) this.setState('offline');
    }, Math.max(0, left));
  }

  setState(s) {
    this.state = s;
    this.onState(s, { since: this.failingSince ? new Date(this.failingSince) : null });
  }
}
