/* app.js — the chat page: sign-in, the session list, one open chat with its
 * history and composer, drawn from the HubuClient of hubu.js. The sign-in
 * (user, token) lives in sessionStorage, so a reload comes back signed in
 * to the same chat; the device and the outbox live in localStorage. The
 * page's state is window.hubuApp (the browser test reads it). */
'use strict';

const $ = (id) => document.getElementById(id);

const app = {
  client: null,
  user: '',
  dev: false, /* signed in through /v1/dev/token: a refused token is renewed there */
  renewed: false,
  open: '', /* the session shown */
  unread: new Map(), /* session -> messages from others not seen yet */
  failed: new Map(), /* localId -> {item, reason}: refused sends, shown in their chat */
  renderTimer: 0,
  keepTop: null, /* {height, top} while older history is being prepended */
};
window.hubuApp = app;

/* ---- sign-in ---- */

async function devToken(user) {
  const r = await fetch('/v1/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ userId: user }),
  });
  if (r.status === 404) throw new Error('This server has no dev sign-in: paste a token from `hubuctl token USER`.');
  if (!r.ok) throw new Error(`Dev sign-in failed: HTTP ${r.status}.`);
  const j = await r.json();
  if (!j.token) throw new Error('Dev sign-in answered without a token.');
  return j.token;
}

async function signIn(name) {
  name = name.trim();
  let user;
  let token;
  let dev = false;
  if (name.startsWith('v1.')) {
    user = hubuTokenUser(name);
    token = name;
    if (!HUBU_ID_RE.test(user)) throw new Error('That is not a HubuIM token.');
  } else {
    if (!HUBU_ID_RE.test(name)) throw new Error('A user name is 1-64 of A-Z a-z 0-9 _ . @ -');
    user = name;
    token = await devToken(name);
    dev = true;
  }
  sessionStorage.setItem('hubu.signin', JSON.stringify({ user, token, dev }));
  await enter(user, token, dev);
}

async function enter(user, token, dev) {
  app.user = user;
  app.dev = dev;
  const device = await hubuClaimDevice(localStorage);
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  app.client = new HubuClient({
    url: `${scheme}://${location.host}/ws`,
    user,
    device,
    token,
    storage: localStorage,
    on: {
      state: showState,
      messages: onMessages,
      sent: () => scheduleRender(),
      failed: onFailed,
      outbox: () => scheduleRender(),
      sessions: () => {
        rememberSessions();
        renderSessions();
      },
      event: (e) => notice(`${e.sender || 'server'}: ${e.name}${e.payload ? ' ' + e.payload : ''}`),
      authFailed: onAuthFailed,
    },
  });
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me').textContent = user;
  $('me').title = `device ${device}`;
  /* the chats known from earlier visits and those with queued messages, listed before the first SYNC */
  for (const id of knownSessions()) app.client.session(id);
  for (const o of app.client.outbox.items) app.client.session(o.sessionId);
  const open = sessionStorage.getItem('hubu.open');
  if (open) openSession(open);
  renderSessions();
  app.client.start();
}

function knownSessions() {
  try {
    const ids = JSON.parse(localStorage.getItem(`hubu.sessions.${app.user}`) || '[]');
    return Array.isArray(ids) ? ids.filter((id) => typeof id === 'string') : [];
  } catch (e) {
    return [];
  }
}

function rememberSessions() {
  if (!app.client) return;
  localStorage.setItem(`hubu.sessions.${app.user}`, JSON.stringify([...app.client.sessions.keys()]));
}

async function onAuthFailed(reason) {
  const saved = JSON.parse(sessionStorage.getItem('hubu.signin') || 'null');
  if (app.dev && !app.renewed && saved) {
    app.renewed = true; /* once per refusal: an expired token, or a server restarted with another secret */
    try {
      saved.token = await devToken(app.user);
      sessionStorage.setItem('hubu.signin', JSON.stringify(saved));
      app.client.token = saved.token;
      app.client.reconnectNow();
      return;
    } catch (e) {
      reason = e.message;
    }
  }
  signOut(`Signed out: ${reason}`);
}

function signOut(why) {
  if (app.client) app.client.stop();
  app.client = null;
  app.open = '';
  app.unread.clear();
  app.failed.clear();
  sessionStorage.removeItem('hubu.signin');
  sessionStorage.removeItem('hubu.open');
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = why || '';
  $('sessions').textContent = '';
  $('list').textContent = '';
}

/* ---- names ---- */

function sessionTitle(id) {
  if (id.startsWith('d:')) {
    const [, a, b] = id.split(':');
    if (a === app.user) return b;
    if (b === app.user) return a;
    return id;
  }
  if (id.startsWith('g:')) return '# ' + id.slice(2);
  return id;
}

function formatTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const now = new Date();
  const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toDateString() === now.toDateString() ? hm : `${d.toLocaleDateString()} ${hm}`;
}

function messageText(m) {
  if (!m.contentType || m.contentType.startsWith('text/')) return hubuBase64ToText(m.body);
  return `[${m.contentType}, ${hubuBase64ToBytes(m.body).length} bytes]`;
}

function notice(text) {
  const n = $('notice');
  n.textContent = text;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => (n.textContent = ''), 8000);
}

/* ---- the connection ---- */

function showState(state, detail) {
  const el = $('status');
  el.dataset.state = state;
  const words = { idle: 'offline', connecting: 'connecting…', ready: 'online', backoff: 'offline', stopped: 'offline', unauthorized: 'refused' };
  el.textContent = words[state] || state;
  el.title = detail || state;
  if (state === 'ready') {
    app.renewed = false; /* a dev token that expires later is renewed again */
    scheduleRender();
  }
}

/* ---- incoming ---- */

function onMessages(s, added) {
  if (!added.length) return;
  if (s.id !== app.open || document.hidden) {
    const fromOthers = added.filter((m) => m.sender !== app.user && m.seq > s.base).length;
    if (fromOthers) app.unread.set(s.id, (app.unread.get(s.id) || 0) + fromOthers);
  }
  renderSessions();
  if (s.id === app.open) scheduleRender();
}

function onFailed(item, code, reason) {
  app.failed.set(item.localId, { item, reason: `${code}: ${reason}` });
  notice(`Not sent to ${sessionTitle(item.sessionId)}: ${reason}`);
  scheduleRender();
}

/* ---- the session list ---- */

function renderSessions() {
  const c = app.client;
  if (!c) return;
  const list = [...c.sessions.values()].sort((a, b) => b.lastTime - a.lastTime || (a.id < b.id ? -1 : 1));
  const ul = $('sessions');
  ul.textContent = '';
  for (const s of list) {
    const li = document.createElement('li');
    li.dataset.session = s.id;
    if (s.id === app.open) li.classList.add('open');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = sessionTitle(s.id);
    li.append(name);
    const last = s.msgs.get(Math.max(0, ...s.msgs.keys()));
    const preview = document.createElement('span');
    preview.className = 'preview';
    preview.textContent = last ? `${last.sender === app.user ? 'you' : last.sender}: ${messageText(last)}` : s.id;
    li.append(preview);
    const n = app.unread.get(s.id) || 0;
    if (n) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = n > 99 ? '99+' : String(n);
      li.append(badge);
    }
    li.onclick = () => openSession(s.id);
    ul.append(li);
  }
}

function openSession(id) {
  if (!app.client) return;
  app.open = id;
  sessionStorage.setItem('hubu.open', id);
  app.client.session(id);
  app.unread.delete(id);
  $('chat-title').textContent = sessionTitle(id);
  $('chat-id').textContent = id;
  $('text').disabled = false;
  $('send').disabled = false;
  $('list').textContent = '';
  renderSessions();
  render(true);
  $('text').focus();
}

/* ---- the open chat ---- */

function scheduleRender() {
  if (app.renderTimer) return;
  app.renderTimer = setTimeout(() => {
    app.renderTimer = 0;
    render(false);
  }, 20);
}

function messageItem(m, mine, cls) {
  const li = document.createElement('li');
  li.className = `msg ${mine ? 'mine' : 'theirs'} ${cls}`;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${mine ? 'you' : m.sender} · ${formatTime(m.serverTimeMs || m.clientTimeMs)}`;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = messageText(m);
  li.append(meta, text);
  return li;
}

/* Redraws the open chat: stored messages in seq order, then this device's
 * queued ones in client_id order, then refused ones. Stays at the bottom when
 * it was there; keeps the view still when older history comes in above. */
function render(toBottom) {
  const c = app.client;
  if (!c || !app.open) return;
  const s = c.session(app.open);
  const box = $('messages');
  const atBottom = toBottom || box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  const ol = $('list');
  const items = [];
  for (const seq of [...s.msgs.keys()].sort((a, b) => a - b)) {
    const m = s.msgs.get(seq);
    const li = messageItem(m, m.sender === app.user, 'stored');
    li.dataset.seq = String(seq);
    li.title = `seq ${seq} · ${m.senderDevice || ''}`;
    items.push(li);
  }
  for (const o of c.outbox.items) {
    if (o.sessionId !== s.id) continue;
    const li = messageItem(o, true, 'pending');
    li.dataset.localId = o.localId;
    li.title = `sending (client_id ${o.clientId})`;
    items.push(li);
  }
  for (const { item, reason } of app.failed.values()) {
    if (item.sessionId !== s.id) continue;
    const li = messageItem(item, true, 'failed');
    li.title = reason;
    items.push(li);
  }
  ol.replaceChildren(...items);
  const h = $('history');
  h.dataset.more = s.base > 0 ? '1' : '0';
  h.textContent = s.historyReq ? 'Loading…' : s.base > 0 ? 'Scroll up for older messages' : 'Beginning of the conversation';
  if (app.keepTop) {
    box.scrollTop = box.scrollHeight - app.keepTop.height + app.keepTop.top;
    app.keepTop = null;
  } else if (atBottom) {
    box.scrollTop = box.scrollHeight;
  }
  if (s.base > 0 && box.scrollHeight <= box.clientHeight) loadOlder(); /* nothing to scroll yet */
}

async function loadOlder() {
  const c = app.client;
  if (!c || !app.open) return;
  const s = c.session(app.open);
  if (s.base === 0 || s.historyReq || !c.ready()) return;
  const box = $('messages');
  $('history').textContent = 'Loading…';
  const code = await c.loadOlder(s);
  if (code !== 'OK') notice(`History: ${code}`);
  if (c !== app.client || s.id !== app.open) return;
  app.keepTop = { height: box.scrollHeight, top: box.scrollTop };
  render(false);
}

/* ---- the forms ---- */

function onSubmitText(ev) {
  ev.preventDefault();
  const t = $('text');
  const text = t.value.trim();
  if (!text || !app.client || !app.open) return;
  app.client.send(app.open, text);
  t.value = '';
  render(true);
}

async function callGroup(method, payload) {
  const r = await app.client.call(method, payload);
  if (r.code !== 'OK') {
    notice(`${method}: ${r.code}${r.reason ? ' (' + r.reason + ')' : ''}`);
    return false;
  }
  return true;
}

function groupId() {
  let g = $('group').value.trim();
  if (!g.startsWith('g:')) g = 'g:' + g;
  return g;
}

function bind() {
  $('signin-form').onsubmit = async (ev) => {
    ev.preventDefault();
    $('signin-error').textContent = '';
    $('signin-go').disabled = true;
    try {
      await signIn($('signin-name').value);
    } catch (e) {
      $('signin-error').textContent = e.message;
    } finally {
      $('signin-go').disabled = false;
    }
  };
  $('signout').onclick = () => signOut('');
  $('new-direct').onsubmit = (ev) => {
    ev.preventDefault();
    const peer = $('peer').value.trim();
    if (!HUBU_ID_RE.test(peer)) return notice('A user name is 1-64 of A-Z a-z 0-9 _ . @ -');
    $('peer').value = '';
    openSession(hubuDirectSession(app.user, peer));
  };
  $('new-group').onsubmit = async (ev) => {
    ev.preventDefault();
    const g = groupId();
    const members = $('group-members').value.split(/[\s,]+/).filter(Boolean);
    if (await callGroup('group.create', { group: g, members })) {
      $('group').value = $('group-members').value = '';
      openSession(g);
      notice(`Created ${g}`);
    }
  };
  $('group-join').onclick = async () => {
    const g = groupId();
    if (await callGroup('group.join', { group: g })) {
      $('group').value = '';
      openSession(g);
      app.client.sync(); /* its history, if it has any */
    }
  };
  $('composer').onsubmit = onSubmitText;
  $('text').onkeydown = (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) onSubmitText(ev);
  };
  $('messages').addEventListener('scroll', () => {
    if ($('messages').scrollTop < 40) loadOlder();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && app.open) {
      app.unread.delete(app.open);
      renderSessions();
    }
  });
  window.addEventListener('online', () => app.client && app.client.reconnectNow());
}

bind();
const saved = JSON.parse(sessionStorage.getItem('hubu.signin') || 'null');
if (saved && saved.user && saved.token) {
  enter(saved.user, saved.token, !!saved.dev);
} else {
  $('signin').hidden = false;
}
