// End-to-end test of the focalpoint web dashboard, driving Debian's chromium through playwright-core.
//
// HOW TO RUN
//   cd tests/browser && npm ci          (installs playwright-core only; it never downloads a browser)
//   HUB_URL=http://127.0.0.1:34567 PW_TH_DUTY=… PW_MY_FP=… PW_SG_FP=… PW_VN_FP=… node tests/browser/dashboard.test.mjs
//   Exit code 0 = all passed; non-zero on any failure (node:test, TAP output with "# pass N" / "# fail N").
//
// WHAT THE HARNESS PROVIDES (environment)
//   HUB_URL           required. Base URL of a running hub: dashboard at "/", API under /api/v1, WebSocket /api/v1/stream.
//   ID_OFFICER        focal point id with role "officer" (default th-duty). Raises incidents.
//   ID_A, ID_B, ID_C  focal points with role "focal" (defaults my-drugs, sg-drugs, vn-drugs) of three DIFFERENT parties,
//                     none of them the officer's party. A and B are addressed; C is not (C must never see the incidents).
//   PW_TH_DUTY, PW_MY_FP, PW_SG_FP, PW_VN_FP   passwords of ID_OFFICER, ID_A, ID_B, ID_C (required).
//   FIELD             crime field of the incidents (default drug-trafficking).
//   CHROMIUM          browser binary (default /usr/bin/chromium).
//   CARD_DEADLINE_MS  max ms from the raise's POST response to the card being on A's and B's boards (default 1000).
//   FAIL_SCREENSHOT_DIR  where a failing step saves a PNG of every page (default $TMPDIR/focalpoint-dashboard-failures).
//   SCREENSHOTS=1     write board/detail PNGs at 1280x800 and 390x844 into SCREENSHOT_DIR
//                     (default: dashboards/screenshots/ of this repository).
//
// RESTART PROTOCOL (optional; skipped when RESTART_CMD_FILE is unset)
//   1. The test writes the word "restart" to the path in RESTART_CMD_FILE.
//   2. The harness, polling that path, stops the hub (kill -9 is fine), starts it again on the SAME address with the
//      SAME store (sessions must survive: the browsers keep their cookies), and then DELETES the file.
//      The test polls every 50 ms and fails if the file is not deleted within 30 s.
//   3. Optional: if RAISED_REF_FILE is set, the harness, after restarting the hub (ideally before deleting
//      RESTART_CMD_FILE, so the browsers catch it up by replay), raises an AMBER incident in FIELD addressed to A's and
//      B's parties, and writes its ref (e.g. "K7Q2") to RAISED_REF_FILE. The test waits up to 30 s for that file.
//      Without RAISED_REF_FILE the test raises a second incident itself (fetch from the officer's page) once live.
//   The test asserts every browser showed conn-state "reconnecting" or "offline" during the restart, then "live"
//   again, that the new incident reaches A and B without reload, that the first incident is still there with A's
//   party acknowledged, and that C sees neither incident.
//
// DASHBOARD HOOKS USED: [data-testid=signin-form] with inputs name=id/password; [data-testid=conn-state][data-state];
//   [data-testid=incident-card][data-ref][data-incident-id]; [data-testid=party-ack][data-party][data-acked];
//   [data-testid=ack-button]; [data-testid=raise-form] with inputs named as the API fields.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const env = process.env;
const HUB = (env.HUB_URL || '').replace(/\/$/, '');
const FIELD = env.FIELD || 'drug-trafficking';
const DEADLINE = Number(env.CARD_DEADLINE_MS || 1000);
const USERS = {
  officer: { id: env.ID_OFFICER || 'th-duty', pw: env.PW_TH_DUTY },
  A: { id: env.ID_A || 'my-drugs', pw: env.PW_MY_FP },
  B: { id: env.ID_B || 'sg-drugs', pw: env.PW_SG_FP },
  C: { id: env.ID_C || 'vn-drugs', pw: env.PW_VN_FP },
};
const SHOT_DIR = env.SCREENSHOT_DIR || fileURLToPath(new URL('../../dashboards/screenshots/', import.meta.url));
const RUN = Date.now().toString(36);

const card = (ref) => `[data-testid="incident-card"][data-ref="${ref}"]`;
const partyAck = (ref, party, acked) => `${card(ref)} [data-testid="party-ack"][data-party="${party}"][data-acked="${acked}"]`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Runs in every page before the app: records when each card first appears and every conn-state change.
function recorder() {
  window.__cardSeen = {};
  window.__conn = [];
  const scan = () => {
    const now = performance.timeOrigin + performance.now();
    for (const el of document.querySelectorAll('[data-testid="incident-card"]')) {
      const ref = el.getAttribute('data-ref');
      if (ref && !(ref in window.__cardSeen)) window.__cardSeen[ref] = now;
    }
    const c = document.querySelector('[data-testid="conn-state"]');
    const s = c && c.getAttribute('data-state');
    if (s && window.__conn.at(-1)?.state !== s) window.__conn.push({ state: s, t: Date.now() });
  };
  new MutationObserver(scan).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-state', 'data-ref'] });
}

let browser;
const who = {};       // role -> {ctx, page, me, errors}
const inc1 = {};      // first incident {id, ref}
let broken = false;   // a failed step skips the rest

async function step(t, fn) {
  if (broken) { t.skip('an earlier step failed'); return; }
  try { await fn(); } catch (e) { broken = true; await dumpPages(t.name); throw e; }
}

async function dumpPages(name) {
  const dir = env.FAIL_SCREENSHOT_DIR || path.join(os.tmpdir(), 'focalpoint-dashboard-failures');
  try {
    fs.mkdirSync(dir, { recursive: true });
    for (const [k, w] of Object.entries(who)) await w.page.screenshot({ path: path.join(dir, `${name.replace(/\W+/g, '_')}-${k}.png`) }).catch(() => {});
    console.log(`# failure screenshots in ${dir}`);
  } catch {}
}

async function signIn(role, viewport = { width: 1280, height: 800 }) {
  const u = USERS[role];
  const ctx = await browser.newContext({ viewport });
  await ctx.addInitScript(recorder);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`${role}: ${e.message}`));
  await page.goto(HUB + '/');
  await page.waitForSelector('[data-testid="signin-form"]', { timeout: 10000 });
  await page.fill('[data-testid="signin-form"] [name="id"]', u.id);
  await page.fill('[data-testid="signin-form"] [name="password"]', u.pw);
  await page.click('[data-testid="signin-form"] [type="submit"]');
  await page.waitForSelector('[data-testid="conn-state"][data-state="live"]', { timeout: 15000 });
  const me = await page.evaluate(async () => (await (await fetch('/api/v1/session')).json()).me);
  assert.equal(me.id, u.id, `${role} signed in as ${u.id}`);
  who[role] = { ctx, page, me, errors };
}

/** POST from inside a page (its session cookie), returning {status, body, t} with t = wall-clock ms of the response. */
function apiFrom(role, method, url, body) {
  return who[role].page.evaluate(async ({ method, url, body }) => {
    const r = await fetch(url, { method, headers: { 'Content-Type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    const t = performance.timeOrigin + performance.now();
    let b = null; try { b = await r.json(); } catch {}
    return { status: r.status, body: b, t };
  }, { method, url, body });
}

async function cardLatency(role, ref, t0) {
  await who[role].page.waitForSelector(card(ref), { timeout: 2000 });
  const seen = await who[role].page.evaluate((r) => window.__cardSeen[r], ref);
  return Math.max(0, Math.round(seen - t0));
}

before(async () => {
  assert.ok(HUB, 'HUB_URL must be set (e.g. http://127.0.0.1:34567)');
  for (const [role, u] of Object.entries(USERS)) assert.ok(u.pw, `password for ${role} (${u.id}) must be set`);
  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => { await browser?.close(); });

test('sign in as officer, A, B and C; each board goes live', async (t) => step(t, async () => {
  await Promise.all(['officer', 'A', 'B', 'C'].map((r) => signIn(r)));
  const parties = new Set(['A', 'B', 'C'].map((r) => who[r].me.party));
  assert.equal(parties.size, 3, 'A, B and C are focal points of three different parties');
  assert.ok((who.officer.me.roles || []).includes('officer'), 'ID_OFFICER has role officer');
  assert.ok(!parties.has(who.officer.me.party), "the officer's party is none of A's, B's, C's");
}));

test('officer raises an AMBER incident via the raise form; A and B see it live within the deadline', async (t) => step(t, async () => {
  const { page } = who.officer;
  const [pa, pb] = [who.A.me.party, who.B.me.party];
  await page.click('#raise-link');
  const form = '[data-testid="raise-form"]';
  await page.waitForSelector(form);
  await page.check(`${form} [name="parties"][value="${pa}"]`);
  await page.check(`${form} [name="parties"][value="${pb}"]`);
  await page.selectOption(`${form} [name="field"]`, FIELD);
  await page.selectOption(`${form} [name="severity"]`, 'severe');
  await page.selectOption(`${form} [name="tlp"]`, 'amber');
  await page.selectOption(`${form} [name="status"]`, 'exercise');
  await page.fill(`${form} [name="title"]`, `E2E ${RUN}: suspected methamphetamine consignment`);
  await page.fill(`${form} [name="description"]`, 'Browser end-to-end test. Not a real incident.');
  await page.fill(`${form} [name="area"]`, 'Test area');
  await page.fill(`${form} [name="dedup_key"]`, `e2e-${RUN}-1`);
  const respP = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/v1/incidents');
  await page.click(`${form} [type="submit"]`);
  const resp = await respP;
  assert.equal(resp.status(), 201, 'raise answers 201');
  const inc = await resp.json();
  Object.assign(inc1, { id: inc.id, ref: inc.ref });
  // t0: when the officer's browser got the POST response (Resource Timing), wall clock.
  const t0 = await page.evaluate(() => {
    const e = performance.getEntriesByType('resource').filter((x) => new URL(x.name).pathname === '/api/v1/incidents').at(-1);
    return e ? performance.timeOrigin + e.responseEnd : performance.timeOrigin + performance.now();
  });
  const [la, lb] = await Promise.all([cardLatency('A', inc.ref, t0), cardLatency('B', inc.ref, t0)]);
  console.log(`# ${inc.ref}: card visible on A after ${la} ms, on B after ${lb} ms (deadline ${DEADLINE} ms)`);
  t.diagnostic(`card latency A=${la}ms B=${lb}ms`);
  assert.ok(la <= DEADLINE, `A saw the card after ${la} ms > ${DEADLINE} ms`);
  assert.ok(lb <= DEADLINE, `B saw the card after ${lb} ms > ${DEADLINE} ms`);
  for (const r of ['A', 'B']) {
    await who[r].page.waitForSelector(partyAck(inc.ref, pa, 'false'), { timeout: 1000 });
    await who[r].page.waitForSelector(partyAck(inc.ref, pb, 'false'), { timeout: 1000 });
  }
  // the officer lands on the detail view of the new incident
  await page.waitForFunction((id) => location.hash === `#/incident/${id}`, inc.id, { timeout: 2000 });
}));

test("A acknowledges on the board; B sees A's party acknowledged without reload", async (t) => step(t, async () => {
  const pa = who.A.me.party;
  const { page } = who.A;
  const ackResp = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith(`/api/v1/incidents/${inc1.id}/ack`));
  await page.click(`${card(inc1.ref)} [data-testid="ack-button"]`);
  assert.equal((await ackResp).status(), 200, 'ack answers 200');
  const t0 = Date.now();
  await who.B.page.waitForSelector(partyAck(inc1.ref, pa, 'true'), { timeout: 2000 });
  console.log(`# ${inc1.ref}: B saw ${pa}'s ack after ~${Date.now() - t0} ms`);
  await page.waitForSelector(partyAck(inc1.ref, pa, 'true'), { timeout: 2000 });
  assert.equal(await page.locator(`${card(inc1.ref)} [data-testid="ack-button"]`).count(), 0, "A's ack button is gone");
  assert.ok(await who.B.page.locator(partyAck(inc1.ref, who.B.me.party, 'false')).count() === 1, "B's party is still pending");
}));

test('C (party not addressed) never sees the AMBER incident', async (t) => step(t, async () => {
  const { page } = who.C;
  await sleep(300); // A and B have updated by now; give C's stream the same chance
  assert.equal(await page.locator(card(inc1.ref)).count(), 0, "the card is not on C's board");
  assert.equal(await page.locator(`[data-incident-id="${inc1.id}"]`).count(), 0);
  const r = await apiFrom('C', 'GET', `/api/v1/incidents/${inc1.id}`);
  assert.equal(r.status, 404, 'GET of the incident from C answers 404');
  const list = await apiFrom('C', 'GET', '/api/v1/incidents?state=active&limit=100');
  assert.ok(!(list.body?.incidents || []).some((i) => i.id === inc1.id), "the incident is absent from C's list");
}));

test('screenshots (SCREENSHOTS=1)', { skip: env.SCREENSHOTS !== '1' && 'SCREENSHOTS is not 1' }, async (t) => step(t, async () => {
  fs.mkdirSync(SHOT_DIR, { recursive: true });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    // a separate tab of B so B's recorder and stream stay untouched
    await ctx.addCookies(await who.B.ctx.cookies());
    const page = await ctx.newPage();
    for (const [w, h] of [[1280, 800], [390, 844]]) {
      await page.setViewportSize({ width: w, height: h });
      await page.goto(HUB + '/#/');
      await page.waitForSelector('[data-testid="conn-state"][data-state="live"]', { timeout: 10000 });
      await page.waitForSelector(card(inc1.ref));
      await page.screenshot({ path: path.join(SHOT_DIR, `board-${w}x${h}.png`) });
      await page.click(`${card(inc1.ref)} .card-title a`);
      await page.waitForSelector('#detail-view .timeline, #detail-view .detail-title');
      await sleep(200);
      await page.screenshot({ path: path.join(SHOT_DIR, `detail-${w}x${h}.png`) });
    }
    console.log(`# screenshots in ${SHOT_DIR}`);
  } finally { await ctx.close(); }
}));

test('hub restart: boards show reconnecting, come back live, and miss nothing', { skip: !env.RESTART_CMD_FILE && 'RESTART_CMD_FILE is not set' }, async (t) => step(t, async () => {
  const roles = ['officer', 'A', 'B', 'C'];
  const mark = {};
  for (const r of roles) mark[r] = await who[r].page.evaluate(() => window.__conn.length);
  if (env.RAISED_REF_FILE) fs.rmSync(env.RAISED_REF_FILE, { force: true });
  fs.writeFileSync(env.RESTART_CMD_FILE, 'restart');
  const deadline = Date.now() + 30000;
  while (fs.existsSync(env.RESTART_CMD_FILE)) {
    assert.ok(Date.now() < deadline, 'the harness did not delete RESTART_CMD_FILE within 30 s');
    await sleep(50);
  }
  for (const r of roles) {
    await who[r].page.waitForSelector('[data-testid="conn-state"][data-state="live"]', { timeout: 30000 });
    const hist = await who[r].page.evaluate((m) => window.__conn.slice(m).map((x) => x.state), mark[r]);
    assert.ok(hist.includes('reconnecting') || hist.includes('offline'), `${r}'s conn-state went through reconnecting/offline (saw ${hist.join(' → ')})`);
    assert.equal(hist.at(-1), 'live', `${r} is live again`);
  }
  let ref2;
  if (env.RAISED_REF_FILE) {
    const until = Date.now() + 30000;
    while (!fs.existsSync(env.RAISED_REF_FILE) || !fs.readFileSync(env.RAISED_REF_FILE, 'utf8').trim()) {
      assert.ok(Date.now() < until, 'the harness did not write RAISED_REF_FILE within 30 s');
      await sleep(50);
    }
    ref2 = fs.readFileSync(env.RAISED_REF_FILE, 'utf8').trim();
    for (const r of ['A', 'B']) await who[r].page.waitForSelector(card(ref2), { timeout: 10000 });
  } else {
    const r = await apiFrom('officer', 'POST', '/api/v1/incidents', {
      title: `E2E ${RUN}: second incident after restart`, description: 'Browser end-to-end test. Not a real incident.',
      field: FIELD, severity: 'moderate', tlp: 'amber', status: 'exercise', parties: [who.A.me.party, who.B.me.party], dedup_key: `e2e-${RUN}-2`,
    });
    assert.equal(r.status, 201, `second raise answers 201 (got ${r.status} ${JSON.stringify(r.body)})`);
    ref2 = r.body.ref;
    const [la, lb] = await Promise.all([cardLatency('A', ref2, r.t), cardLatency('B', ref2, r.t)]);
    console.log(`# ${ref2} after restart: card visible on A after ${la} ms, on B after ${lb} ms`);
  }
  const pa = who.A.me.party;
  for (const r of ['A', 'B']) {
    const { page } = who[r];
    assert.equal(await page.locator(card(inc1.ref)).count(), 1, `${r} still has ${inc1.ref}`);
    assert.equal(await page.locator(card(ref2)).count(), 1, `${r} has ${ref2}`);
    assert.equal(await page.locator(partyAck(inc1.ref, pa, 'true')).count(), 1, `${r} still shows ${pa}'s ack on ${inc1.ref}`);
  }
  await sleep(300);
  assert.equal(await who.C.page.locator(card(inc1.ref)).count() + await who.C.page.locator(card(ref2)).count(), 0, 'C sees neither incident');
}));

test('no script errors in any page', async (t) => step(t, async () => {
  const errors = Object.values(who).flatMap((w) => w.errors);
  assert.deepEqual(errors, [], 'uncaught page errors');
}));

// Never hang a CI run.
setTimeout(() => { console.error('# dashboard test: global timeout (180 s)'); process.exit(1); }, 180000).unref();
