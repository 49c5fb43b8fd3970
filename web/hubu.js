/* hubu.js — the chat page's client of hubud: one (user, device) connection
 * over WebSocket in the JSON form (subprotocol hubu.v1.json, PROTOCOL.md
 * sections 2, 5 and 9), doing what libhubu-client does: an outbox in
 * localStorage resent with the same client_ids after every connect (and
 * after a page reload), in client_id order with one SEND in flight per
 * session, retried after RATE_LIMITED and renumbered after STALE;
 * per-session cursors with a reorder buffer, the 500 ms gap
 * wait then PULL, SYNC after every HELLO_OK, cumulative DELIVER_ACKs,
 * duplicates dropped by (session, seq), reconnect with backoff.
 * Invariant: a cursor moves only past messages handed to the page or past
 * seqs a PULL proved absent, so each (session, seq) is shown once. What the
 * page shows of older history (below `base`) comes from PULLs on scrolling. */
'use strict';

const HUBU_PAGE = 20; /* messages of a session shown at first; scrolling up pulls this many more */
const HUBU_PULL_LIMIT = 200; /* a delivery PULL's limit */
const HUBU_GAP_WAIT_MS = 500; /* a hole may still be in flight: wait this long before pulling */
const HUBU_SEND_TIMEOUT_MS = 10000; /* resend an unanswered SEND after this */
const HUBU_RETRY_MIN_MS = 1000; /* resend after UNAVAILABLE and friends, at the least */
const HUBU_HELLO_TIMEOUT_MS = 10000; /* connect + HELLO_OK */
const HUBU_BACKOFF_MIN_MS = 200;
const HUBU_BACKOFF_MAX_MS = 30000;
const HUBU_TICK_MS = 100; /* resolution of every timer below */

/* ---- bytes ---- */

function hubuUtf8ToBase64(text) {
  const bytes = new TextEncoder().encode(text);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function hubuBase64ToBytes(b64) {
  const s = atob(b64 || '');
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

function hubuBase64ToText(b64) {
  return new TextDecoder('utf-8').decode(hubuBase64ToBytes(b64));
}

/* uint64 fields arrive as decimal strings; seqs and client_ids stay far below 2^53. */
function hubuNum(v) {
  return v === undefined || v === null || v === '' ? 0 : Number(v);
}

/* The direct session of two users: d:<a>:<b> with a < b bytewise (ids are ASCII). */
function hubuDirectSession(a, b) {
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

/* The user of a section-6 token (split from the right: user ids may hold dots), or ''. */
function hubuTokenUser(token) {
  const parts = String(token).split('.');
  if (parts.length < 4 || parts[0] !== 'v1') return '';
  return parts.slice(1, -2).join('.');
}

const HUBU_ID_RE = /^[A-Za-z0-9_.@-]{1,64}$/;

/* ---- the device ---- */

function hubuRandomId(n) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const r = new Uint8Array(n);
  crypto.getRandomValues(r);
  let s = '';
  for (const x of r) s += alphabet[x % alphabet.length];
  return s;
}

/* This browser profile's device id, kept in localStorage. A second tab of the
 * profile must not share the device (its client_ids would collide), so each
 * tab holds a Web Lock on the id it uses: the first tab gets the stored id, a
 * second one the id with "-2", and so on. A reloading tab waits a moment for
 * the lock its previous page still held, so it keeps its device and outbox. */
async function hubuClaimDevice(storage) {
  let base = storage.getItem('hubu.device');
  if (!base || !HUBU_ID_RE.test(base)) {
    base = 'web-' + hubuRandomId(10);
    storage.setItem('hubu.device', base);
  }
  if (!navigator.locks) return base; /* not a secure context: one tab per profile */
  const claim = (id, waitMs) =>
    new Promise((resolve) => {
      const opts = waitMs ? { signal: AbortSignal.timeout(waitMs) } : { ifAvailable: true };
      navigator.locks
        .request('hubu.device.' + id, opts, (lock) => {
          resolve(!!lock);
          return lock ? new Promise(() => {}) : undefined; /* held for the page's life */
        })
        .catch(() => resolve(false));
    });
  if (await claim(base, 1500)) return base;
  for (let n = 2; n <= 16; n++) if (await claim(`${base}-${n}`, 0)) return `${base}-${n}`;
  return `${base}-${hubuRandomId(6)}`;
}

/* ---- the outbox ---- */

/* Sends not yet answered for good, and the highest client_id used, in
 * localStorage under hubu.outbox.<user>.<device>. Written before a SEND
 * leaves and after every answer, so a reload resends what was not answered,
 * with the same client_ids. */
class HubuOutbox {
  constructor(storage, user, device) {
    this.storage = storage;
    this.key = `hubu.outbox.${user}.${device}`;
    this.last = 0; /* highest client_id used here or reported by a HELLO_OK */
    this.items = []; /* ascending client_id */
    try {
      const saved = JSON.parse(storage.getItem(this.key) || 'null');
      if (saved && Array.isArray(saved.items)) {
        this.last = hubuNum(saved.last);
        this.items = saved.items.filter((o) => o && o.clientId > 0 && typeof o.sessionId === 'string');
        this.items.sort((a, b) => a.clientId - b.clientId);
        for (const o of this.items) {
          o.sent = false;
          o.due = 0;
          if (o.clientId > this.last) this.last = o.clientId;
        }
      }
    } catch (e) {
      console.warn('hubu: outbox unreadable, starting empty', e);
    }
  }

  save() {
    const items = this.items.map((o) => ({
      clientId: o.clientId,
      localId: o.localId,
      sessionId: o.sessionId,
      body: o.body,
      contentType: o.contentType,
      clientTimeMs: o.clientTimeMs,
      verified: o.verified,
    }));
    try {
      this.storage.setItem(this.key, JSON.stringify({ last: this.last, items }));
    } catch (e) {
      console.error('hubu: outbox not saved (storage full?)', e);
    }
  }

  find(clientId) {
    return this.items.find((o) => o.clientId === clientId);
  }

  remove(o) {
    const i = this.items.indexOf(o);
    if (i >= 0) this.items.splice(i, 1);
  }
}

/* ---- the client ---- */

/* What the client knows of one session. msgs holds what the page shows:
 * everything above base that was delivered, and older history pulled. */
class HubuSession {
  constructor(id) {
    this.id = id;
    this.fresh = true; /* no window yet: the first max_seq or push places it */
    this.base = 0; /* every message above base is shown or on its way; older ones by scrolling */
    this.cursor = 0; /* highest seq delivered (or proved absent) */
    this.acked = 0; /* cursor of the last DELIVER_ACK */
    this.knownMax = 0; /* highest max_seq the server announced */
    this.held = new Map(); /* seq -> message past a hole */
    this.wake = 0; /* when the gap wait ends (0: not waiting) */
    this.pullReq = 0; /* the delivery PULL in flight */
    this.historyReq = 0; /* the history PULL in flight */
    this.msgs = new Map(); /* seq -> message */
    this.lastTime = 0; /* server time of the newest message */
  }

  /* Places the window on first sight: the newest HUBU_PAGE messages up to top. */
  place(top) {
    if (!this.fresh) return;
    this.fresh = false;
    if (this.cursor === 0 && this.held.size === 0 && top > HUBU_PAGE)
      this.base = this.cursor = this.acked = top - HUBU_PAGE;
  }
}

/* Events (callbacks in `on`): state(state, detail), messages(session, list)
 * for messages added to what a session shows, sent(item, message) when a
 * SEND is stored, failed(item, code, reason) when it is refused for good,
 * outbox() when the queue changes, sessions() when the list changes,
 * event(event), authFailed(reason) when HELLO is refused. */
class HubuClient {
  constructor({ url, user, device, token, storage, on }) {
    this.url = url;
    this.user = user;
    this.device = device;
    this.token = token;
    this.on = on || {};
    this.outbox = new HubuOutbox(storage, user, device);
    this.sessions = new Map();
    this.state = 'idle'; /* idle, connecting, ready, backoff, unauthorized, stopped */
    this.ws = null;
    this.helloSeen = false;
    this.attempt = 0;
    this.reconnectAt = 0;
    this.helloDeadline = 0;
    this.heartbeatMs = 0;
    this.lastRx = 0;
    this.lastTx = 0;
    this.nextRequest = 1;
    this.requests = new Map(); /* request_id -> {resolve, kind, session} */
    this.syncReq = 0;
    this.resyncAt = 0;
    this.timer = null;
    this.stats = { sends: 0, resends: 0, stored: 0, retried: 0, stale: 0, pushed: 0, duplicates: 0, gaps: 0, hints: 0, pulls: 0, syncs: 0, connects: 0 };
  }

  start() {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), HUBU_TICK_MS);
    this.connect();
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.setState('stopped', 'signed out');
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, 'bye');
    }
  }

  setState(state, detail) {
    this.state = state;
    this.emit('state', state, detail || '');
  }

  emit(name, ...args) {
    const f = this.on[name];
    if (f) {
      try {
        f(...args);
      } catch (e) {
        console.error(`hubu: ${name} handler failed`, e);
      }
    }
  }

  /* ---- the connection ---- */

  connect() {
    if (this.state === 'stopped') return;
    let ws;
    try {
      ws = new WebSocket(this.url, 'hubu.v1.json');
    } catch (e) {
      this.lost(`cannot connect: ${e.message}`, 0);
      return;
    }
    this.ws = ws;
    this.helloSeen = false;
    this.helloDeadline = Date.now() + HUBU_HELLO_TIMEOUT_MS;
    this.setState('connecting', this.url);
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.write('HELLO', {
        protocolVersion: 1,
        userId: this.user,
        deviceId: this.device,
        token: this.token,
        clientInfo: 'hubu-web/1',
      });
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        console.warn('hubu: a message that is not JSON', e);
        return;
      }
      this.lastRx = Date.now();
      this.onFrame(frame.type, frame.body || {});
      this.flushAcks();
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.lost(ev.reason || `closed (${ev.code})`, 0);
    };
    ws.onerror = () => {}; /* a close event follows */
  }

  /* The connection is gone: reconnect after a backoff (or the server's wish). */
  lost(reason, retryAfterMs) {
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= 1) ws.close(1000);
    for (const s of this.sessions.values()) {
      s.pullReq = 0;
      s.wake = 0;
    }
    for (const r of this.requests.values()) r.resolve({ code: 'UNAVAILABLE', reason: 'connection lost' });
    this.requests.clear();
    this.syncReq = 0;
    this.resyncAt = 0;
    if (this.state === 'stopped' || this.state === 'unauthorized') return;
    let delay;
    if (retryAfterMs > 0) {
      delay = retryAfterMs + Math.floor(Math.random() * (HUBU_BACKOFF_MIN_MS + 1));
    } else {
      const ceiling = Math.min(HUBU_BACKOFF_MAX_MS, HUBU_BACKOFF_MIN_MS * 2 ** (this.attempt + 1));
      delay = HUBU_BACKOFF_MIN_MS + Math.floor(Math.random() * (ceiling - HUBU_BACKOFF_MIN_MS + 1));
    }
    this.attempt++;
    this.reconnectAt = Date.now() + delay;
    this.setState('backoff', `${reason}; again in ${(delay / 1000).toFixed(1)} s`);
  }

  /* Reconnects now (the page calls it after a new token, or when the browser is back online). */
  reconnectNow() {
    if (this.state === 'backoff' || this.state === 'unauthorized') {
      this.state = 'backoff';
      this.reconnectAt = Date.now();
    }
  }

  write(type, body) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify({ type, body }));
    this.lastTx = Date.now();
    return true;
  }

  ready() {
    return this.state === 'ready' && this.ws && this.ws.readyState === 1;
  }

  tick() {
    const now = Date.now();
    if (this.state === 'backoff' && now >= this.reconnectAt) {
      this.connect();
      return;
    }
    if (this.state === 'connecting' && now > this.helloDeadline) {
      this.lost('no HELLO_OK in time', 0);
      return;
    }
    if (!this.ready()) return;
    if (this.heartbeatMs) {
      if (now - this.lastRx > 3 * this.heartbeatMs) {
        this.lost('server silent for 3 heartbeats', 0);
        return;
      }
      if (now - this.lastTx >= this.heartbeatMs) this.write('PING', { timeMs: String(now) });
    }
    if (this.resyncAt && now >= this.resyncAt) {
      this.resyncAt = 0;
      this.sync();
    }
    this.pump();
    for (const s of this.sessions.values()) {
      if (s.wake && s.wake <= now) {
        s.wake = 0;
        this.drain(s);
        if (!s.pullReq && (s.held.size || s.knownMax > s.cursor)) this.sendPull(s);
      }
    }
    this.flushAcks();
  }

  onFrame(type, b) {
    switch (type) {
      case 'HELLO_OK': return this.onHelloOk(b);
      case 'PING': this.write('PONG', { timeMs: b.timeMs || '0' }); return;
      case 'PONG': return;
      case 'ERROR': return this.onError(b);
      case 'GOAWAY': return this.lost(`server going away: ${b.reason || b.code}`, hubuNum(b.reconnectAfterMs));
      case 'SEND_ACK': return this.onSendAck(b);
      case 'PUSH': return this.onPush(b);
      case 'PULL_RESULT': return this.onPullResult(b);
      case 'SYNC_RESULT': return this.onSyncResult(b);
      case 'PULL_HINT': return this.onPullHint(b);
      case 'CALL_RESULT': return this.answer(b);
      case 'EVENT':
        return this.emit('event', {
          name: b.name || '',
          sender: b.sender || '',
          payload: b.payload ? hubuBase64ToText(b.payload) : '',
        });
      default:
        console.warn('hubu: unexpected frame', type);
    }
  }

  onError(b) {
    const code = b.code || 'OK';
    console.warn(`hubu: ERROR ${code}: ${b.message || ''}`);
    if (!this.helloSeen && code === 'UNAUTHENTICATED') {
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000);
      this.setState('unauthorized', b.message || 'token refused');
      this.emit('authFailed', b.message || 'token refused');
    }
  }

  onHelloOk(b) {
    this.helloSeen = true;
    this.attempt = 0;
    this.stats.connects++;
    this.heartbeatMs = hubuNum(b.heartbeatMs);
    const serverLast = hubuNum(b.lastClientId);
    const ob = this.outbox;
    if (serverLast > ob.last) ob.last = serverLast;
    /* Ids given out before the server's mark was known may collide with ones
     * an earlier run of this device used: those move above the mark. */
    const unverified = ob.items.filter((o) => !o.verified);
    for (const o of unverified) {
      if (o.clientId <= serverLast) this.renumber(o);
      else o.verified = true;
    }
    ob.save();
    for (const o of ob.items) o.due = 0; /* every unanswered SEND again, on this connection */
    this.setState('ready', b.server || '');
    this.pump();
    this.sync();
    for (const s of this.sessions.values()) this.wantPull(s);
  }

  /* ---- sending ---- */

  /* Queues a text message; returns its outbox item (sent at once when connected). */
  send(sessionId, text) {
    const ob = this.outbox;
    const id = ob.last + 1;
    const o = {
      clientId: id,
      localId: `${this.device}.${id}`, /* stays when the client_id changes */
      sessionId,
      body: hubuUtf8ToBase64(text),
      contentType: 'text/plain',
      clientTimeMs: Date.now(),
      verified: this.helloSeen,
      sent: false,
      due: 0,
    };
    ob.last = id;
    ob.items.push(o);
    ob.save(); /* durable before it leaves */
    this.emit('outbox');
    this.pump();
    return o;
  }

  /* Sends what is due: per session the oldest queued message only, so a
   * refused one that is retried (RATE_LIMITED, UNAVAILABLE, ...) is never
   * overtaken by a later one of its chat; chats go side by side. An
   * unanswered SEND is sent again after HUBU_SEND_TIMEOUT_MS. */
  pump() {
    if (!this.ready()) return;
    const now = Date.now();
    const heads = new Set();
    for (const o of this.outbox.items) {
      if (heads.has(o.sessionId)) continue;
      heads.add(o.sessionId);
      if (o.due <= now) this.sendEntry(o);
    }
  }

  sendEntry(o) {
    const body = { clientId: String(o.clientId), sessionId: o.sessionId, body: o.body, contentType: o.contentType };
    if (o.clientTimeMs) body.clientTimeMs = String(o.clientTimeMs);
    if (!this.write('SEND', body)) return;
    this.stats.sends++;
    if (o.sent) this.stats.resends++;
    o.sent = true;
    o.due = Date.now() + HUBU_SEND_TIMEOUT_MS;
  }

  /* Moves o to a fresh client_id at the end of the queue, and the later
   * messages of its chat (none sent yet but refused) after it, in order. */
  renumber(o) {
    const ob = this.outbox;
    const moved = ob.items.filter((p) => p === o || (p.sessionId === o.sessionId && p.clientId > o.clientId));
    ob.items = ob.items.filter((p) => !moved.includes(p));
    for (const p of moved) {
      p.clientId = ++ob.last;
      p.verified = true;
      p.due = 0;
      ob.items.push(p);
    }
    ob.save();
  }

  onSendAck(a) {
    const ob = this.outbox;
    const o = ob.find(hubuNum(a.clientId));
    if (!o) return; /* a second answer to a retry, or to a message renumbered since */
    const code = a.code || 'OK';
    const now = Date.now();
    switch (code) {
      case 'OK': {
        ob.remove(o);
        ob.save();
        this.stats.stored++;
        const msg = {
          sessionId: a.sessionId || o.sessionId,
          seq: hubuNum(a.seq),
          msgId: a.msgId || '0',
          sender: this.user,
          senderDevice: this.device,
          clientId: o.clientId,
          body: o.body,
          contentType: o.contentType,
          serverTimeMs: hubuNum(a.serverTimeMs),
          localId: o.localId,
        };
        const s = this.session(msg.sessionId);
        s.place(msg.seq);
        /* The sender's own message is never pushed back to this connection. */
        const added = this.show(s, [msg]);
        if (msg.seq === s.cursor + 1) {
          s.cursor = msg.seq;
          this.drain(s);
        } else if (msg.seq > s.cursor) {
          s.held.set(msg.seq, msg);
          this.wantPull(s);
        }
        this.emit('sent', o, msg);
        this.emit('messages', s, added);
        this.emit('outbox');
        this.pump();
        return;
      }
      case 'STALE': /* never stored: the same content under a new id */
        this.stats.stale++;
        this.renumber(o);
        this.pump();
        return;
      /* Nothing stored, nothing used up: the same SEND later, its chat's later ones after it. */
      case 'RATE_LIMITED':
      case 'UNAVAILABLE':
      case 'INTERNAL':
      case 'TIMEOUT':
      case 'SHUTTING_DOWN': {
        const wait = Math.max(hubuNum(a.retryAfterMs), code === 'RATE_LIMITED' ? 200 : HUBU_RETRY_MIN_MS);
        this.stats.retried++;
        o.due = now + wait;
        return;
      }
      default:
        ob.remove(o);
        ob.save();
        this.emit('failed', o, code, a.reason || code);
        this.emit('outbox');
        this.pump();
    }
  }

  /* ---- receiving ---- */

  session(id) {
    let s = this.sessions.get(id);
    if (!s) {
      s = new HubuSession(id);
      this.sessions.set(id, s);
      this.emit('sessions');
    }
    return s;
  }

  /* Adds msgs to what s shows; returns the ones it did not show yet. */
  show(s, msgs) {
    const added = [];
    for (const m of msgs) {
      if (s.msgs.has(m.seq)) continue;
      s.msgs.set(m.seq, m);
      if (m.serverTimeMs > s.lastTime) s.lastTime = m.serverTimeMs;
      added.push(m);
    }
    return added;
  }

  deliver(s, m, added) {
    s.cursor = m.seq;
    for (const x of this.show(s, [m])) added.push(x);
  }

  /* Delivers held messages the cursor now reaches. */
  drain(s, added) {
    const out = added || [];
    for (;;) {
      const next = this.heldFirst(s);
      if (next === undefined || next > s.cursor + 1) break;
      const m = s.held.get(next);
      s.held.delete(next);
      if (next <= s.cursor) this.stats.duplicates++;
      else this.deliver(s, m, out);
    }
    if (!added && out.length) this.emit('messages', s, out);
  }

  /* Delivers held messages below limit (they exist: the server sent them). */
  drainBelow(s, limit, added) {
    for (;;) {
      const next = this.heldFirst(s);
      if (next === undefined || next >= limit) break;
      const m = s.held.get(next);
      s.held.delete(next);
      if (next <= s.cursor) this.stats.duplicates++;
      else this.deliver(s, m, added);
    }
  }

  heldFirst(s) {
    let min;
    for (const k of s.held.keys()) if (min === undefined || k < min) min = k;
    return min;
  }

  message(m) {
    return {
      sessionId: m.sessionId || '',
      seq: hubuNum(m.seq),
      msgId: m.msgId || '0',
      sender: m.sender || '',
      senderDevice: m.senderDevice || '',
      clientId: hubuNum(m.clientId),
      body: m.body || '',
      contentType: m.contentType || '',
      serverTimeMs: hubuNum(m.serverTimeMs),
    };
  }

  onPush(p) {
    const bySession = new Map();
    for (const raw of p.messages || []) {
      const m = this.message(raw);
      this.stats.pushed++;
      if (!m.sessionId || !m.seq) continue;
      const s = this.session(m.sessionId);
      s.place(m.seq);
      if (!bySession.has(s)) bySession.set(s, []);
      const added = bySession.get(s);
      if (m.seq <= s.cursor) {
        this.stats.duplicates++; /* a retransmission, or already pulled */
      } else if (m.seq === s.cursor + 1) {
        this.deliver(s, m, added);
        this.drain(s, added);
      } else if (!s.held.has(m.seq)) {
        this.stats.gaps++;
        s.held.set(m.seq, m);
      }
      this.wantPull(s);
    }
    for (const [s, added] of bySession) if (added.length) this.emit('messages', s, added);
  }

  onPullHint(h) {
    this.stats.hints++;
    if (!h.sessionId) return;
    const s = this.session(h.sessionId);
    const max = hubuNum(h.maxSeq);
    s.place(max);
    if (max > s.knownMax) s.knownMax = max;
    this.wantPull(s);
  }

  /* What s needs now: a PULL (the server announced more), a gap wait, or nothing. */
  wantPull(s) {
    if (s.pullReq || !this.ready()) return;
    if (s.knownMax > s.cursor) {
      this.sendPull(s);
    } else if (s.held.size && !s.wake) {
      s.wake = Date.now() + HUBU_GAP_WAIT_MS;
    }
  }

  sendPull(s) {
    const id = this.nextRequest++;
    if (!this.write('PULL', { requestId: String(id), sessionId: s.id, afterSeq: String(s.cursor), limit: HUBU_PULL_LIMIT }))
      return;
    this.stats.pulls++;
    s.pullReq = id;
    s.pullAfter = s.cursor;
    s.wake = 0;
    this.requests.set(id, { kind: 'delivery', session: s, resolve: () => {} });
  }

  onPullResult(r) {
    const id = hubuNum(r.requestId);
    const req = this.requests.get(id);
    if (!req) return;
    this.requests.delete(id);
    if (req.kind === 'history') return req.resolve(r);
    const s = req.session;
    if (s.pullReq !== id) return;
    s.pullReq = 0;
    const code = r.code || 'OK';
    const msgs = (r.messages || []).map((m) => this.message(m));
    if (code !== 'OK' || (r.hasMore && msgs.length === 0)) {
      if (code === 'FORBIDDEN' || code === 'INVALID' || code === 'NOT_FOUND') s.knownMax = s.cursor;
      else s.wake = Date.now() + HUBU_GAP_WAIT_MS;
      return;
    }
    if (s.cursor < s.pullAfter) return this.wantPull(s);
    const added = [];
    /* Seqs between after_seq and a returned message, or between two returned ones, do not exist. */
    for (const m of msgs) {
      if (m.sessionId !== s.id) continue;
      this.drainBelow(s, m.seq, added);
      if (m.seq <= s.cursor) {
        this.stats.duplicates++;
        continue;
      }
      this.deliver(s, m, added);
    }
    const max = hubuNum(r.maxSeq);
    if (max > s.knownMax) s.knownMax = max;
    if (!r.hasMore && max > s.cursor) { /* the tail of the window is a hole */
      this.drainBelow(s, max + 1, added);
      if (max > s.cursor) s.cursor = max;
    }
    this.drain(s, added);
    if (added.length) this.emit('messages', s, added);
    this.wantPull(s);
  }

  /* SYNC with the cursors this page holds: the answer lists every session with more. */
  sync() {
    if (!this.ready()) return;
    const known = [];
    for (const s of this.sessions.values()) if (s.cursor > 0) known.push({ sessionId: s.id, seq: String(s.cursor) });
    const id = this.nextRequest++;
    if (this.write('SYNC', { requestId: String(id), known })) {
      this.syncReq = id;
      this.stats.syncs++;
    }
  }

  onSyncResult(r) {
    const id = hubuNum(r.requestId);
    if (id !== this.syncReq) return;
    this.syncReq = 0;
    if ((r.code || 'OK') !== 'OK') {
      this.resyncAt = Date.now() + 1000;
      return;
    }
    for (const st of r.sessions || []) {
      if (!st.sessionId) continue;
      const s = this.session(st.sessionId);
      const max = hubuNum(st.maxSeq);
      s.place(max);
      if (max > s.knownMax) s.knownMax = max;
      this.wantPull(s);
    }
    this.emit('sessions');
  }

  /* Cumulative DELIVER_ACK of every session whose cursor moved. */
  flushAcks() {
    if (!this.ready()) return;
    const cursors = [];
    for (const s of this.sessions.values()) {
      if (s.cursor > s.acked) {
        cursors.push({ sessionId: s.id, seq: String(s.cursor) });
        s.acked = s.cursor;
      }
    }
    if (cursors.length) this.write('DELIVER_ACK', { cursors });
  }

  /* ---- requests ---- */

  answer(b) {
    const id = hubuNum(b.requestId);
    const req = this.requests.get(id);
    if (!req) return;
    this.requests.delete(id);
    req.resolve(b);
  }

  request(type, body, kind) {
    if (!this.ready()) return Promise.resolve({ code: 'UNAVAILABLE', reason: 'not connected' });
    const id = this.nextRequest++;
    return new Promise((resolve) => {
      this.requests.set(id, { kind, resolve });
      this.write(type, Object.assign({ requestId: String(id) }, body));
    });
  }

  /* A CALL with a JSON payload; resolves to {code, reason, result}. */
  async call(method, payload) {
    const r = await this.request('CALL', { method, payload: hubuUtf8ToBase64(JSON.stringify(payload)) }, 'call');
    let result = null;
    try {
      result = r.payload ? JSON.parse(hubuBase64ToText(r.payload)) : null;
    } catch (e) {
      result = null;
    }
    return { code: r.code || 'OK', reason: r.reason || '', result };
  }

  /* Pulls the HUBU_PAGE messages before what s shows. Resolves to the code. */
  async loadOlder(s) {
    if (s.base === 0 || s.historyReq) return 'OK';
    const after = Math.max(0, s.base - HUBU_PAGE);
    s.historyReq = 1;
    const r = await this.request('PULL', { sessionId: s.id, afterSeq: String(after), limit: s.base - after }, 'history');
    s.historyReq = 0;
    const code = r.code || 'OK';
    if (code !== 'OK') return code;
    const older = (r.messages || []).map((m) => this.message(m)).filter((m) => m.seq <= s.base && m.sessionId === s.id);
    s.base = after;
    this.emit('messages', s, this.show(s, older));
    return code;
  }
}
