/* chat_test.js — the chat page (web/) in headless Chromium against a real
 * hubud on loopback. alice and bob (two browser contexts, so two devices)
 * sign in through the dev login, chat in their direct session and in a
 * group; bob sends 40 messages while alice sends some and reloads her page
 * mid-stream; hubud stops while both type and comes back on the same port
 * (with a small ratelimit bucket); then alice's WebSockets are refused while
 * she types and reloads, and let through again; last, bob types 16 messages
 * at once into both chats, past that bucket, and the refused ones are
 * retried (renumbered when STALE). After each part both pages must hold every message exactly
 * once, in seq order (in the page's state and in the DOM), under the same
 * seqs on both sides, each sender's in the order typed, with nothing left
 * queued. Older messages are reached by scrolling up (history PULLs).
 *
 * Environment: HUBUD (the binary), HUBU_SOURCE (the source tree: web/ and
 * plugins/), HUBU_TEST_OUT (a folder for the screenshot and hubud's log),
 * NODE_PATH (where scripts/browser-test-deps.sh installed playwright-core).
 * Optional: HUBU_CHROMIUM (default /usr/bin/chromium), HUBU_WEB_ROOT (serve
 * that folder instead of the embedded page), HUBU_CHAT_SCREENSHOT (a second
 * copy of the screenshot, e.g. docs/chat.png). */
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const HUBUD = process.env.HUBUD;
const SOURCE = process.env.HUBU_SOURCE || path.resolve(__dirname, '../..');
const OUT = process.env.HUBU_TEST_OUT || os.tmpdir();
const CHROMIUM = process.env.HUBU_CHROMIUM || '/usr/bin/chromium';
const STREAM = 40; /* bob's messages while alice reloads */
const BURST = 16; /* bob's messages typed at once, past the bucket of RATELIMIT */
/* hubud's second run: a ratelimit bucket of 3 messages, refilled at 2 a second */
const RATELIMIT = 'plugin "ratelimit" { user_rate = 2, user_burst = 3 }\n';
const WAIT_MS = 30000; /* one step's bound */
const WATCHDOG_MS = 105000; /* the whole test's, under ctest's 120 s */

const started = Date.now();
function log(...args) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s]`, ...args);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* ---- hubud ---- */

class Server {
  constructor(dir) {
    this.dir = dir;
    this.data = path.join(dir, 'data');
    this.portFile = path.join(dir, 'ports');
    this.logPath = path.join(OUT, 'browser-hubud.log');
    fs.writeFileSync(this.logPath, '');
    this.child = null;
    this.httpPort = 0;
  }

  /* Starts hubud (on httpPort when it is set, else on an ephemeral port),
   * with the config file config (else none), and waits for its port file. */
  async start(config) {
    fs.rmSync(this.portFile, { force: true });
    const args = [
      '--config', config || 'off',
      '--listen', '127.0.0.1:0',
      '--http-listen', `127.0.0.1:${this.httpPort}`,
      '--admin-listen', '127.0.0.1:0',
      '--port-file', this.portFile,
      '--data', this.data,
      '--plugins', path.join(SOURCE, 'plugins'),
      '--secret', 'browser-test-secret-0123456789abcdef',
      '--dev-login', 'on',
      '--drain-ms', '1000',
      '--max-inflight', '4', /* past 4 unacknowledged pushes a PULL_HINT: the page pulls */
    ];
    if (process.env.HUBU_WEB_ROOT) args.push('--web-root', process.env.HUBU_WEB_ROOT);
    const logFd = fs.openSync(this.logPath, 'a');
    fs.writeSync(logFd, `--- ${HUBUD} ${args.join(' ')}\n`);
    const child = spawn(HUBUD, args, { stdio: ['ignore', logFd, logFd] });
    fs.closeSync(logFd);
    this.child = child;
    child.exited = new Promise((resolve) => child.on('exit', (code, sig) => resolve(sig || code)));
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`hubud exited early (${child.exitCode ?? child.signalCode})`);
      const m = fs.existsSync(this.portFile) && /^http (\d+)$/m.exec(fs.readFileSync(this.portFile, 'utf8'));
      if (m) {
        this.httpPort = Number(m[1]);
        log(`hubud pid ${child.pid} serving http on 127.0.0.1:${this.httpPort}`);
        return;
      }
      await sleep(20);
    }
    throw new Error('hubud wrote no http port line in 20 s');
  }

  /* SIGTERM (hubud drains: GOAWAY to every connection), SIGKILL after 10 s. */
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const how = await Promise.race([child.exited, sleep(10000).then(() => 'timeout')]);
    if (how === 'timeout') {
      log('hubud still running 10 s after SIGTERM: killing it');
      child.kill('SIGKILL');
      await child.exited;
    }
    this.child = null;
  }

  url() {
    return `http://127.0.0.1:${this.httpPort}`;
  }
}

/* ---- the pages ---- */

const pageErrors = [];

async function openUser(browser, server, user) {
  const context = await browser.newContext({ viewport: { width: 980, height: 620 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => pageErrors.push(`[${user}] ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') log(`[${user} console.${m.type()}] ${m.text()}`);
  });
  await page.goto(server.url() + '/');
  await page.fill('#signin-name', user);
  await page.click('#signin-go');
  await waitReady(page);
  log(`${user} signed in as device`, await page.evaluate(() => hubuApp.client.device));
  return { user, context, page };
}

const waitReady = (page) => page.waitForSelector('#status[data-state="ready"]', { timeout: WAIT_MS });

async function openChat(u, sid) {
  const item = u.page.locator(`#sessions li[data-session="${sid}"]`);
  await item.click();
  await u.page.waitForSelector(`#chat-id:text-is("${sid}")`);
}

/* Types text into the composer of the open chat and presses Enter. */
async function type(u, text) {
  await u.page.fill('#text', text);
  await u.page.press('#text', 'Enter');
}

/* The messages a page holds of sid, in seq order: [{seq, sender, text}]. */
function held(u, sid) {
  return u.page.evaluate((sid) => {
    const s = hubuApp.client.sessions.get(sid);
    if (!s) return [];
    return [...s.msgs.values()]
      .sort((a, b) => a.seq - b.seq)
      .map((m) => ({ seq: m.seq, sender: m.sender, text: hubuBase64ToText(m.body) }));
  }, sid);
}

/* Waits until the page holds (or has loaded by scrolling up) every text of want in sid. */
async function waitHolds(u, sid, want) {
  const deadline = Date.now() + WAIT_MS;
  let missing = [];
  while (Date.now() < deadline) {
    await scrollToBeginning(u, sid);
    const texts = new Set((await held(u, sid)).map((m) => m.text));
    missing = want.filter((t) => !texts.has(t));
    if (!missing.length) return;
    await sleep(200);
  }
  throw new Error(`${u.user} misses ${missing.length} of ${want.length} messages in ${sid}: ${missing.slice(0, 5).join(', ')}`);
}

/* Opens sid and scrolls to its top until the page says it is the beginning. */
async function scrollToBeginning(u, sid) {
  await openChat(u, sid);
  for (let i = 0; i < 50; i++) {
    if ((await u.page.getAttribute('#history', 'data-more')) === '0') return;
    await u.page.evaluate(() => {
      const box = document.getElementById('messages');
      box.scrollTop = 0;
      box.dispatchEvent(new Event('scroll'));
    });
    await sleep(100);
  }
  throw new Error(`${u.user}: ${sid} never reached its beginning by scrolling up`);
}

/* Every message once, in seq order in the state and in the DOM, each sender's in the order sent. */
async function verify(u, sid, want) {
  await scrollToBeginning(u, sid);
  const msgs = await held(u, sid);
  const texts = msgs.map((m) => m.text);
  check(new Set(texts).size === texts.length, `${u.user}: a message twice in ${sid}: ${texts.join(' | ')}`);
  check(texts.length === want.length, `${u.user}: ${sid} holds ${texts.length} messages, ${want.length} expected`);
  for (const t of want) check(texts.includes(t), `${u.user}: ${sid} lacks "${t}"`);
  for (let i = 1; i < msgs.length; i++) check(msgs[i - 1].seq < msgs[i].seq, `${u.user}: seqs in order in ${sid}`);
  /* each sender's messages in the order that sender typed them (want lists them so) */
  for (const sender of new Set(msgs.map((m) => m.sender))) {
    const mine = texts.filter((t, i) => msgs[i].sender === sender);
    const expected = want.filter((t) => mine.includes(t));
    check(JSON.stringify(mine) === JSON.stringify(expected), `${u.user}: ${sender}'s messages in ${sid} in the order sent: ${mine.join(' | ')}`);
  }
  const dom = await u.page.evaluate(() => ({
    seqs: [...document.querySelectorAll('#list li.stored')].map((li) => Number(li.dataset.seq)),
    texts: [...document.querySelectorAll('#list li.stored .text')].map((e) => e.textContent),
    pending: document.querySelectorAll('#list li.pending, #list li.failed').length,
    outbox: hubuApp.client.outbox.items.length,
  }));
  check(JSON.stringify(dom.seqs) === JSON.stringify(msgs.map((m) => m.seq)), `${u.user}: the DOM shows ${sid} in seq order`);
  check(JSON.stringify(dom.texts) === JSON.stringify(texts), `${u.user}: the DOM shows what the state holds in ${sid}`);
  check(dom.pending === 0 && dom.outbox === 0, `${u.user}: nothing left queued (${dom.pending} shown, ${dom.outbox} in the outbox)`);
  return msgs;
}

async function verifyBoth(alice, bob, sid, want) {
  const a = await verify(alice, sid, want);
  const b = await verify(bob, sid, want);
  check(JSON.stringify(a) === JSON.stringify(b), `alice and bob hold the same messages under the same seqs in ${sid}`);
  log(`${sid}: ${a.length} messages, once each and in order on both pages (seqs ${a[0].seq}..${a[a.length - 1].seq})`);
}

/* ---- the scenario ---- */

async function scenario(server, browser) {
  const alice = await openUser(browser, server, 'alice');
  const bob = await openUser(browser, server, 'bob');
  const direct = 'd:alice:bob';
  const group = `g:team-${process.pid}`;

  /* direct: alice opens the chat by name, bob finds it in his list */
  await alice.page.fill('#peer', 'bob');
  await alice.page.press('#peer', 'Enter');
  await type(alice, 'hello bob');
  await bob.page.waitForSelector(`#sessions li[data-session="${direct}"]`);
  await openChat(bob, direct);
  await bob.page.waitForSelector('#list li.stored .text:text-is("hello bob")');
  await type(bob, 'hi alice');
  await alice.page.waitForSelector('#list li.stored .text:text-is("hi alice")');
  log('direct chat works both ways');

  /* a group, created by alice with bob in it */
  await alice.page.fill('#group', group);
  await alice.page.fill('#group-members', 'bob');
  await alice.page.click('#group-create');
  await alice.page.waitForSelector(`#chat-id:text-is("${group}")`);
  await type(alice, 'welcome to the team');
  await bob.page.waitForSelector(`#sessions li[data-session="${group}"]`);
  await openChat(bob, group);
  await bob.page.waitForSelector('#list li.stored .text:text-is("welcome to the team")');
  log(`group ${group} works`);

  /* the stream: bob sends STREAM messages, alternating chats; alice queues
   * three and reloads at once, and sends three more after the reload */
  const wantDirect = ['hello bob', 'hi alice'];
  const wantGroup = ['welcome to the team'];
  const bobSends = (async () => {
    for (let i = 1; i <= STREAM; i++) {
      const sid = i % 2 ? direct : group;
      const text = `bob ${String(i).padStart(2, '0')}`;
      await openChat(bob, sid);
      await type(bob, text);
      (sid === direct ? wantDirect : wantGroup).push(text);
      await sleep(120);
    }
  })();
  const aliceReloads = (async () => {
    await sleep(1200);
    await openChat(alice, direct);
    for (let i = 1; i <= 3; i++) {
      await type(alice, `alice before reload ${i}`);
      wantDirect.push(`alice before reload ${i}`);
    }
    log('alice reloads mid-stream');
    await alice.page.reload();
    await waitReady(alice.page);
    await openChat(alice, group);
    for (let i = 1; i <= 3; i++) {
      await type(alice, `alice after reload ${i}`);
      wantGroup.push(`alice after reload ${i}`);
      await sleep(150);
    }
  })();
  await Promise.all([bobSends, aliceReloads]);
  log(`stream done: ${wantDirect.length} messages in ${direct}, ${wantGroup.length} in ${group}`);
  for (const u of [alice, bob]) {
    await waitHolds(u, direct, wantDirect);
    await waitHolds(u, group, wantGroup);
  }
  await verifyBoth(alice, bob, direct, wantDirect);
  await verifyBoth(alice, bob, group, wantGroup);

  /* hubud goes away: what both type meanwhile waits in their outboxes and
   * is delivered once hubud is back on the same port */
  log('stopping hubud');
  await server.stop();
  for (const u of [alice, bob]) await u.page.waitForSelector('#status:not([data-state="ready"])');
  await openChat(alice, direct);
  await type(alice, 'typed while the server was down');
  wantDirect.push('typed while the server was down');
  await openChat(bob, group);
  await type(bob, 'bob typed this offline');
  wantGroup.push('bob typed this offline');
  for (const u of [alice, bob]) await u.page.waitForSelector('#list li.pending');
  const config = path.join(server.dir, 'hubu.lua');
  fs.writeFileSync(config, RATELIMIT);
  await server.start(config);
  for (const u of [alice, bob]) await waitReady(u.page);
  log('both pages reconnected');
  for (const u of [alice, bob]) {
    await waitHolds(u, direct, wantDirect);
    await waitHolds(u, group, wantGroup);
  }
  await verifyBoth(alice, bob, direct, wantDirect);
  await verifyBoth(alice, bob, group, wantGroup);

  /* alice's network refuses WebSockets: a message typed then is still
   * queued after a reload, and is sent once the network is back */
  let blocked = true;
  await alice.context.routeWebSocket(/\/ws$/, (ws) => (blocked ? ws.close({ code: 1006, reason: 'blocked by the test' }) : ws.connectToServer()));
  await alice.page.reload();
  await alice.page.waitForSelector('#status[data-state="backoff"]');
  await openChat(alice, direct);
  await type(alice, 'queued across a reload');
  wantDirect.push('queued across a reload');
  await alice.page.waitForSelector('#list li.pending .text:text-is("queued across a reload")');
  await alice.page.reload();
  await alice.page.waitForSelector('#list li.pending .text:text-is("queued across a reload")');
  log('alice reloaded offline: her message is still queued');
  blocked = false;
  await waitReady(alice.page);
  for (const u of [alice, bob]) await waitHolds(u, direct, wantDirect);
  await verifyBoth(alice, bob, direct, wantDirect);
  await verifyBoth(alice, bob, group, wantGroup);

  /* a burst past the ratelimit plugin's bucket (RATELIMIT), to both chats
   * in turn: the refused SENDs are retried after retry_after_ms, and one
   * that a later one of the other chat overtook is answered STALE and sent
   * again under a new client_id; each chat keeps bob's order */
  const burst = Array.from({ length: BURST }, (_, i) => ({
    sid: i % 2 ? group : direct,
    text: `burst ${String(i + 1).padStart(2, '0')}`,
  }));
  await bob.page.evaluate((burst) => {
    for (const { sid, text } of burst) { /* faster than typing: the composer's form submitted BURST times in one go */
      openSession(sid);
      document.getElementById('text').value = text;
      document.getElementById('composer').requestSubmit();
    }
  }, burst);
  for (const { sid, text } of burst) (sid === direct ? wantDirect : wantGroup).push(text);
  for (const u of [alice, bob]) {
    await waitHolds(u, direct, wantDirect);
    await waitHolds(u, group, wantGroup);
  }
  await verifyBoth(alice, bob, direct, wantDirect);
  await verifyBoth(alice, bob, group, wantGroup);
  const { retried, stale } = await bob.page.evaluate(() => hubuApp.client.stats);
  check(retried > 0, `bob's burst met RATE_LIMITED and was retried (${retried} retries)`);
  log(`bob's burst of ${BURST}: ${retried} RATE_LIMITED answers retried, ${stale} STALE renumbered`);

  for (const u of [alice, bob]) log(`${u.user}'s client:`, JSON.stringify(await u.page.evaluate(() => hubuApp.client.stats)));
  check(pageErrors.length === 0, `no uncaught errors in the pages: ${pageErrors.join('; ')}`);

  await openChat(alice, direct);
  await alice.page.evaluate(() => (document.getElementById('messages').scrollTop = 1e9));
  await sleep(100);
  const shot = path.join(OUT, 'chat.png');
  await alice.page.screenshot({ path: shot });
  if (process.env.HUBU_CHAT_SCREENSHOT) fs.copyFileSync(shot, process.env.HUBU_CHAT_SCREENSHOT);
  log(`screenshot: ${shot}`);
}

async function main() {
  check(HUBUD && fs.existsSync(HUBUD), 'HUBUD names the hubud binary');
  check(fs.existsSync(CHROMIUM), `${CHROMIUM} exists`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubu-browser-'));
  const server = new Server(dir);
  let browser = null;
  const watchdog = setTimeout(() => {
    console.error(`browser test: watchdog after ${WATCHDOG_MS} ms`);
    if (server.child) server.child.kill('SIGKILL');
    process.exit(2);
  }, WATCHDOG_MS);
  let failed = null;
  try {
    await server.start();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    log(`chromium ${browser.version()}`);
    await scenario(server, browser);
  } catch (e) {
    failed = e;
  }
  if (browser) await browser.close().catch(() => {});
  log('chromium closed');
  await server.stop().catch(() => {});
  log('hubud stopped');
  clearTimeout(watchdog);
  fs.rmSync(dir, { recursive: true, force: true });
  if (failed) {
    console.error(`FAILED: ${failed.stack || failed}`);
    console.error(`--- hubud log (${server.logPath}), last lines:`);
    console.error(fs.readFileSync(server.logPath, 'utf8').split('\n').slice(-40).join('\n'));
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  console.log('1 passed, 0 failed');
  process.exit(0);
}

main();
