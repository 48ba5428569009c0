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
});

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
      if (d.me && typeof d.me.room === 'string') {
        if (d.me.room !== this.room) this.password = null;
        this.room = d.me.room;
      }
      if (!this.loggedIn) {
        this.loggedIn = true;
        this._attempt = 0;
        this._emit('cache_update', d);
        this._emit('login', d);
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
    const event = EVENT_OF_OP[op];
    if (event) this._emit(event, d);
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
