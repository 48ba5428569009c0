/*
 * SwiftChat web client.
 *
 * Speaks the SwiftChat wire protocol v1 over `ws(s)://<this host>/ws`:
 * IDENTIFY (op 5) to log in, MESSAGE_CREATE (op 1) for messages and
 * commands, CACHE_REQUEST (op 6) to refresh the room list; it renders
 * MESSAGE (0), ROOM_STATE (2), SHUTDOWN (3), CACHE_UPDATE (4), NOTICE (7) and
 * HISTORY (9), which it asks for with HISTORY_REQUEST (8).
 *
 * Safety: every string that comes from the network is put into the page with
 * textContent / createTextNode only, never as HTML.
 *
 * Who is in the room: after every change of room the client asks the server
 * with the users command (answered by an `info` notice, which is parsed and
 * not shown), then keeps the list current with the `joined` / `left` notices.
 * The count in the room list always comes from CACHE_UPDATE, which the client
 * refreshes (op 6) after presence changes and every 30 s.
 *
 * Reconnect: after an unexpected drop, or a SHUTDOWN saying `reconnect: true`
 * (first attempt after a random 0.5–5 s), with exponential backoff and jitter;
 * never after close codes 1008, 1009, 4003, nor after SHUTDOWN with
 * `reconnect: false`; at least 5 s after 4008. A reconnect logs in again with
 * the same name, token and room (and the room's password if the user gave one).
 *
 * History: after a login or a change of room the client asks for the room's
 * latest messages and shows them under an "Earlier messages" divider, muted;
 * live messages of the room that arrive meanwhile are held back and shown
 * after them. It keeps its position in the room (epoch and last seq); after a
 * reconnect into the same room it asks with `after` and `epoch`, pages until
 * the room's `last_seq`, then shows the held-back live messages: each message
 * appears once (lines are keyed by room, epoch and seq). A live message whose
 * seq skips some does the same. When history cannot fill a gap, a line says
 * "Some messages could not be recovered." Scrolling to the top (or the
 * "Show earlier messages" button) asks for the messages `before` the oldest
 * one shown.
 */
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const OP = {
    MESSAGE: 0, MESSAGE_CREATE: 1, ROOM_STATE: 2, SHUTDOWN: 3,
    CACHE_UPDATE: 4, IDENTIFY: 5, CACHE_REQUEST: 6, NOTICE: 7,
    HISTORY_REQUEST: 8, HISTORY: 9,
  };
  const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const ROOM_RE = /^[A-Za-z0-9_-]{1,32}$/;
  const NO_RECONNECT = new Set([1008, 1009, 4003]);
  const CLOSE_TEXT = {
    1001: 'The server went away.',
    1006: 'The connection was lost.',
    1008: 'The server closed the connection: too many invalid messages.',
    1009: 'The server closed the connection: a message was too large.',
    1011: 'The server stopped hearing from this client.',
    4001: 'Login took too long.',
    4003: 'Too many failed login attempts.',
    4008: 'You were disconnected for sending too fast.',
    4009: 'The connection could not keep up.',
  };
  const MAX_CONTENT = 2000;
  const MAX_ITEMS = 600;
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const HISTORY_PAGE = 50;            // messages shown on join, and per "earlier" page
  const HISTORY_TIMEOUT_MS = 10000;   // a HISTORY answer later than this is given up on
  const MAX_HELD_BACK = 1000;         // live messages held while history loads; more come from history
  const MAX_QUEUED_REQUESTS = 8;
  const COMMANDS = [
    { name: 'help', args: '', desc: 'List the commands' },
    { name: 'join', args: 'ROOM [PASSWORD]', desc: 'Move to a room (created if new)' },
    { name: 'switch', args: 'ROOM [PASSWORD]', desc: 'Same as join' },
    { name: 'leave', args: '', desc: 'Back to the default room' },
    { name: 'rooms', args: '', desc: 'List rooms with state and users' },
    { name: 'users', args: '', desc: 'List the users in this room' },
    { name: 'lock', args: 'PASSWORD', desc: 'Lock this room', who: 'owner' },
    { name: 'unlock', args: '', desc: 'Unlock this room', who: 'owner' },
    { name: 'close', args: '', desc: 'Close this room, moving everyone out', who: 'owner' },
    { name: 'open', args: 'ROOM', desc: 'Reopen a closed room', who: 'owner' },
    { name: 'delete', args: '', desc: 'Delete this room', who: 'owner' },
    { name: 'kick', args: 'USER', desc: 'Move a user out of this room', who: 'owner' },
    { name: 'ban', args: 'USER', desc: 'Remove a user and keep them out', who: 'owner' },
    { name: 'unban', args: 'USER', desc: 'Lift a ban', who: 'owner' },
    { name: 'shutdown', args: '[REASON]', desc: 'Shut the whole cluster down', who: 'admin' },
  ];
  const STORE_KEY = 'swiftchat.session';
  const NAME_KEY = 'swiftchat.name';

  // -------------------------------------------------------------------- state
  const state = {
    ws: null,
    phase: 'login',          // login | connecting | online | reconnecting | offline
    everOnline: false,       // logged in at least once since the form was submitted
    auto: false,             // logging in by itself (restore / reconnect), not from the form
    loggedIn: false,
    name: '', token: '', room: '',
    passwords: {},           // room -> password the user typed for it
    me: null,                // {name, room} from the last CACHE_UPDATE
    prefix: '\\',
    rooms: [],
    banned: new Set(),
    usersTotal: 0,
    members: new Set(),
    membersKnown: false,
    shutdown: null,          // SHUTDOWN payload seen on the current socket
    attempts: 0,
    reconnectAt: 0,
    reconnectTimer: 0,
    countdownTimer: 0,
    loginFailures: 0,
    loginRetryTimer: 0,
    fallbackRoom: null,      // room to \join after a login that had to skip it
    pos: null,               // {room, epoch, seq}: the last message shown of the current room
    sync: null,              // {room, kind: 'join'|'resume', held: [], missed, complete, first}
    inflight: null,          // the HISTORY_REQUEST awaiting its answer: {room, kind, d, timer}
    hqueue: [],              // history requests waiting behind it
    oldestSeq: null,         // smallest seq shown of the current room (for "earlier")
    earlierAnchor: null,     // the "Earlier messages" divider: older pages go right after it
    loadOlderItem: null,     // the "Show earlier messages" button's line
    pendingUsers: 0,         // silent users queries awaiting their answer
    userAskedUsers: false,
    expectMove: 0,           // time the user last asked to move
    pendingJoin: null,       // {room, password, fromUi}: a join the user asked for
    lastRoomEvent: { room: null, reason: null, at: 0 },
    prevRoom: null,
    cacheTimer: 0,
    pollTimer: 0,
    history: [], historyPos: -1, draft: '',
    popupIndex: 0,
    leaving: false,
  };

  // ---------------------------------------------------------------- DOM utils
  const $ = (id) => document.getElementById(id);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  /** Creates an element; string children become text nodes (never HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = v;
        else if (k === 'style') node.style.cssText = v;
        else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) append(node, c);
    return node;
  }
  function append(node, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) c.forEach((x) => append(node, x));
    else if (c instanceof Node) node.appendChild(c);
    else node.appendChild(document.createTextNode(String(c)));
  }
  function icon(name, cls) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('aria-hidden', 'true');
    if (cls) svg.setAttribute('class', cls);
    const use = document.createElementNS(SVG_NS, 'use');
    use.setAttribute('href', '#i-' + name);
    svg.appendChild(use);
    return svg;
  }
  const str = (v) => (v === null || v === undefined ? '' : String(v));

  function hue(name) {
    let h = 0;
    for (const ch of name.toLowerCase()) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return h % 360;
  }
  function avatar(name, cls) {
    const a = el('span', { class: 'avatar' + (cls ? ' ' + cls : ''), 'aria-hidden': 'true' });
    const clean = name.replace(/[^A-Za-z0-9]/g, '');
    a.textContent = (clean || name || '?').slice(0, 2);
    a.style.setProperty('--avatar', `hsl(${hue(name)} 55% 46%)`);
    return a;
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  function fmtTime(ts) {
    const d = new Date(Number(ts));
    if (!Number.isFinite(d.getTime())) return { short: '', full: '' };
    return { short: timeFmt.format(d), full: fullFmt.format(d) };
  }

  /** Text with http(s) links made clickable; built from text nodes only. */
  function linkify(text) {
    const frag = document.createDocumentFragment();
    const re = /\bhttps?:\/\/[^\s<>"']+/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      let url = m[0].replace(/[).,;:!?]+$/, '');
      frag.appendChild(document.createTextNode(text.slice(last, m.index)));
      let ok = false;
      try { ok = ['http:', 'https:'].includes(new URL(url).protocol); } catch (_) { ok = false; }
      if (ok) {
        const a = el('a', { href: url, target: '_blank', rel: 'noopener noreferrer nofollow' });
        a.textContent = url;
        frag.appendChild(a);
      } else {
        frag.appendChild(document.createTextNode(url));
      }
      last = m.index + url.length;
      re.lastIndex = last;
    }
    frag.appendChild(document.createTextNode(text.slice(last)));
    return frag;
  }

  // ------------------------------------------------------------- persistence
  function saveSession() {
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify({
        name: state.name, token: state.token, room: state.room, passwords: state.passwords,
      }));
      localStorage.setItem(NAME_KEY, state.name);
    } catch (_) { /* storage may be disabled */ }
  }
  function loadSession() {
    try {
      const s = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
      if (s && typeof s.name === 'string' && NAME_RE.test(s.name)) return s;
    } catch (_) { /* ignore */ }
    return null;
  }
  function clearSession() {
    try { sessionStorage.removeItem(STORE_KEY); } catch (_) { /* ignore */ }
  }

  // --------------------------------------------------------------- transport
  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  }

  function send(op, d) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify({ op, d }));
    return true;
  }
  const sendContent = (content, room) =>
    send(OP.MESSAGE_CREATE, room ? { content, room } : { content });
  const command = (text) => sendContent(state.prefix + text);

  function connect() {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    clearTimeout(state.loginRetryTimer);
    if (state.ws) {
      const old = state.ws;
      state.ws = null;
      try { old.close(1000); } catch (_) { /* ignore */ }
    }
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      onClose(1006);
      return;
    }
    state.ws = ws;
    state.shutdown = null;
    state.loggedIn = false;
    state.loginFailures = 0;
    state.pendingUsers = 0;
    setPhase(state.everOnline ? 'reconnecting' : 'connecting');
    ws.onopen = () => { if (ws === state.ws) identify(state.room); };
    ws.onmessage = (ev) => {
      if (ws !== state.ws || typeof ev.data !== 'string') return;
      let p;
      try { p = JSON.parse(ev.data); } catch (_) { return; }
      if (!p || typeof p !== 'object' || !Number.isInteger(p.op)) return;
      const d = p.d && typeof p.d === 'object' ? p.d : {};
      try { dispatch(p.op, d); } catch (e) { console.error('SwiftChat: cannot handle', p, e); }
    };
    ws.onclose = (ev) => { if (ws === state.ws) onClose(ev.code, ev.reason); };
    ws.onerror = () => { /* a close event follows */ };
  }

  function identify(room) {
    const r = room && ROOM_RE.test(room) ? room.toLowerCase() : null;
    send(OP.IDENTIFY, {
      name: state.name,
      token: state.token || null,
      room: r,
      password: r && state.passwords[r] ? state.passwords[r] : null,
    });
    state.identifyRoom = r;
  }

  function dispatch(op, d) {
    switch (op) {
      case OP.MESSAGE: onMessage(d); break;
      case OP.ROOM_STATE: onRoomState(d); break;
      case OP.SHUTDOWN: onShutdown(d); break;
      case OP.CACHE_UPDATE: onCacheUpdate(d); break;
      case OP.NOTICE: onNotice(d); break;
      case OP.HISTORY: onHistory(d); break;
      default: break; // unknown ops are ignored, as the protocol allows new ones
    }
  }

  function onClose(code, reason) {
    state.ws = null;
    const wasLoggedIn = state.loggedIn;
    state.loggedIn = false;
    cancelHistory(); // state.pos stays: the next login into the room resumes from it
    clearTimeout(state.loginRetryTimer);
    stopPolling();
    if (state.leaving) return;

    // A login that never got in: report on the form.
    if (!state.everOnline) {
      const text = code === 4003
        ? 'Too many failed attempts. Wait a moment and try again.'
        : 'Cannot reach the chat server. Check your connection and try again.';
      if (state.auto) { backToLogin(text); return; } // restoring after a reload
      showLoginError(text);
      setLoginBusy(false);
      return;
    }

    const sd = state.shutdown;
    const why = CLOSE_TEXT[code] || `The connection closed (code ${code}).`;
    if (NO_RECONNECT.has(code)) {
      goOffline(why + ' Not reconnecting.', 'error');
      return;
    }
    if (code === 1001 && sd && !sd.reconnect) {
      goOffline(shutdownText(sd, false), 'error');
      return;
    }
    let delay;
    if (code === 1001 && sd && sd.reconnect) {
      delay = 500 + Math.random() * 4500; // spread a node's clients over 0.5–5 s
      if (state.attempts > 0) delay = Math.max(delay, backoff());
    } else if (code === 4008) {
      delay = Math.max(5000, backoff());
    } else {
      delay = backoff();
    }
    state.attempts += 1;
    const lead = sd && sd.reconnect ? shutdownText(sd, true) : (wasLoggedIn ? why : 'Still cannot reach the server.');
    scheduleReconnect(delay, lead);
  }

  /** Exponential backoff with "equal jitter": half fixed, half random. */
  function backoff() {
    const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(state.attempts, 10));
    return exp / 2 + Math.random() * (exp / 2);
  }

  function scheduleReconnect(delay, lead) {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    setPhase('reconnecting');
    state.reconnectAt = Date.now() + delay;
    const tick = () => {
      const s = Math.max(0, Math.ceil((state.reconnectAt - Date.now()) / 1000));
      showBanner('warn', `${lead} Reconnecting in ${s} s…`, {
        icon: 'plug', action: 'Reconnect now', onAction: () => connect(), sticky: true,
      });
    };
    tick();
    state.countdownTimer = setInterval(tick, 1000);
    state.reconnectTimer = setTimeout(() => {
      clearInterval(state.countdownTimer);
      showBanner('warn', 'Reconnecting…', { icon: 'plug', sticky: true });
      connect();
    }, delay);
  }

  function goOffline(text, kind) {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    setPhase('offline');
    showBanner(kind || 'error', text, {
      icon: 'plug', sticky: true, action: 'Try again',
      onAction: () => { state.attempts = 0; state.auto = true; connect(); },
    });
  }

  function setPhase(phase) {
    state.phase = phase;
    document.body.dataset.phase = phase;
    const st = $('conn-status');
    st.dataset.state = phase === 'login' ? 'connecting' : phase;
    st.textContent = {
      login: 'Connecting…', connecting: 'Connecting…', online: 'Connected',
      reconnecting: 'Reconnecting…', offline: 'Offline',
    }[phase];
    st.title = st.textContent;
    const online = phase === 'online';
    $('message-input').disabled = !online;
    $('send-btn').disabled = !online;
    $('help-btn').disabled = !online;
    $('composer').classList.toggle('disabled', !online);
    updatePlaceholder();
  }

  // ------------------------------------------------------------------- login
  function showLoginError(text) {
    const e = $('login-error');
    e.textContent = text;
    e.hidden = !text;
  }
  function setLoginBusy(busy) {
    const b = $('login-submit');
    b.disabled = busy;
    b.textContent = busy ? 'Joining…' : 'Join chat';
  }

  function onLoginSubmit(ev) {
    ev.preventDefault();
    const name = $('login-name').value.trim();
    const room = $('login-room').value.trim();
    const token = $('login-token').value.trim();
    $('login-name').removeAttribute('aria-invalid');
    $('login-room').removeAttribute('aria-invalid');
    if (!NAME_RE.test(name)) {
      $('login-name').setAttribute('aria-invalid', 'true');
      showLoginError('Names are 1–32 characters: letters, digits, _ - or .');
      $('login-name').focus();
      return;
    }
    if (room && !ROOM_RE.test(room)) {
      $('login-room').setAttribute('aria-invalid', 'true');
      showLoginError('Room names are 1–32 characters: letters, digits, _ or -.');
      $('login-more').open = true;
      $('login-room').focus();
      return;
    }
    showLoginError('');
    setLoginBusy(true);
    state.name = name;
    state.token = token;
    state.room = room.toLowerCase();
    state.auto = false;
    state.everOnline = false;
    state.leaving = false;
    state.attempts = 0;
    // A socket from an earlier failed try is still open: log in on it again.
    if (state.ws && state.ws.readyState === WebSocket.OPEN && !state.loggedIn) identify(state.room);
    else connect();
  }

  /** An error notice before login. */
  function onLoginRefused(d) {
    const code = str(d.code);
    const msg = str(d.message) || code;
    state.loginFailures += 1;
    if (['no_such_room', 'room_locked', 'room_closed', 'banned'].includes(code) && state.identifyRoom) {
      // The room is not there (fresh node) or not joinable: log in to the
      // default room, then try to get back into the room with \join.
      // A room that does not exist (e.g. a fresh standalone node) is created
      // again with \join; for the other refusals, say why after login.
      state.fallbackRoom = code === 'no_such_room' ? state.identifyRoom : null;
      state.fallbackNote = code === 'no_such_room' ? null : `Could not return to #${state.identifyRoom}: ${msg}`;
      if (!state.auto && code !== 'no_such_room') {
        showLoginError(msg);
        setLoginBusy(false);
        $('login-more').open = true;
        return;
      }
      identify(null);
      return;
    }
    if (!state.auto) {
      showLoginError(msg);
      setLoginBusy(false);
      const field = code === 'unauthorized' ? 'login-token' : 'login-name';
      if (code === 'unauthorized') $('login-more').open = true;
      $(field).setAttribute('aria-invalid', 'true');
      $(field).focus();
      return;
    }
    // Logging in by itself (restore or reconnect).
    if (code === 'name_taken' || code === 'rate_limited' || code === 'unavailable' || code === 'internal') {
      // Our previous connection may still hold the name for a moment.
      if (state.loginFailures < 3) {
        clearTimeout(state.loginRetryTimer);
        state.loginRetryTimer = setTimeout(() => identify(state.room), 1200 + Math.random() * 800);
      } else {
        const ws = state.ws;
        state.ws = null;
        try { ws.close(1000); } catch (_) { /* ignore */ }
        state.attempts += 1;
        scheduleReconnect(backoff(), msg);
      }
      return;
    }
    // invalid_name, unauthorized...: cannot log in by itself; back to the form.
    backToLogin(msg);
  }

  function backToLogin(errorText) {
    state.leaving = true;
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    stopPolling();
    if (state.ws) { try { state.ws.close(1000); } catch (_) { /* ignore */ } }
    state.ws = null;
    state.loggedIn = false;
    state.everOnline = false;
    clearSession();
    hideBanner();
    document.body.dataset.view = 'login';
    $('app').hidden = true;
    setPhase('login');
    setLoginBusy(false);
    showLoginError(errorText || '');
    $('login-name').value = state.name;
    $('login-name').focus();
  }

  function onLoggedIn() {
    const first = !state.everOnline;
    const wasReconnecting = state.everOnline;
    state.loggedIn = true;
    state.everOnline = true;
    state.auto = true; // from now on any new login is automatic
    state.leaving = false;
    state.attempts = 0;
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    setPhase('online');
    if (first) {
      document.body.dataset.view = 'chat';
      $('app').hidden = false;
      $('login-view').setAttribute('aria-hidden', 'true');
      setLoginBusy(false);
      showLoginError('');
      $('me-name').textContent = state.name;
      $('me-avatar').replaceWith(Object.assign(avatar(state.name, 'sm'), { id: 'me-avatar' }));
      hideBanner();
      $('message-input').focus();
    } else if (wasReconnecting) {
      showBanner('success', 'Reconnected. You are back in the chat.', { timeout: 4000 });
      addDivider('Reconnected');
    }
    if (state.fallbackNote) {
      addNotice('error', 'room', state.fallbackNote);
      state.fallbackNote = null;
    }
    if (state.fallbackRoom) {
      const r = state.fallbackRoom;
      state.fallbackRoom = null;
      state.expectMove = Date.now();
      const pw = state.passwords[r];
      command('join ' + r + (pw ? ' ' + pw : ''));
    }
    startPolling();
  }

  // ------------------------------------------------------------ server events
  function onCacheUpdate(d) {
    if (typeof d.command_prefix === 'string' && d.command_prefix) setPrefix(d.command_prefix);
    if (Array.isArray(d.rooms)) {
      state.rooms = d.rooms
        .filter((r) => r && typeof r.name === 'string')
        .map((r) => ({
          name: r.name,
          available: r.available !== false,
          locked: !!r.locked,
          closed: !!r.closed,
          users: Number.isFinite(Number(r.users)) ? Number(r.users) : 0,
        }));
    }
    if (Number.isFinite(Number(d.users))) state.usersTotal = Number(d.users);
    const me = d.me && typeof d.me === 'object' ? d.me : null;
    const justLoggedIn = !state.loggedIn;
    if (justLoggedIn) onLoggedIn();
    if (me && typeof me.room === 'string') {
      const prev = state.me ? state.me.room : null;
      state.me = { name: str(me.name) || state.name, room: me.room };
      if (me.name && me.name !== state.name) {
        state.name = str(me.name);
        $('me-name').textContent = state.name;
      }
      if (me.room !== prev || justLoggedIn) onRoomChanged(prev, me.room, justLoggedIn);
    }
    renderRooms();
    renderRoomHeader();
  }

  function onRoomChanged(prev, room, justLoggedIn) {
    state.prevRoom = prev;
    state.room = room;
    const pj = state.pendingJoin;
    if (pj && pj.room === room) {
      // The password worked: keep it, to get back in after a reconnect.
      if (pj.password) state.passwords[room] = pj.password;
      state.pendingJoin = null;
    }
    saveSession();
    state.members = new Set([state.name]);
    state.membersKnown = false;
    if (prev !== room) addDivider(`Now in #${room}`);
    const pos = state.pos;
    startSync(room, justLoggedIn && pos && pos.room === room && pos.epoch ? 'resume' : 'join');
    maybeEmpty(room);
    // Ask who is here; the answer is parsed, not shown.
    state.pendingUsers += 1;
    command('users');
    renderMembers();
    closeDrawers();
    const moved = prev && prev !== room && !justLoggedIn;
    const asked = Date.now() - state.expectMove < 10000;
    if (moved && !asked) {
      const ev = state.lastRoomEvent;
      const recent = Date.now() - ev.at < 5000 && ev.room === prev;
      if (!recent) showBanner('info', `You were moved from #${prev} to #${room}.`, { timeout: 8000 });
    }
    if (moved && asked) state.expectMove = 0;
  }

  // ----------------------------------------------------------------- history
  /** Starts fetching the room's history: 'join' = its latest messages,
   * 'resume' = those after state.pos. Live messages of the room wait. */
  function startSync(room, kind) {
    cancelHistory();
    if (kind === 'join') {
      state.pos = { room, epoch: null, seq: 0 };
      state.oldestSeq = null;
      state.earlierAnchor = null;
      if (state.loadOlderItem) state.loadOlderItem.remove();
      state.loadOlderItem = null;
    }
    state.sync = { room, kind, held: [], missed: 0, complete: true, first: true };
    const pos = state.pos;
    historyRequest({ room, kind: 'sync', d: kind === 'join'
      ? { room, limit: HISTORY_PAGE }
      : { room, after: pos.seq, epoch: pos.epoch } });
  }

  function historyRequest(req) {
    if (state.inflight) {
      state.hqueue.push(req);
      if (state.hqueue.length > MAX_QUEUED_REQUESTS) state.hqueue.shift();
      return;
    }
    if (!send(OP.HISTORY_REQUEST, req.d)) return;
    state.inflight = req;
    req.timer = setTimeout(() => { if (state.inflight === req) historyFailed(); }, HISTORY_TIMEOUT_MS);
  }
  function nextHistoryRequest() {
    if (!state.inflight && state.hqueue.length) historyRequest(state.hqueue.shift());
  }
  function cancelHistory() {
    if (state.inflight) clearTimeout(state.inflight.timer);
    state.inflight = null;
    state.hqueue = [];
    state.sync = null;
    setLoadingOlder(false);
  }
  /** The request in flight got no answer (refused or too late): show what is held. */
  function historyFailed() {
    const req = state.inflight;
    if (!req) return;
    clearTimeout(req.timer);
    state.inflight = null;
    if (req.kind === 'older') setLoadingOlder(false);
    if (req.kind === 'sync' && state.sync && state.sync.room === req.room) {
      state.sync.complete = false;
      releaseHeld(false);
    }
    nextHistoryRequest();
  }

  /** A history request counts against the message rate limit: a
   * `rate_limited` notice while one is in flight may be its answer, so it is
   * sent again a little later (an extra answer is ignored). */
  function retryHistory() {
    const req = state.inflight;
    clearTimeout(req.timer);
    req.retries = (req.retries || 0) + 1;
    if (req.retries > 3) { historyFailed(); return; }
    req.timer = setTimeout(() => {
      if (state.inflight !== req) return;
      send(OP.HISTORY_REQUEST, req.d);
      req.timer = setTimeout(() => { if (state.inflight === req) historyFailed(); }, HISTORY_TIMEOUT_MS);
    }, 1000 + Math.random() * 1000);
  }

  function onHistory(d) {
    const req = state.inflight;
    if (!req || str(d.room) !== req.room) return; // nobody waits for this answer any more
    clearTimeout(req.timer);
    state.inflight = null;
    const page = {
      room: str(d.room),
      epoch: typeof d.epoch === 'string' ? d.epoch : null,
      messages: (Array.isArray(d.messages) ? d.messages : [])
        .filter((m) => m && typeof m === 'object' && Number.isInteger(m.seq))
        .sort((a, b) => a.seq - b.seq),
      complete: d.complete !== false,
      lastSeq: Number.isInteger(d.last_seq) ? d.last_seq : null,
    };
    if (req.kind === 'sync') onSyncPage(page);
    else if (req.kind === 'older') onOlderPage(page);
    nextHistoryRequest();
  }

  function onSyncPage(page) {
    const s = state.sync;
    const pos = state.pos;
    if (!s || !pos || s.room !== page.room) return;
    const first = s.first;
    s.first = false;
    let progressed = false;
    const msgs = page.messages;
    if (first && s.kind === 'join') {
      pos.epoch = page.epoch;
      pos.seq = Math.max(msgs.length ? msgs[msgs.length - 1].seq : 0, page.lastSeq || 0);
      showEarlier(page.room, msgs);
    } else {
      if (page.epoch && pos.epoch && page.epoch !== pos.epoch) {
        pos.seq = 0; // deleted and created again: a new numbering, these are its latest
        state.oldestSeq = null;
      }
      if (page.epoch) pos.epoch = page.epoch;
      if (!page.complete) s.complete = false;
      for (const m of msgs) {
        if (m.seq <= pos.seq) continue;
        pos.seq = m.seq;
        s.missed += 1;
        progressed = true;
        showMessage(m);
      }
      if (progressed && page.lastSeq !== null && pos.seq < page.lastSeq) {
        historyRequest({ room: s.room, kind: 'sync', d: { room: s.room, after: pos.seq, epoch: pos.epoch } });
        return;
      }
    }
    releaseHeld(first || progressed);
  }

  /** Shows the held-back live messages in seq order, asking history for a
   * hole before them while that still makes progress. */
  function releaseHeld(mayAsk) {
    const s = state.sync;
    const pos = state.pos;
    s.held.sort((a, b) => a.seq - b.seq);
    while (s.held.length) {
      const m = s.held[0];
      if (m.seq <= pos.seq) { s.held.shift(); continue; }
      if (m.seq > pos.seq + 1) {
        if (mayAsk && pos.epoch) {
          historyRequest({ room: s.room, kind: 'sync', d: { room: s.room, after: pos.seq, epoch: pos.epoch } });
          return;
        }
        s.complete = false;
      }
      s.held.shift();
      pos.seq = m.seq;
      showMessage(m);
    }
    state.sync = null;
    if (!s.complete && (s.kind === 'resume' || s.missed)) {
      addSys('gap', 'Some messages could not be recovered.');
    }
  }

  function onMessage(d) {
    const room = str(d.room);
    const seq = d.seq;
    const s = state.sync;
    const pos = state.pos;
    if (s && room === s.room && Number.isInteger(seq)) {
      if (s.held.length < MAX_HELD_BACK) s.held.push(d); // else fetched from history later
      return;
    }
    if (pos && room === pos.room && Number.isInteger(seq)) {
      if (seq <= pos.seq) return; // shown already (from history)
      if (pos.epoch && seq > pos.seq + 1) {
        // A hole in seq: fetch the missing ones first.
        startSync(room, 'resume');
        if (state.sync) { state.sync.held.push(d); return; }
      }
      pos.seq = seq;
    }
    showMessage(d);
  }

  /** The key that makes a message line unique: room, the room's epoch, seq. */
  function msgKey(d) {
    const room = str(d.room);
    const epoch = state.pos && state.pos.room === room ? str(state.pos.epoch) : '';
    return `${room}|${epoch}|${str(d.seq)}`;
  }
  function isShown(key) {
    return !!$('messages').querySelector(`.msg[data-key="${CSS.escape(key)}"]`);
  }

  /** Shows a message at the end of the list, unless it is there already. */
  function showMessage(d) {
    const key = msgKey(d);
    if (isShown(key)) return;
    addItem(buildMessage(d, key, $('messages').lastElementChild, false));
  }

  /** The room's latest messages on join: under an "Earlier messages" divider. */
  function showEarlier(room, msgs) {
    const fresh = msgs.filter((m) => !isShown(msgKey(m)));
    state.oldestSeq = msgs.length ? msgs[0].seq : null;
    if (!fresh.length) return;
    state.loadOlderItem = el('li', { class: 'load-older' },
      el('button', { type: 'button', class: 'btn small', onclick: () => loadOlder() }, 'Show earlier messages'));
    state.loadOlderItem.hidden = !(state.oldestSeq > 1);
    addItem(state.loadOlderItem);
    state.earlierAnchor = el('li', { class: 'divider earlier', role: 'separator', text: 'Earlier messages' });
    addItem(state.earlierAnchor);
    for (const m of fresh) addItem(buildMessage(m, msgKey(m), $('messages').lastElementChild, true));
  }

  /** Scrolling back: the messages before the oldest one shown. */
  function loadOlder() {
    const pos = state.pos;
    if (!pos || !state.loggedIn || state.inflight || state.sync || !(state.oldestSeq > 1)) return;
    setLoadingOlder(true);
    historyRequest({ room: pos.room, kind: 'older', d: { room: pos.room, before: state.oldestSeq, limit: HISTORY_PAGE } });
  }
  function setLoadingOlder(on) {
    state.loadingOlder = on;
    const item = state.loadOlderItem;
    if (item) {
      const b = item.querySelector('button');
      b.disabled = on;
      b.textContent = on ? 'Loading earlier messages…' : 'Show earlier messages';
    }
  }
  function onOlderPage(page) {
    setLoadingOlder(false);
    const pos = state.pos;
    if (!pos || pos.room !== page.room) return;
    const msgs = page.messages.filter((m) => m.seq < (state.oldestSeq || Infinity));
    state.oldestSeq = msgs.length ? msgs[0].seq : 0; // 0: nothing older is left
    if (state.loadOlderItem) state.loadOlderItem.hidden = !(state.oldestSeq > 1);
    const list = $('messages');
    const anchor = state.earlierAnchor && state.earlierAnchor.isConnected ? state.earlierAnchor : null;
    const frag = document.createDocumentFragment();
    let prev = anchor;
    for (const m of msgs) {
      const key = msgKey(m);
      if (isShown(key)) continue;
      const li = buildMessage(m, key, prev, true);
      frag.appendChild(li);
      prev = li;
    }
    // Keep what the reader looks at in place while lines go in above it.
    const fromBottom = list.scrollHeight - list.scrollTop;
    list.insertBefore(frag, anchor ? anchor.nextSibling : list.firstChild);
    list.scrollTop = list.scrollHeight - fromBottom;
  }

  function buildMessage(d, key, prevItem, earlier) {
    const author = str(d.author);
    const content = str(d.content);
    const room = str(d.room);
    const t = fmtTime(d.ts);
    const cont = prevItem && prevItem.classList.contains('msg') &&
      prevItem.dataset.author === author && prevItem.dataset.room === room &&
      prevItem.classList.contains('earlier') === earlier &&
      Number(d.ts) - Number(prevItem.dataset.ts) < 5 * 60 * 1000;
    const mine = author.toLowerCase() === state.name.toLowerCase();
    const mention = !mine && !earlier && state.name &&
      new RegExp(`(^|[^A-Za-z0-9_.-])@?${escapeRe(state.name)}($|[^A-Za-z0-9_-])`, 'i').test(content);
    return el('li', {
      class: 'msg' + (cont ? ' cont' : '') + (mine ? ' mine' : '') + (mention ? ' mention' : '') +
        (earlier ? ' earlier' : ''),
      'data-author': author, 'data-room': room, 'data-ts': str(d.ts), 'data-seq': str(d.seq),
      'data-id': str(d.id), 'data-key': key,
    },
    avatar(author),
    el('div', { class: 'msg-body' },
      el('div', { class: 'msg-head' },
        el('span', { class: 'author', text: author }),
        el('span', { class: 'msg-room', text: '#' + room }),
        el('time', { class: 'msg-time', datetime: isFinite(d.ts) ? new Date(Number(d.ts)).toISOString() : null, title: t.full, text: t.short })),
      el('p', { class: 'msg-content', title: cont ? t.short : null }, linkify(content))));
  }
  const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

  function onNotice(d) {
    const code = str(d.code);
    const message = str(d.message);
    const isError = d.error === true;
    if (!state.loggedIn && isError) { onLoginRefused(d); return; }
    const room = str(d.room);
    const user = str(d.user);
    const here = state.me && (!room || room === state.me.room);
    switch (code) {
      case 'joined':
        if (here && user) {
          if (!sameName(user, state.name) && !hasMember(user)) {
            addSys('joined', `${user} joined #${room || state.me.room}`);
            bumpRoomCount(room, +1);
          }
          removeMember(user);
          state.members.add(user);
          renderMembers();
        }
        scheduleCacheRefresh();
        return;
      case 'left':
        if (here && user) {
          addSys('left', `${user} left #${room || state.me.room}`);
          if (hasMember(user)) bumpRoomCount(room, -1);
          removeMember(user);
          renderMembers();
        }
        scheduleCacheRefresh();
        return;
      case 'info': {
        if (state.pendingUsers > 0 || state.userAskedUsers) {
          const names = parseUsers(message);
          if (names) {
            state.members = new Set(names);
            state.membersKnown = true;
            renderMembers();
            if (state.pendingUsers > 0) { state.pendingUsers -= 1; return; }
            state.userAskedUsers = false;
          }
        }
        addNotice('info', 'info', message);
        return;
      }
      default:
        if (isError) {
          if (state.inflight && (code === 'unknown_op' || code === 'not_in_room')) {
            // Our history request was refused (a server without history, or we moved on).
            historyFailed();
            if (code === 'unknown_op') return;
          }
          if (code === 'rate_limited' && state.inflight) retryHistory();
          if (code === 'rate_limited' && state.pendingUsers > 0) state.pendingUsers -= 1;
          addNotice('error', code, message || code);
          if (code === 'banned' || code === 'room_locked' || code === 'room_closed' || code === 'no_such_room') {
            state.expectMove = 0;
            const pj = state.pendingJoin;
            state.pendingJoin = null;
            if (pj && code === 'room_locked') {
              delete state.passwords[pj.room];
              saveSession();
              if (pj.fromUi) askPassword(pj.room, pj.password ? 'That password did not work.' : '');
            }
          }
        } else {
          addNotice('info', code || 'info', message);
        }
    }
  }

  const sameName = (a, b) => a.toLowerCase() === b.toLowerCase();
  const hasMember = (n) => [...state.members].some((m) => sameName(m, n));
  function removeMember(n) {
    for (const m of [...state.members]) if (sameName(m, n)) state.members.delete(m);
  }

  /** Parses the answer of the users command; null unless it lists us. */
  function parseUsers(message) {
    // "Users in general (2): ada, bob": a head naming the room, a colon, names.
    const colon = message.indexOf(':');
    if (colon < 0) return null;
    const head = message.slice(0, colon).toLowerCase();
    if (state.me && !head.includes(state.me.room)) return null;
    const text = message.slice(colon + 1);
    const tokens = text.split(/[\s,;]+/).map((t) => t.replace(/^[-*•@]+|[()[\]]+$/g, '')).filter(Boolean);
    const names = tokens.filter((t) => NAME_RE.test(t));
    const me = state.name.toLowerCase();
    if (!names.some((n) => n.toLowerCase() === me)) return null;
    return names;
  }

  function onRoomState(d) {
    const room = str(d.room);
    const reason = str(d.reason);
    if (!room) return;
    state.lastRoomEvent = { room, reason, at: Date.now() };
    let r = state.rooms.find((x) => x.name === room);
    switch (reason) {
      case 'created':
        if (!r) state.rooms.push({ name: room, available: true, locked: false, closed: false, users: 0 });
        break;
      case 'deleted':
        state.rooms = state.rooms.filter((x) => x.name !== room);
        break;
      case 'closed': if (r) { r.closed = true; r.available = false; } break;
      case 'opened': if (r) { r.closed = false; r.available = !r.locked; } break;
      case 'locked': if (r) { r.locked = true; r.available = false; } break;
      case 'unlocked': if (r) { r.locked = false; r.available = !r.closed; } break;
      case 'banned': state.banned.add(room); break;
      case 'unbanned': state.banned.delete(room); break;
      default: if (r && typeof d.available === 'boolean') r.available = d.available;
    }
    const mine = state.me && (room === state.me.room || room === state.prevRoom);
    if (reason === 'banned') {
      showBanner('error', `You were banned from #${room}.`, { icon: 'alert', timeout: 15000 });
      addNotice('error', 'banned', `You were banned from #${room}.`);
    } else if (reason === 'unbanned') {
      showBanner('success', `Your ban from #${room} was lifted. You can join it again.`, { timeout: 8000 });
    } else if (mine) {
      const text = {
        closed: `#${room} was closed.`, deleted: `#${room} was deleted.`,
        locked: `#${room} is now locked. Members can stay; joining needs the password.`,
        unlocked: `#${room} is unlocked.`, opened: `#${room} was reopened.`,
      }[reason];
      if (text) {
        const kind = ['closed', 'deleted'].includes(reason) ? 'warn' : 'info';
        showBanner(kind, text, { icon: kind === 'warn' ? 'alert' : 'info', timeout: 10000 });
        addSys('state', text);
      }
    }
    renderRooms();
    renderRoomHeader();
    scheduleCacheRefresh();
  }

  function shutdownText(d, reconnect) {
    const reason = str(d.reason);
    if (reconnect) return `This server is restarting${reason ? ` (${reason})` : ''}.`;
    return `The chat service has shut down${reason ? `: ${reason}` : '.'}`;
  }
  function onShutdown(d) {
    state.shutdown = { reason: d.reason ?? null, reconnect: d.reconnect === true };
    const sd = state.shutdown;
    showBanner(sd.reconnect ? 'warn' : 'error',
      shutdownText(sd, sd.reconnect) + (sd.reconnect ? ' You will be reconnected automatically.' : ''),
      { icon: 'alert', sticky: true });
    addNotice(sd.reconnect ? 'warn' : 'error', 'shutdown',
      shutdownText(sd, sd.reconnect));
  }

  // -------------------------------------------------------- cache refreshing
  function scheduleCacheRefresh() {
    if (state.cacheTimer) return;
    state.cacheTimer = setTimeout(() => {
      state.cacheTimer = 0;
      if (state.loggedIn) send(OP.CACHE_REQUEST, null);
    }, 400 + Math.random() * 800);
  }
  function startPolling() {
    stopPolling();
    state.pollTimer = setInterval(() => {
      if (state.loggedIn && !document.hidden) send(OP.CACHE_REQUEST, null);
    }, 30000);
  }
  function stopPolling() {
    clearInterval(state.pollTimer);
    clearTimeout(state.cacheTimer);
    state.cacheTimer = 0;
  }
  function bumpRoomCount(room, delta) {
    const r = state.rooms.find((x) => x.name === (room || (state.me && state.me.room)));
    if (r) r.users = Math.max(0, r.users + delta);
    renderRooms();
    renderRoomHeader();
  }

  // -------------------------------------------------------------- rendering
  state.items = 0;
  function nearBottom() {
    const m = $('messages');
    return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
  }
  function addItem(li) {
    const list = $('messages');
    const stick = nearBottom();
    const empty = list.querySelector('.empty');
    if (empty) empty.remove();
    list.appendChild(li);
    state.items += 1;
    while (list.children.length > MAX_ITEMS) list.firstElementChild.remove();
    if (stick) {
      list.scrollTop = list.scrollHeight;
    } else {
      $('jump').hidden = false;
    }
  }
  function addSys(kind, text) {
    addItem(el('li', { class: 'sys ' + kind }, el('span', { class: 'dot', 'aria-hidden': 'true' }), el('span', { text })));
  }
  function addDivider(text) {
    addItem(el('li', { class: 'divider', role: 'separator', text }));
  }
  function addNotice(kind, label, text) {
    const ic = kind === 'error' ? 'alert' : kind === 'warn' ? 'alert' : 'info';
    addItem(el('li', { class: 'notice ' + kind, 'data-code': label, role: kind === 'error' ? 'alert' : null },
      icon(ic),
      el('div', null,
        el('span', { class: 'notice-label', text: label === 'info' ? 'SwiftChat' : label.replace(/_/g, ' ') || kind }),
        el('p', { class: 'notice-text', text }))));
  }
  function maybeEmpty(room) {
    const list = $('messages');
    if (list.querySelector('.msg')) return;
    if (list.querySelector('.empty')) list.querySelector('.empty').remove();
    list.appendChild(el('li', { class: 'empty' },
      icon('logo', 'big'),
      el('strong', { text: `Welcome to #${room}` }),
      el('span', { text: 'Say hello, or type ' + state.prefix + 'help to see what you can do.' })));
  }

  function renderRooms() {
    const list = $('room-list');
    list.replaceChildren();
    const current = state.me ? state.me.room : null;
    const rooms = [...state.rooms].sort((a, b) =>
      (b.name === current) - (a.name === current) || b.users - a.users || a.name.localeCompare(b.name));
    for (const r of rooms) {
      const banned = state.banned.has(r.name);
      const flags = [];
      if (r.locked) flags.push(icon('lock', 'flag locked'));
      if (r.closed) flags.push(icon('closed', 'flag closed'));
      const label = [`#${r.name}`, `${r.users} ${r.users === 1 ? 'user' : 'users'}`];
      if (r.locked) label.push('locked');
      if (r.closed) label.push('closed');
      if (banned) label.push('you are banned');
      if (r.name === current) label.push('current room');
      const btn = el('button', {
        type: 'button',
        class: 'room-btn' + (r.closed ? ' closed' : '') + (banned ? ' banned' : ''),
        'aria-current': r.name === current ? 'true' : null,
        'aria-label': label.join(', '),
        title: label.join(' · '),
        onclick: () => onRoomClick(r),
      },
      icon('hash', 'hash'),
      el('span', { class: 'name', text: r.name }),
      flags,
      el('span', { class: 'pill', text: String(r.users) }));
      list.appendChild(el('li', {
        'data-room': r.name, 'data-locked': String(r.locked), 'data-closed': String(r.closed),
        'data-users': String(r.users),
      }, btn));
    }
    $('online-count').textContent = `${state.usersTotal} online`;
  }

  function renderRoomHeader() {
    const room = state.me ? state.me.room : state.room || 'general';
    $('room-name').textContent = room;
    const r = state.rooms.find((x) => x.name === room);
    const flags = $('room-flags');
    flags.replaceChildren();
    if (r && r.locked) flags.appendChild(el('span', { class: 'tag locked' }, icon('lock'), 'locked'));
    if (r && r.closed) flags.appendChild(el('span', { class: 'tag closed' }, icon('closed'), 'closed'));
    const count = r ? r.users : state.members.size;
    $('room-count').textContent = String(count);
    $('toggle-members').setAttribute('aria-label', `Show the ${count} ${count === 1 ? 'person' : 'people'} in this room`);
    document.title = `#${room} · SwiftChat`;
    updatePlaceholder();
  }

  function renderMembers() {
    const list = $('member-list');
    list.replaceChildren();
    const me = state.name.toLowerCase();
    const names = [...state.members].sort((a, b) =>
      (b.toLowerCase() === me) - (a.toLowerCase() === me) || a.localeCompare(b, undefined, { sensitivity: 'base' }));
    for (const n of names) {
      list.appendChild(el('li', { 'data-user': n },
        avatar(n), el('span', { class: 'member-name', text: n }),
        n.toLowerCase() === me ? el('span', { class: 'you', text: 'you' }) : null));
    }
    $('members-count').textContent = String(names.length);
    const note = $('members-note');
    note.hidden = state.membersKnown;
    note.textContent = state.membersKnown ? '' : 'Loading who is here…';
  }

  function updatePlaceholder() {
    const input = $('message-input');
    const room = state.me ? state.me.room : '';
    input.placeholder = state.phase === 'online'
      ? `Message #${room}`
      : state.phase === 'offline' ? 'Disconnected' : 'Reconnecting…';
  }

  function setPrefix(p) {
    state.prefix = p;
    document.querySelectorAll('.prefix').forEach((k) => { k.textContent = p; });
    document.querySelectorAll('.prefix-help').forEach((k) => { k.textContent = p + 'help'; });
    $('help-btn').title = `Commands (${p}help)`;
  }

  // ----------------------------------------------------------------- banner
  let bannerTimer = 0;
  function showBanner(kind, text, opts = {}) {
    const b = $('banner');
    clearTimeout(bannerTimer);
    b.dataset.kind = kind;
    b.hidden = false;
    const ic = opts.icon || (kind === 'success' ? 'info' : kind === 'info' ? 'info' : 'alert');
    b.querySelector('.banner-icon').replaceWith(icon(ic, 'banner-icon'));
    $('banner-text').textContent = text;
    const action = $('banner-action');
    if (opts.action) {
      action.hidden = false;
      action.textContent = opts.action;
      action.onclick = () => { opts.onAction(); };
    } else {
      action.hidden = true;
      action.onclick = null;
    }
    b.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    if (opts.timeout && !opts.sticky) bannerTimer = setTimeout(hideBanner, opts.timeout);
  }
  function hideBanner() {
    clearTimeout(bannerTimer);
    $('banner').hidden = true;
  }

  // ----------------------------------------------------------- user actions
  function onRoomClick(r) {
    if (!state.me || r.name === state.me.room) { closeDrawers(); return; }
    if (r.locked && !state.passwords[r.name]) { askPassword(r.name); return; }
    joinRoom(r.name, state.passwords[r.name]);
  }
  function joinRoom(name, password) {
    const room = name.toLowerCase();
    state.pendingJoin = { room, password: password || null, fromUi: true };
    state.expectMove = Date.now();
    command('join ' + room + (password ? ' ' + password : ''));
    closeDrawers();
    $('message-input').focus();
  }
  function askPassword(room, error) {
    const dlg = $('pw-dialog');
    if (dlg.open) return;
    $('pw-room').textContent = '#' + room;
    $('pw-input').value = '';
    $('pw-error').textContent = error || '';
    $('pw-error').hidden = !error;
    dlg.returnValue = '';
    dlg.onclose = () => {
      const pw = $('pw-input').value;
      if (dlg.returnValue === 'ok' && pw) joinRoom(room, pw);
      else $('message-input').focus();
    };
    if (typeof dlg.showModal === 'function') dlg.showModal();
    $('pw-input').focus();
  }

  function onJoinSubmit(ev) {
    ev.preventDefault();
    const input = $('join-room');
    const name = input.value.trim().replace(/^#/, '');
    const err = $('join-error');
    if (!ROOM_RE.test(name)) {
      err.textContent = 'Room names are 1–32 letters, digits, _ or -.';
      err.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    err.hidden = true;
    input.removeAttribute('aria-invalid');
    input.value = '';
    const r = state.rooms.find((x) => x.name === name.toLowerCase());
    if (r && r.locked && !state.passwords[r.name]) askPassword(r.name);
    else joinRoom(name, state.passwords[name.toLowerCase()]);
  }

  function sendComposer() {
    const input = $('message-input');
    const text = input.value;
    if (!text.trim()) return;
    if ([...text].length > MAX_CONTENT) {
      addNotice('error', 'content_too_long', `Messages can have at most ${MAX_CONTENT} characters.`);
      return;
    }
    if (state.phase !== 'online') return;
    const p = state.prefix;
    let ok;
    if (text.startsWith(p) && !text.startsWith(p + p)) {
      // A command: remember what it means for this client.
      const [cmd, ...args] = text.slice(p.length).trim().split(/\s+/);
      const c = (cmd || '').toLowerCase();
      if (c === 'join' || c === 'switch') {
        state.expectMove = Date.now();
        if (args[0]) state.pendingJoin = { room: args[0].toLowerCase(), password: args[1] || null, fromUi: false };
      } else if (c === 'leave') {
        state.expectMove = Date.now();
      } else if (c === 'users') {
        state.userAskedUsers = true;
      }
      ok = sendContent(text.trim());
    } else {
      ok = sendContent(text, state.me ? state.me.room : null);
    }
    if (!ok) return;
    state.history.push(text);
    if (state.history.length > 50) state.history.shift();
    state.historyPos = -1;
    input.value = '';
    autoGrow();
    updateComposerExtras();
    const m = $('messages');
    m.scrollTop = m.scrollHeight;
  }

  function autoGrow() {
    const t = $('message-input');
    t.style.height = 'auto';
    t.style.height = Math.min(t.scrollHeight, 180) + 'px';
  }

  // Command suggestions shown while typing the prefix.
  function popupMatches() {
    const v = $('message-input').value;
    const p = state.prefix;
    if (!v.startsWith(p) || v.startsWith(p + p) || /\s/.test(v)) return [];
    const typed = v.slice(p.length).toLowerCase();
    return COMMANDS.filter((c) => c.name.startsWith(typed));
  }
  function updateComposerExtras() {
    const input = $('message-input');
    const v = input.value;
    input.classList.toggle('is-command', v.startsWith(state.prefix) && !v.startsWith(state.prefix + state.prefix));
    const count = $('char-count');
    const n = [...v].length;
    count.hidden = n < MAX_CONTENT - 200;
    count.textContent = `${n} / ${MAX_CONTENT}`;
    count.classList.toggle('over', n > MAX_CONTENT);
    renderPopup();
  }
  function renderPopup() {
    const popup = $('cmd-popup');
    const matches = popupMatches();
    const input = $('message-input');
    if (!matches.length || popup.dataset.dismissed === input.value) {
      popup.hidden = true;
      input.setAttribute('aria-expanded', 'false');
      return;
    }
    state.popupIndex = Math.min(state.popupIndex, matches.length - 1);
    popup.replaceChildren();
    matches.forEach((c, i) => {
      popup.appendChild(el('li', {
        role: 'option', id: 'cmd-' + c.name, 'aria-selected': i === state.popupIndex ? 'true' : 'false',
        onmousedown: (e) => { e.preventDefault(); completeCommand(c); },
      },
      el('span', { class: 'cmd' }, state.prefix + c.name, c.args ? el('span', { class: 'args', text: ' ' + c.args }) : null),
      el('span', { class: 'desc' }, c.desc, c.who ? el('span', { class: 'who', text: c.who }) : null)));
    });
    popup.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    input.setAttribute('aria-activedescendant', 'cmd-' + matches[state.popupIndex].name);
    const sel = popup.children[state.popupIndex];
    if (sel && sel.scrollIntoView) sel.scrollIntoView({ block: 'nearest' });
  }
  function completeCommand(c) {
    const input = $('message-input');
    input.value = state.prefix + c.name + (c.args ? ' ' : '');
    state.popupIndex = 0;
    input.focus();
    updateComposerExtras();
    if (!c.args) $('cmd-popup').hidden = true;
  }

  function onComposerKey(ev) {
    const input = $('message-input');
    const popup = $('cmd-popup');
    const matches = popup.hidden ? [] : popupMatches();
    if (matches.length) {
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        ev.preventDefault();
        const n = matches.length;
        state.popupIndex = (state.popupIndex + (ev.key === 'ArrowDown' ? 1 : n - 1)) % n;
        renderPopup();
        return;
      }
      if (ev.key === 'Tab') {
        ev.preventDefault();
        completeCommand(matches[state.popupIndex]);
        return;
      }
      if (ev.key === 'Escape') {
        ev.preventDefault();
        popup.dataset.dismissed = input.value;
        renderPopup();
        return;
      }
      if (ev.key === 'Enter' && !ev.shiftKey) {
        const c = matches[state.popupIndex];
        const typed = input.value.slice(state.prefix.length).toLowerCase();
        if (c && c.name !== typed) {
          ev.preventDefault();
          completeCommand(c);
          if (!c.args) sendComposer();
          return;
        }
      }
    }
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      sendComposer();
      return;
    }
    // Shell-like history of what you sent.
    if ((ev.key === 'ArrowUp' || ev.key === 'ArrowDown') && state.history.length &&
        (input.value === '' || state.historyPos >= 0) && !input.value.includes('\n')) {
      ev.preventDefault();
      if (state.historyPos < 0) { state.draft = input.value; state.historyPos = state.history.length; }
      state.historyPos += ev.key === 'ArrowUp' ? -1 : 1;
      if (state.historyPos < 0) state.historyPos = 0;
      if (state.historyPos >= state.history.length) {
        state.historyPos = -1;
        input.value = state.draft;
      } else {
        input.value = state.history[state.historyPos];
      }
      autoGrow();
      updateComposerExtras();
      return;
    }
    if (ev.key === 'Escape') closeDrawers();
  }

  // ---------------------------------------------------------------- drawers
  function toggleDrawer(which) {
    const cls = which + '-open';
    const open = !document.body.classList.contains(cls);
    closeDrawers();
    if (open) {
      document.body.classList.add(cls);
      $('scrim').hidden = false;
      const btn = which === 'rooms' ? $('toggle-rooms') : $('toggle-members');
      btn.setAttribute('aria-expanded', 'true');
      const first = (which === 'rooms' ? $('sidebar') : $('members')).querySelector('button, input');
      if (first) first.focus();
    }
  }
  function closeDrawers() {
    const had = document.body.classList.contains('rooms-open') || document.body.classList.contains('members-open');
    document.body.classList.remove('rooms-open', 'members-open');
    $('scrim').hidden = true;
    $('toggle-rooms').setAttribute('aria-expanded', 'false');
    $('toggle-members').setAttribute('aria-expanded', 'false');
    return had;
  }

  function logout() {
    state.leaving = true;
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    stopPolling();
    const ws = state.ws;
    state.ws = null;
    if (ws) { try { ws.close(1000, 'bye'); } catch (_) { /* ignore */ } }
    clearSession();
    location.reload();
  }

  // -------------------------------------------------------------------- init
  function init() {
    $('login-form').addEventListener('submit', onLoginSubmit);
    $('join-form').addEventListener('submit', onJoinSubmit);
    $('composer').addEventListener('submit', (e) => { e.preventDefault(); sendComposer(); });
    const input = $('message-input');
    input.addEventListener('keydown', onComposerKey);
    input.addEventListener('input', () => {
      state.popupIndex = 0;
      delete $('cmd-popup').dataset.dismissed;
      state.historyPos = -1;
      autoGrow();
      updateComposerExtras();
    });
    input.addEventListener('blur', () => {
      // Later, so that a click on a suggestion still lands; not if focus came back.
      setTimeout(() => { if (document.activeElement !== input) $('cmd-popup').hidden = true; }, 150);
    });
    input.addEventListener('focus', renderPopup);
    $('help-btn').addEventListener('click', () => { command('help'); input.focus(); });
    $('banner-close').addEventListener('click', hideBanner);
    $('toggle-rooms').addEventListener('click', () => toggleDrawer('rooms'));
    $('toggle-members').addEventListener('click', () => toggleDrawer('members'));
    $('scrim').addEventListener('click', closeDrawers);
    $('logout').addEventListener('click', logout);
    $('jump').addEventListener('click', () => {
      const m = $('messages');
      m.scrollTop = m.scrollHeight;
      $('jump').hidden = true;
    });
    $('messages').addEventListener('scroll', () => {
      const m = $('messages');
      if (nearBottom()) $('jump').hidden = true;
      if (m.scrollTop < 40 && state.loadOlderItem && !state.loadOlderItem.hidden) loadOlder();
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && closeDrawers()) {
        e.preventDefault();
        input.focus();
      }
    });
    window.addEventListener('online', () => {
      if (state.phase === 'reconnecting' && !state.ws) connect();
    });
    $('login-server').textContent = location.host ? `Server: ${location.host}` : '';

    const session = loadSession();
    let remembered = '';
    try { remembered = localStorage.getItem(NAME_KEY) || ''; } catch (_) { /* ignore */ }
    if (session) {
      // A reload: log in again by ourselves with the same name and room.
      state.name = session.name;
      state.token = typeof session.token === 'string' ? session.token : '';
      state.room = typeof session.room === 'string' ? session.room : '';
      state.passwords = session.passwords && typeof session.passwords === 'object' ? session.passwords : {};
      state.auto = true;
      state.everOnline = false;
      $('login-name').value = state.name;
      setLoginBusy(true);
      connect();
    } else {
      if (NAME_RE.test(remembered)) $('login-name').value = remembered;
      setPhase('login');
    }
    $('login-name').focus();
    renderMembers();
  }

  // Exposed for tests and debugging: read-only view of the connection state.
  Object.defineProperty(window, 'swiftchat', {
    value: Object.freeze({
      get phase() { return state.phase; },
      get room() { return state.me ? state.me.room : null; },
      get name() { return state.name; },
      get attempts() { return state.attempts; },
      get prefix() { return state.prefix; },
      get position() { return state.pos ? { ...state.pos } : null; },
      get oldestSeq() { return state.oldestSeq; },
    }),
  });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
