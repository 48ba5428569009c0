/**
 * swiftchat.js: a small client for the SwiftChat wire protocol (version 1).
 *
 * An ES module with no dependencies, for browsers and Node.js 20+ (Node 22 has
 * a global WebSocket; on Node 20 run with `--experimental-websocket`, or pass
 * any WHATWG-compatible constructor as the `WebSocket` option).
 *
 *   import { SwiftChatClient } from './swiftchat.js';
 *
 *   const chat = new SwiftChatClient('ws://localhost:8765/ws', { name: 'ada' });
 *   chat.on('message', (m) => console.log(`[${m.room}] ${m.author}: ${m.content}`));
 *   chat.on('notice', (n) => console.log(n.error ? `error ${n.code}: ${n.message}` : n.message));
 *   await chat.connect();          // resolves with the first CACHE_UPDATE
 *   chat.send('Hello!');
 *   chat.command('join', 'random'); // sends "\join random" with the server's prefix
 *
 * Events (`on(event, fn)` returns a function that unsubscribes):
 *   'message'      op 0 MESSAGE       {author, content, room, id, seq, ts}
 *   'room_state'   op 2 ROOM_STATE    {available, room, reason}
 *   'shutdown'     op 3 SHUTDOWN      {reason, reconnect}
 *   'cache_update' op 4 CACHE_UPDATE  {rooms, command_prefix, host, port, users, me}
 *   'notice'       op 7 NOTICE        {code, error, message, room, user}
 *   'payload'      every payload      (op, d)  (also ops this module does not know)
 *   'open'         the socket opened (before login)
 *   'login'        logged in          (the CACHE_UPDATE d); again after each reconnect
 *   'login_failed' login refused      (the NOTICE d)
 *   'close'        the socket closed  {code, reason, reconnect: bool, delay: ms|null}
 *   'history'      earlier messages   {room, epoch, messages, complete, lastSeq, reason}
 *                  reason 'join': the room's latest messages, right after a
 *                  login or a change of room (before any newer 'message');
 *                  'older': the answer of loadOlder(); 'requested': the
 *                  answer of requestHistory()
 *   'resumed'      a gap was filled   {room, epoch, missed, complete}
 *
 * History and resume (ops 8/9): after each login and change of room the
 * client asks for the room's latest messages ('history', reason 'join'),
 * holding back live messages of that room until the answer is in. It keeps
 * the room's position (`position`: room, epoch, last seq). After a reconnect
 * into the same room it asks with `after` = that seq and the epoch, pages
 * until the room's `last_seq`, and delivers what it missed as ordinary
 * 'message' events, in seq order, then the live ones held back meanwhile:
 * every message reaches 'message' once (a MESSAGE already delivered from
 * history is dropped by its seq). The same happens when a live message
 * shows a hole in seq. 'resumed' says how many were missed, and `complete:
 * false` when some could not be recovered (trimmed, expired, or the room was
 * deleted and created again: a new epoch). The second argument of a
 * 'message' handler says where it came from: {source: 'live' | 'history'}.
 *
 * Reconnecting, as PROTOCOL.md asks: after a SHUTDOWN with `reconnect: true`
 * the first try waits a random 0.5–5 s; after an unexpected drop it waits an
 * exponential backoff with jitter (1 s, 2 s, 4 s … up to 30 s, each between
 * half and all of it); after close code 4008 at least 5 s. It never reconnects
 * after 1008, 1009 or 4003, after a SHUTDOWN with `reconnect: false`, or after
 * close(). A reconnect logs in again with the same name and token, into the
 * room the client was last in (creating it again with `\join` if the node
 * no longer knows it).
 */

export const Op = Object.freeze({
  MESSAGE: 0,
  MESSAGE_CREATE: 1,
  ROOM_STATE: 2,
  SHUTDOWN: 3,
  CACHE_UPDATE: 4,
  IDENTIFY: 5,
  CACHE_REQUEST: 6,
  NOTICE: 7,
  HISTORY_REQUEST: 8,
  HISTORY: 9,
});

/** How long to wait for a HISTORY answer before giving up on it. */
const HISTORY_TIMEOUT_MS = 10000;
/** Live messages held back while a room's history is being fetched; beyond
 * this they are dropped and fetched from history afterwards (seq shows the hole). */
const MAX_HELD_BACK = 1000;
/** History requests waiting behind the one in flight; older ones are dropped. */
const MAX_QUEUED_REQUESTS = 8;

/** Close codes after which a client must not reconnect by itself. */
export const NO_RECONNECT = Object.freeze([1008, 1009, 4003]);

const EVENT_OF_OP = {
  [Op.MESSAGE]: 'message',
  [Op.ROOM_STATE]: 'room_state',
  [Op.SHUTDOWN]: 'shutdown',
  [Op.CACHE_UPDATE]: 'cache_update',
  [Op.NOTICE]: 'notice',
};

/**
 * Delay before reconnect attempt number `attempt` (0-based): exponential
 * backoff with "equal jitter", i.e. a random value in [exp/2, exp].
 */
export function backoffDelay(attempt, baseMs = 1000, maxMs = 30000, random = Math.random) {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return exp / 2 + random() * (exp / 2);
}

/**
 * What to do after the socket closed with `code`, given the SHUTDOWN payload
 * seen on it (or null). Returns the delay in ms, or null for "do not reconnect".
 */
export function reconnectDelay(code, shutdown, attempt, opts = {}) {
  const { baseMs = 1000, maxMs = 30000, random = Math.random } = opts;
  if (NO_RECONNECT.includes(code)) return null;
  if (code === 1001 && shutdown) {
    if (!shutdown.reconnect) return null;
    const spread = 500 + random() * 4500; // 0.5–5 s, so a node's clients do not return at once
    return attempt === 0 ? spread : Math.max(spread, backoffDelay(attempt, baseMs, maxMs, random));
  }
  const delay = backoffDelay(attempt, baseMs, maxMs, random);
  return code === 4008 ? Math.max(5000, delay) : delay;
}

export class SwiftChatClient {
  /**
   * @param {string} url  e.g. `ws://localhost:8765/ws`
   * @param {object} options
   * @param {string} options.name        user name (1–32 of A-Z a-z 0-9 _ - .)
   * @param {string} [options.token]     JWT, when the server needs one (or for admin rights)
   * @param {string} [options.room]      room to start in (default: the server's default room)
   * @param {string} [options.password]  password of that room, if locked
   * @param {boolean} [options.reconnect=true]  reconnect by itself as described above
   * @param {number} [options.backoffBaseMs=1000]
   * @param {number} [options.backoffMaxMs=30000]
   * @param {Function} [options.WebSocket]  WebSocket constructor (default: globalThis.WebSocket)
   * @param {boolean} [options.history=true]  latest messages on join, resume after a reconnect
   * @param {number} [options.historyLimit=50]  messages asked for on join and per loadOlder()
   */
  constructor(url, options = {}) {
    const WS = options.WebSocket || globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new Error('No WebSocket available: pass options.WebSocket, or run Node 20 with --experimental-websocket');
    }
    if (!options.name) throw new Error('options.name is required');
    this.url = url;
    this.name = options.name;
    this.token = options.token ?? null;
    this.room = options.room ?? null;
    this.password = options.password ?? null;
    this.autoReconnect = options.reconnect !== false;
    this.backoffBaseMs = options.backoffBaseMs ?? 1000;
    this.backoffMaxMs = options.backoffMaxMs ?? 30000;
    this._WS = WS;
    this._ws = null;
    this._handlers = new Map();
    this._attempt = 0;
    this._timer = null;
    this._closedByUser = false;
    this._shutdown = null;
    this._loginTries = 0;
    this._recreate = null;
    this._firstLogin = null;
    /** True between a successful login and the socket's close. */
    this.loggedIn = false;
    /** The last CACHE_UPDATE `d`. */
    this.cache = null;
    /** The command prefix announced by the server. */
    this.prefix = '\\';
    this.history = options.history !== false;
    this.historyLimit = options.historyLimit ?? 50;
    /** Where the client is in its room's numbering: {room, epoch, seq} (seq: the last delivered). */
    this.position = null;
    /** The smallest seq delivered by 'history' for the current room (for loadOlder), or null. */
    this.oldestSeq = null;
    this._everLoggedIn = false;
    this._sync = null; // {room, kind: 'join'|'resume', held: [], missed, complete, first}
    this._inflight = null; // the HISTORY_REQUEST awaiting its answer: {room, kind, d, timer}
    this._queue = [];
  }

  /** Subscribes `fn` to `event`; returns a function that unsubscribes it. */
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this._handlers.get(event).delete(fn);
  }

  _emit(event, ...args) {
    for (const fn of this._handlers.get(event) || []) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`swiftchat: a '${event}' handler threw`, err);
      }
    }
  }

  /**
   * Opens the connection and logs in. Resolves with the CACHE_UPDATE `d` of
   * the first login; rejects with an Error (carrying `.notice` or `.code`) if
   * that login is refused or the socket closes before it.
   */
  connect() {
    this._closedByUser = false;
    if (!this._firstLogin) {
      this._firstLogin = {};
      this._firstLogin.promise = new Promise((resolve, reject) => {
        this._firstLogin.resolve = resolve;
        this._firstLogin.reject = reject;
      });
    }
    this._open();
    return this._firstLogin.promise;
  }

  _open() {
    clearTimeout(this._timer);
    this._timer = null;
    this._shutdown = null;
    this._loginTries = 0;
    this.loggedIn = false;
    const ws = new this._WS(this.url);
    this._ws = ws;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._emit('open');
      this._identify(this.room);
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws || typeof ev.data !== 'string') return;
      let payload;
      try {
        payload = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (payload && typeof payload === 'object') this._dispatch(payload.op, payload.d ?? null);
    };
    ws.onerror = () => {}; // a close event always follows
    ws.onclose = (ev) => {
      if (ws === this._ws) this._onClose(ev.code, ev.reason);
    };
  }

  _identify(room) {
    this._identRoom = room || null;
    this.sendPayload(Op.IDENTIFY, {
      name: this.name,
      token: this.token,
      room: room || null,
      password: room && room === this.room ? this.password : null,
    });
  }

  _dispatch(op, d) {
    this._emit('payload', op, d);
    if (op === Op.CACHE_UPDATE && d) {
      this.cache = d;
      if (typeof d.command_prefix === 'string' && d.command_prefix) this.prefix = d.command_prefix;
      const prevRoom = this.room;
      if (d.me && typeof d.me.room === 'string') {
        if (d.me.room !== this.room) this.password = null;
        this.room = d.me.room;
      }
      if (!this.loggedIn) {
        this.loggedIn = true;
        this._attempt = 0;
        const again = this._everLoggedIn;
        this._everLoggedIn = true;
        this._emit('cache_update', d);
        this._emit('login', d);
        this._startSync(again && this.room === prevRoom ? 'resume' : 'join');
        if (this._firstLogin && this._firstLogin.resolve) {
          this._firstLogin.resolve(d);
          this._firstLogin.resolve = this._firstLogin.reject = null;
        }
        if (this._recreate) {
          this.command('join', this._recreate);
          this._recreate = null;
        }
        return;
      }
    }
    if (op === Op.SHUTDOWN && d) this._shutdown = { reason: d.reason ?? null, reconnect: d.reconnect === true };
    if (op === Op.NOTICE && d && d.error && !this.loggedIn) {
      this._emit('notice', d);
      this._loginRefused(d);
      return;
    }
    if (op === Op.MESSAGE && d) {
      this._onMessage(d);
      return;
    }
    if (op === Op.HISTORY && d) {
      this._onHistory(d);
      return;
    }
    if (op === Op.NOTICE && d && this._inflight && ['unknown_op', 'not_in_room'].includes(d.code)) {
      // The request in flight was refused (a server without history, or we
      // moved on): stop waiting for it.
      if (d.code === 'unknown_op') this.history = false;
      this._historyFailed();
    } else if (op === Op.NOTICE && d && this._inflight && d.code === 'rate_limited') {
      this._retryHistory();
    }
    const event = EVENT_OF_OP[op];
    if (event) this._emit(event, d);
    if (op === Op.CACHE_UPDATE && d && d.me && this.position && d.me.room !== this.position.room) {
      this._startSync('join'); // a change of room: its latest messages
    }
  }

  // ------------------------------------------------------------ history sync
  /**
   * Starts fetching the current room's history: 'join' asks for the latest
   * messages, 'resume' for those after `position` (same room, after a
   * reconnect or a hole in seq). Live messages of the room are held back
   * until the history has caught up with them.
   */
  _startSync(kind) {
    this._cancelHistory();
    const room = this.room;
    if (!this.history || !room) {
      this.position = null;
      return;
    }
    const pos = this.position;
    if (kind === 'resume' && !(pos && pos.room === room && pos.epoch)) kind = 'join';
    if (kind === 'join') {
      this.position = { room, epoch: null, seq: 0 };
      this.oldestSeq = null;
    }
    this._sync = { room, kind, held: [], missed: 0, complete: true, first: true };
    this._request(kind === 'join'
      ? { room, kind: 'sync', d: { room, limit: this.historyLimit } }
      : { room, kind: 'sync', d: { room, after: pos.seq, epoch: pos.epoch } });
  }

  _onMessage(d) {
    const s = this._sync;
    const pos = this.position;
    if (s && d.room === s.room && Number.isInteger(d.seq)) {
      if (s.held.length < MAX_HELD_BACK) s.held.push(d); // else: fetched from history later
      return;
    }
    if (pos && d.room === pos.room && Number.isInteger(d.seq)) {
      if (d.seq <= pos.seq) return; // already delivered (from history)
      if (pos.epoch && d.seq > pos.seq + 1) {
        // A hole in seq: fetch what is missing, then deliver this one.
        this._startSync('resume');
        this._sync.held.push(d);
        return;
      }
      pos.seq = d.seq;
    }
    this._emit('message', d, { source: 'live' });
  }

  _onHistory(d) {
    const req = this._inflight;
    if (!req || d.room !== req.room) return; // an answer nobody waits for any more
    clearTimeout(req.timer);
    this._inflight = null;
    const messages = (Array.isArray(d.messages) ? d.messages : [])
      .filter((m) => m && Number.isInteger(m.seq))
      .sort((a, b) => a.seq - b.seq);
    const info = {
      room: d.room, epoch: d.epoch ?? null, messages,
      complete: d.complete !== false, lastSeq: Number.isInteger(d.last_seq) ? d.last_seq : null,
    };
    if (req.kind === 'sync') {
      this._onSyncPage(info);
    } else {
      const pos = this.position;
      if (req.kind === 'older' && pos && pos.room === d.room && messages.length) {
        this.oldestSeq = Math.min(this.oldestSeq ?? Infinity, messages[0].seq);
      }
      this._emit('history', { ...info, reason: req.kind });
    }
    this._next();
  }

  _onSyncPage(page) {
    const s = this._sync;
    const pos = this.position;
    if (!s || !pos || s.room !== page.room) return;
    const first = s.first;
    s.first = false;
    let progressed = false;
    if (first && s.kind === 'join') {
      pos.epoch = page.epoch;
      const last = page.messages.length ? page.messages[page.messages.length - 1].seq : 0;
      pos.seq = Math.max(last, page.lastSeq ?? 0);
      this.oldestSeq = page.messages.length ? page.messages[0].seq : null;
      this._emit('history', { ...page, reason: 'join' });
    } else {
      if (page.epoch && pos.epoch && page.epoch !== pos.epoch) {
        // The room was deleted and created again: a new numbering, and the
        // answer holds its latest messages.
        pos.seq = 0;
        this.oldestSeq = page.messages.length ? page.messages[0].seq : null;
      }
      if (page.epoch) pos.epoch = page.epoch;
      if (!page.complete) s.complete = false;
      for (const m of page.messages) {
        if (m.seq <= pos.seq) continue;
        pos.seq = m.seq;
        s.missed += 1;
        progressed = true;
        this._emit('message', m, { source: 'history' });
      }
      // A page may end before last_seq: ask for the next one.
      if (progressed && page.lastSeq !== null && pos.seq < page.lastSeq) {
        this._request({ room: s.room, kind: 'sync', d: { room: s.room, after: pos.seq, epoch: pos.epoch } });
        return;
      }
    }
    this._releaseHeld(first || progressed);
  }

  /** Delivers the held-back live messages in seq order; asks history for a
   * hole before them while that still makes progress. */
  _releaseHeld(mayAsk) {
    const s = this._sync;
    const pos = this.position;
    s.held.sort((a, b) => a.seq - b.seq);
    while (s.held.length) {
      const m = s.held[0];
      if (m.seq <= pos.seq) {
        s.held.shift();
        continue;
      }
      if (m.seq > pos.seq + 1) {
        if (mayAsk && pos.epoch) {
          this._request({ room: s.room, kind: 'sync', d: { room: s.room, after: pos.seq, epoch: pos.epoch } });
          return;
        }
        s.complete = false; // the missing ones are gone from history
      }
      s.held.shift();
      pos.seq = m.seq;
      this._emit('message', m, { source: 'live' });
    }
    this._sync = null;
    if (s.kind === 'resume') {
      this._emit('resumed', { room: s.room, epoch: pos.epoch, missed: s.missed, complete: s.complete });
    }
  }

  _historyFailed() {
    const req = this._inflight;
    if (!req) return;
    clearTimeout(req.timer);
    this._inflight = null;
    if (req.kind === 'sync' && this._sync && this._sync.room === req.room) {
      this._sync.complete = false;
      this._releaseHeld(false);
    }
    this._next();
  }

  /** A history request counts against the message rate limit: a
   * `rate_limited` notice while one is in flight may be its answer, so it is
   * sent again a little later (an extra answer is ignored). */
  _retryHistory() {
    const req = this._inflight;
    clearTimeout(req.timer);
    req.retries = (req.retries || 0) + 1;
    if (req.retries > 3) {
      this._historyFailed();
      return;
    }
    req.timer = setTimeout(() => {
      if (this._inflight !== req) return;
      this.sendPayload(Op.HISTORY_REQUEST, req.d);
      req.timer = setTimeout(() => {
        if (this._inflight === req) this._historyFailed();
      }, HISTORY_TIMEOUT_MS);
    }, 1000 + Math.random() * 1000);
  }

  _request(req) {
    if (this._inflight) {
      this._queue.push(req);
      if (this._queue.length > MAX_QUEUED_REQUESTS) this._queue.shift();
      return;
    }
    this._inflight = req;
    if (!this.sendPayload(Op.HISTORY_REQUEST, req.d)) {
      this._inflight = null;
      return;
    }
    req.timer = setTimeout(() => {
      if (this._inflight === req) this._historyFailed();
    }, HISTORY_TIMEOUT_MS);
  }

  _next() {
    if (this._inflight) return;
    const req = this._queue.shift();
    if (req) this._request(req);
  }

  _cancelHistory() {
    if (this._inflight) clearTimeout(this._inflight.timer);
    this._inflight = null;
    this._queue = [];
    this._sync = null;
  }

  /**
   * Asks for the messages before the oldest one delivered so far in the
   * current room (scrolling back); the answer comes as 'history' with reason
   * 'older'. Returns false when there is nothing older to ask for.
   */
  loadOlder(limit = this.historyLimit) {
    const pos = this.position;
    if (!pos || !this.loggedIn || this.oldestSeq === null || this.oldestSeq <= 1) return false;
    this._request({ room: pos.room, kind: 'older', d: { room: pos.room, before: this.oldestSeq, limit } });
    return true;
  }

  /**
   * Sends a HISTORY_REQUEST (op 8) for the current room with the given
   * fields ({after, before, limit, epoch}); the answer comes as 'history'
   * with reason 'requested'.
   */
  requestHistory(fields = {}) {
    if (!this.loggedIn || !this.room) return false;
    this._request({ room: this.room, kind: 'requested', d: { ...fields, room: this.room } });
    return true;
  }

  _loginRefused(notice) {
    this._loginTries += 1;
    if (notice.code === 'no_such_room' && this._identRoom) {
      // The node does not know the room (e.g. a fresh standalone node): log in
      // to the default room and create it again.
      this._recreate = this._identRoom;
      this._identify(null);
      return;
    }
    const first = this._firstLogin && this._firstLogin.reject;
    const transient = ['name_taken', 'rate_limited', 'unavailable', 'internal'].includes(notice.code);
    if (!first && transient && this._loginTries < 3) {
      // After a reconnect our old connection may hold the name for up to 1 s.
      this._timer = setTimeout(() => this._identify(this.room), 1000 + Math.random() * 1000);
      return;
    }
    this._emit('login_failed', notice);
    if (first) {
      const err = new Error(`login refused: ${notice.code}: ${notice.message}`);
      err.notice = notice;
      this._firstLogin.reject(err);
      this._firstLogin = null;
      this.close();
      return;
    }
    if (transient) {
      // Start over on a new socket, later.
      const ws = this._ws;
      this._ws = null;
      ws.close(1000);
      this._scheduleReconnect(backoffDelay(this._attempt++, this.backoffBaseMs, this.backoffMaxMs), 1000, '');
      return;
    }
    this.close(); // invalid name, bad token: retrying cannot help
  }

  _onClose(code, reason) {
    this._ws = null;
    this.loggedIn = false;
    this._cancelHistory(); // `position` stays: the next login resumes from it
    clearTimeout(this._timer);
    this._timer = null;
    let delay = null;
    if (!this._closedByUser && this.autoReconnect) {
      delay = reconnectDelay(code, this._shutdown, this._attempt, {
        baseMs: this.backoffBaseMs,
        maxMs: this.backoffMaxMs,
      });
    }
    if (this._firstLogin && this._firstLogin.reject && delay === null) {
      const err = new Error(`connection closed before login (code ${code})`);
      err.code = code;
      this._firstLogin.reject(err);
      this._firstLogin = null;
    }
    if (delay === null) {
      this._emit('close', { code, reason, reconnect: false, delay: null });
      return;
    }
    this._attempt += 1;
    this._scheduleReconnect(delay, code, reason);
  }

  _scheduleReconnect(delay, code, reason) {
    this._emit('close', { code, reason, reconnect: true, delay });
    this._timer = setTimeout(() => {
      this._timer = null;
      if (!this._closedByUser) this._open();
    }, delay);
  }

  /** Sends `{op, d}`; returns false if the socket is not open. */
  sendPayload(op, d) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 /* OPEN */) return false;
    ws.send(JSON.stringify({ op, d }));
    return true;
  }

  /** Sends a string as it is (for tests of the server's error handling). */
  sendRaw(text) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(text);
    return true;
  }

  /** Sends a chat message to the current room (MESSAGE_CREATE). */
  send(content) {
    return this.sendPayload(Op.MESSAGE_CREATE, { content });
  }

  /** Sends a command, e.g. `command('join', 'random')` or `command('ban', 'bob')`. */
  command(name, ...args) {
    return this.send([this.prefix + name, ...args].join(' '));
  }

  /** Asks for a fresh CACHE_UPDATE (op 6). */
  requestCache() {
    return this.sendPayload(Op.CACHE_REQUEST, null);
  }

  /** Asks the cluster to shut down (op 3 with the shutdown key). */
  shutdownCluster(key, reason = null) {
    return this.sendPayload(Op.SHUTDOWN, { key, reason });
  }

  /** Closes the connection for good (no reconnect). */
  close(code = 1000, reason = '') {
    this._closedByUser = true;
    clearTimeout(this._timer);
    this._timer = null;
    const ws = this._ws;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* already closing */
      }
    } else {
      this._emit('close', { code, reason, reconnect: false, delay: null });
    }
  }
}

export default SwiftChatClient;
