"""A small asyncio client for the SwiftChat wire protocol (version 1).

Needs Python 3.10+ and the ``websockets`` library (``pip install websockets``).

    import asyncio
    from swiftchat_client import SwiftChatClient

    async def main():
        chat = SwiftChatClient("ws://localhost:8765/ws", "ada")
        chat.on("message", lambda m: print(f"[{m['room']}] {m['author']}: {m['content']}"))
        chat.on("notice", lambda n: print(n["message"]))
        runner = asyncio.create_task(chat.run())   # connects, logs in, reconnects
        await chat.wait_logged_in()
        await chat.send("Hello!")
        await chat.command("join", "random")       # "\\join random" with the server's prefix
        print(await runner)                         # the final close: (code, reason)

    asyncio.run(main())

Events (``on(event, callback)``; a callback may be a plain function or a
coroutine function):

- ``message``      op 0 MESSAGE       ``{author, content, room, id, seq, ts}``
- ``room_state``   op 2 ROOM_STATE    ``{available, room, reason}``
- ``shutdown``     op 3 SHUTDOWN      ``{reason, reconnect}``
- ``cache_update`` op 4 CACHE_UPDATE  ``{rooms, command_prefix, host, port, users, me}``
- ``notice``       op 7 NOTICE        ``{code, error, message, room, user}``
- ``payload``      every payload, as ``(op, d)``, ops this module does not know included
- ``login``        logged in (the CACHE_UPDATE ``d``), again after each reconnect
- ``login_failed`` login refused (the NOTICE ``d``)
- ``close``        the socket closed: ``Close(code, reason, reconnect, delay)``
- ``history``      earlier messages: ``{room, epoch, messages, complete, last_seq, reason}``;
  reason ``join``: the room's latest messages right after a login or a change
  of room (before any newer ``message``), ``older``: the answer of
  :meth:`SwiftChatClient.load_older`, ``requested``: of
  :meth:`SwiftChatClient.request_history`
- ``resumed``      a gap was filled: ``{room, epoch, missed, complete}``

History and resume (ops 8/9): after each login and change of room the client
asks for the room's latest messages (``history``, reason ``join``), holding
back live messages of that room until the answer is in, and keeps its
position in the room (``position``: room, epoch, last seq). After a reconnect
into the same room it asks with ``after`` = that seq and the epoch, pages
until the room's ``last_seq``, and delivers what it missed as ordinary
``message`` events in seq order, then the live ones held back meanwhile:
every message reaches ``message`` once (a MESSAGE already delivered from
history is dropped by its seq). The same happens when a live message shows a
hole in seq. ``resumed`` says how many were missed, with ``complete: False``
when some could not be recovered (trimmed, expired, or the room was deleted
and created again: a new epoch). A ``message`` callback that takes two
arguments also gets ``{"source": "live" | "history"}``.

Reconnecting follows PROTOCOL.md: after a SHUTDOWN with ``reconnect: true``
the first try waits a random 0.5-5 s; after an unexpected drop, exponential
backoff with jitter (1, 2, 4 ... up to 30 s, each between half and all of
it); after close code 4008 at least 5 s. Never after 1008, 1009, 4003, after a
SHUTDOWN with ``reconnect: false``, or after :meth:`SwiftChatClient.close`. A
reconnect logs in again with the same name and token into the room the client
was last in (creating it again with ``\\join`` if the node no longer knows it).

Run as a script for a tiny terminal chat:
``python swiftchat_client.py ws://localhost:8765/ws ada``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

(MESSAGE, MESSAGE_CREATE, ROOM_STATE, SHUTDOWN, CACHE_UPDATE, IDENTIFY, CACHE_REQUEST, NOTICE,
 HISTORY_REQUEST, HISTORY) = range(10)

#: Seconds to wait for a HISTORY answer before giving up on it.
HISTORY_TIMEOUT = 10.0
#: Live messages held back while a room's history is fetched; beyond this they
#: are dropped and fetched from history afterwards (seq shows the hole).
MAX_HELD_BACK = 1000
#: History requests waiting behind the one in flight; older ones are dropped.
MAX_QUEUED_REQUESTS = 8

#: Close codes after which a client must not reconnect by itself.
NO_RECONNECT = frozenset({1008, 1009, 4003})

_EVENT_OF_OP = {
    MESSAGE: "message",
    ROOM_STATE: "room_state",
    SHUTDOWN: "shutdown",
    CACHE_UPDATE: "cache_update",
    NOTICE: "notice",
}
_TRANSIENT_LOGIN_ERRORS = {"name_taken", "rate_limited", "unavailable", "internal"}


@dataclass(frozen=True)
class Close:
    """How a connection ended, and what the client does next."""

    code: int
    reason: str
    reconnect: bool
    delay: float | None  # seconds until the next attempt, when reconnecting


class LoginRefused(Exception):
    """The server refused the first login; ``notice`` is the NOTICE ``d``."""

    def __init__(self, notice: dict):
        super().__init__(f"login refused: {notice.get('code')}: {notice.get('message')}")
        self.notice = notice


def _takes_two(callback: Callable) -> bool:
    """Whether ``callback`` accepts a second positional argument."""
    try:
        inspect.signature(callback).bind(None, None)
        return True
    except (TypeError, ValueError):
        return False


def backoff_delay(attempt: int, base: float = 1.0, maximum: float = 30.0) -> float:
    """Exponential backoff with "equal jitter": random in [exp/2, exp] seconds."""
    exp = min(maximum, base * 2 ** min(attempt, 30))
    return exp / 2 + random.random() * exp / 2


def reconnect_delay(code: int, shutdown: dict | None, attempt: int,
                    base: float = 1.0, maximum: float = 30.0) -> float | None:
    """Seconds to wait before reconnecting after close ``code``, or None for never."""
    if code in NO_RECONNECT:
        return None
    if code == 1001 and shutdown is not None:
        if not shutdown.get("reconnect"):
            return None
        spread = random.uniform(0.5, 5.0)  # a node's clients should not all return at once
        return spread if attempt == 0 else max(spread, backoff_delay(attempt, base, maximum))
    delay = backoff_delay(attempt, base, maximum)
    return max(5.0, delay) if code == 4008 else delay


class SwiftChatClient:
    """One user's connection to SwiftChat, reconnecting by itself."""

    def __init__(self, url: str, name: str, *, token: str | None = None, room: str | None = None,
                 password: str | None = None, reconnect: bool = True,
                 backoff_base: float = 1.0, backoff_max: float = 30.0,
                 history: bool = True, history_limit: int = 50):
        self.url = url
        self.name = name
        self.token = token
        self.room = room
        self.password = password
        self.auto_reconnect = reconnect
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        #: The command prefix announced by the server.
        self.prefix = "\\"
        #: The last CACHE_UPDATE ``d``.
        self.cache: dict | None = None
        self.logged_in = False
        self._handlers: dict[str, list[Callable]] = {}
        self._ws: ClientConnection | None = None
        self._closing = False
        self._attempt = 0
        self._ever_logged_in = False
        self._login_event = asyncio.Event()
        self._login_error: LoginRefused | None = None
        #: Latest messages on join and resume after a reconnect (ops 8/9).
        self.history = history
        #: Messages asked for on join and per :meth:`load_older`.
        self.history_limit = history_limit
        #: Where the client is in its room's numbering: ``{room, epoch, seq}``
        #: (seq: the last message delivered), or None.
        self.position: dict | None = None
        #: The smallest seq delivered by ``history`` in the current room, or None.
        self.oldest_seq: int | None = None
        self._sync: dict | None = None  # {room, kind, held, missed, complete, first}
        self._inflight: dict | None = None  # {room, kind, d}
        self._queue: list[dict] = []
        self._history_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ events
    def on(self, event: str, callback: Callable) -> Callable[[], None]:
        """Calls ``callback`` on ``event``; returns a function that unsubscribes."""
        self._handlers.setdefault(event, []).append(callback)
        return lambda: self._handlers[event].remove(callback)

    async def _emit(self, event: str, *args: Any) -> None:
        for callback in list(self._handlers.get(event, ())):
            try:
                if event == "message" and len(args) == 2 and not _takes_two(callback):
                    result = callback(args[0])
                else:
                    result = callback(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # a handler's bug must not kill the connection
                print(f"swiftchat: {event!r} handler raised {exc!r}", file=sys.stderr)

    # ----------------------------------------------------------------- sending
    async def send_payload(self, op: int, d: Any) -> bool:
        """Sends ``{"op": op, "d": d}``; False when not connected."""
        return await self.send_raw(json.dumps({"op": op, "d": d}))

    async def send_raw(self, text: str) -> bool:
        """Sends a text frame as it is (useful to test a server's error handling)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(text)
            return True
        except ConnectionClosed:
            return False

    async def send(self, content: str) -> bool:
        """Sends a chat message to the current room (MESSAGE_CREATE)."""
        return await self.send_payload(MESSAGE_CREATE, {"content": content})

    async def command(self, name: str, *args: str) -> bool:
        """Sends a command, e.g. ``command("join", "random")``."""
        return await self.send(" ".join([self.prefix + name, *args]))

    async def request_cache(self) -> bool:
        """Asks for a fresh CACHE_UPDATE (op 6)."""
        return await self.send_payload(CACHE_REQUEST, None)

    async def shutdown_cluster(self, key: str, reason: str | None = None) -> bool:
        """Asks the whole cluster to shut down (op 3 with the shutdown key)."""
        return await self.send_payload(SHUTDOWN, {"key": key, "reason": reason})

    async def request_history(self, **fields: Any) -> bool:
        """Sends a HISTORY_REQUEST (op 8) for the current room with the given
        fields (``after``, ``before``, ``limit``, ``epoch``); the answer comes
        as ``history`` with reason ``requested``."""
        if not self.logged_in or not self.room:
            return False
        return await self._request({"room": self.room, "kind": "requested",
                                    "d": {**fields, "room": self.room}})

    async def load_older(self, limit: int | None = None) -> bool:
        """Asks for the messages before the oldest one delivered in the current
        room (scrolling back); the answer comes as ``history`` with reason
        ``older``. False when there is nothing older to ask for."""
        pos = self.position
        if not pos or not self.logged_in or self.oldest_seq is None or self.oldest_seq <= 1:
            return False
        return await self._request({"room": pos["room"], "kind": "older", "d": {
            "room": pos["room"], "before": self.oldest_seq, "limit": limit or self.history_limit}})

    async def wait_logged_in(self, timeout: float | None = 10.0) -> dict:
        """Waits for a login; returns its CACHE_UPDATE ``d`` or raises LoginRefused."""
        await asyncio.wait_for(self._login_event.wait(), timeout)
        if self._login_error is not None:
            raise self._login_error
        assert self.cache is not None
        return self.cache

    async def close(self) -> None:
        """Closes the connection for good (no reconnect); :meth:`run` then returns."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    # ----------------------------------------------------------------- running
    async def run(self) -> Close:
        """Connects, logs in and handles payloads, reconnecting as the protocol
        says, until the connection ends for good. Returns that last Close.
        Raises LoginRefused if the very first login is refused."""
        while True:
            close = await self._run_once()
            if self._closing:
                close = Close(close.code, close.reason, False, None)
            await self._emit("close", close)
            if not close.reconnect:
                self._login_event.set()  # wake wait_logged_in() callers
                if self._login_error is not None:
                    raise self._login_error
                return close
            await asyncio.sleep(close.delay or 0)
            if self._closing:
                return Close(close.code, close.reason, False, None)

    async def _run_once(self) -> Close:
        shutdown: dict | None = None
        self.logged_in = False
        self._tries = 0
        try:
            async with connect(self.url, open_timeout=10) as ws:
                self._ws = ws
                try:
                    recreate = await self._login(ws, self.room)
                    async for frame in ws:
                        if not isinstance(frame, str):
                            continue
                        try:
                            payload = json.loads(frame)
                        except ValueError:
                            continue
                        if not isinstance(payload, dict):
                            continue
                        op, d = payload.get("op"), payload.get("d")
                        if op == SHUTDOWN and isinstance(d, dict):
                            shutdown = d
                        recreate = await self._handle(ws, op, d, recreate)
                except ConnectionClosed:
                    pass
                finally:
                    self._ws = None
                    self._cancel_history()  # position stays: the next login resumes from it
                code = ws.close_code if ws.close_code is not None else 1006
                reason = ws.close_reason or ""
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
            code, reason = 1006, str(exc)
        self.logged_in = False
        if self._closing or not self.auto_reconnect or self._login_error is not None:
            return Close(code, reason, False, None)
        delay = reconnect_delay(code, shutdown, self._attempt, self.backoff_base, self.backoff_max)
        if delay is None:
            return Close(code, reason, False, None)
        self._attempt += 1
        return Close(code, reason, True, delay)

    async def _login(self, ws: ClientConnection, room: str | None) -> str | None:
        """Sends IDENTIFY; the answer is handled in _handle."""
        self._ident_room = room
        await ws.send(json.dumps({"op": IDENTIFY, "d": {
            "name": self.name, "token": self.token, "room": room,
            "password": self.password if room and room == self.room else None}}))
        return None

    async def _handle(self, ws: ClientConnection, op: Any, d: Any, recreate: str | None) -> str | None:
        await self._emit("payload", op, d)
        if op == CACHE_UPDATE and isinstance(d, dict):
            self.cache = d
            if isinstance(d.get("command_prefix"), str) and d["command_prefix"]:
                self.prefix = d["command_prefix"]
            me = d.get("me") or {}
            prev_room = self.room
            if isinstance(me.get("room"), str):
                if me["room"] != self.room:
                    self.password = None
                self.room = me["room"]
            if not self.logged_in:
                self.logged_in = True
                again = self._ever_logged_in
                self._ever_logged_in = True
                self._attempt = 0
                self._login_event.set()
                await self._emit("cache_update", d)
                await self._emit("login", d)
                await self._start_sync("resume" if again and self.room == prev_room else "join")
                if recreate:
                    await self.command("join", recreate)
                return None
        if op == NOTICE and isinstance(d, dict) and d.get("error") and not self.logged_in:
            await self._emit("notice", d)
            return await self._login_refused(ws, d)
        if op == MESSAGE and isinstance(d, dict):
            await self._on_message(d)
            return recreate
        if op == HISTORY and isinstance(d, dict):
            await self._on_history(d)
            return recreate
        if (op == NOTICE and isinstance(d, dict) and self._inflight
                and d.get("code") in ("unknown_op", "not_in_room")):
            # The request in flight was refused (a server without history, or
            # we moved on): stop waiting for it.
            if d.get("code") == "unknown_op":
                self.history = False
            await self._history_failed()
        elif op == NOTICE and isinstance(d, dict) and self._inflight and d.get("code") == "rate_limited":
            self._retry_history()
        event = _EVENT_OF_OP.get(op) if isinstance(op, int) else None
        if event:
            await self._emit(event, d)
        me = d.get("me") if op == CACHE_UPDATE and isinstance(d, dict) else None
        if isinstance(me, dict) and self.position and me.get("room") != self.position["room"]:
            await self._start_sync("join")  # a change of room: its latest messages
        return recreate

    # ------------------------------------------------------------ history sync
    async def _start_sync(self, kind: str) -> None:
        """Starts fetching the current room's history: ``join`` asks for the
        latest messages, ``resume`` for those after ``position``. Live messages
        of the room are held back until the history has caught up with them."""
        self._cancel_history()
        room = self.room
        if not self.history or not room:
            self.position = None
            return
        pos = self.position
        if kind == "resume" and not (pos and pos["room"] == room and pos["epoch"]):
            kind = "join"
        if kind == "join":
            pos = self.position = {"room": room, "epoch": None, "seq": 0}
            self.oldest_seq = None
            d = {"room": room, "limit": self.history_limit}
        else:
            d = {"room": room, "after": pos["seq"], "epoch": pos["epoch"]}
        self._sync = {"room": room, "kind": kind, "held": [], "missed": 0, "complete": True,
                      "first": True}
        await self._request({"room": room, "kind": "sync", "d": d})

    async def _on_message(self, d: dict) -> None:
        s, pos, seq = self._sync, self.position, d.get("seq")
        if isinstance(seq, int) and s and d.get("room") == s["room"]:
            if len(s["held"]) < MAX_HELD_BACK:  # else: fetched from history later
                s["held"].append(d)
            return
        if isinstance(seq, int) and pos and d.get("room") == pos["room"]:
            if seq <= pos["seq"]:
                return  # already delivered (from history)
            if pos["epoch"] and seq > pos["seq"] + 1:
                # A hole in seq: fetch what is missing, then deliver this one.
                await self._start_sync("resume")
                if self._sync:
                    self._sync["held"].append(d)
                    return
            pos["seq"] = seq
        await self._emit("message", d, {"source": "live"})

    async def _on_history(self, d: dict) -> None:
        req = self._inflight
        if not req or d.get("room") != req["room"]:
            return  # an answer nobody waits for any more
        self._inflight = None
        if self._history_timer:
            self._history_timer.cancel()
            self._history_timer = None
        messages = sorted((m for m in d.get("messages") or [] if isinstance(m, dict)
                           and isinstance(m.get("seq"), int)), key=lambda m: m["seq"])
        last_seq = d.get("last_seq")
        page = {"room": d["room"], "epoch": d.get("epoch"), "messages": messages,
                "complete": d.get("complete") is not False,
                "last_seq": last_seq if isinstance(last_seq, int) else None}
        if req["kind"] == "sync":
            await self._on_sync_page(page)
        else:
            pos = self.position
            if req["kind"] == "older" and pos and pos["room"] == d["room"] and messages:
                self.oldest_seq = min(self.oldest_seq or messages[0]["seq"], messages[0]["seq"])
            await self._emit("history", {**page, "reason": req["kind"]})
        await self._next()

    async def _on_sync_page(self, page: dict) -> None:
        s, pos = self._sync, self.position
        if not s or not pos or s["room"] != page["room"]:
            return
        first, s["first"] = s["first"], False
        progressed = False
        msgs = page["messages"]
        if first and s["kind"] == "join":
            pos["epoch"] = page["epoch"]
            pos["seq"] = max(msgs[-1]["seq"] if msgs else 0, page["last_seq"] or 0)
            self.oldest_seq = msgs[0]["seq"] if msgs else None
            await self._emit("history", {**page, "reason": "join"})
        else:
            if page["epoch"] and pos["epoch"] and page["epoch"] != pos["epoch"]:
                # The room was deleted and created again: a new numbering, and
                # the answer holds its latest messages.
                pos["seq"] = 0
                self.oldest_seq = msgs[0]["seq"] if msgs else None
            if page["epoch"]:
                pos["epoch"] = page["epoch"]
            if not page["complete"]:
                s["complete"] = False
            for m in msgs:
                if m["seq"] <= pos["seq"]:
                    continue
                pos["seq"] = m["seq"]
                s["missed"] += 1
                progressed = True
                await self._emit("message", m, {"source": "history"})
            # A page may end before last_seq: ask for the next one.
            if progressed and page["last_seq"] is not None and pos["seq"] < page["last_seq"]:
                await self._request({"room": s["room"], "kind": "sync", "d": {
                    "room": s["room"], "after": pos["seq"], "epoch": pos["epoch"]}})
                return
        await self._release_held(first or progressed)

    async def _release_held(self, may_ask: bool) -> None:
        """Delivers the held-back live messages in seq order; asks history for
        a hole before them while that still makes progress."""
        s, pos = self._sync, self.position
        assert s is not None and pos is not None
        s["held"].sort(key=lambda m: m["seq"])
        while s["held"]:
            m = s["held"][0]
            if m["seq"] <= pos["seq"]:
                s["held"].pop(0)
                continue
            if m["seq"] > pos["seq"] + 1:
                if may_ask and pos["epoch"]:
                    await self._request({"room": s["room"], "kind": "sync", "d": {
                        "room": s["room"], "after": pos["seq"], "epoch": pos["epoch"]}})
                    return
                s["complete"] = False  # the missing ones are gone from history
            s["held"].pop(0)
            pos["seq"] = m["seq"]
            await self._emit("message", m, {"source": "live"})
        self._sync = None
        if s["kind"] == "resume":
            await self._emit("resumed", {"room": s["room"], "epoch": pos["epoch"],
                                         "missed": s["missed"], "complete": s["complete"]})

    async def _history_failed(self) -> None:
        req = self._inflight
        if not req:
            return
        self._inflight = None
        if req["kind"] == "sync" and self._sync and self._sync["room"] == req["room"]:
            self._sync["complete"] = False
            await self._release_held(False)
        await self._next()

    async def _request(self, req: dict) -> bool:
        if self._inflight:
            self._queue.append(req)
            if len(self._queue) > MAX_QUEUED_REQUESTS:
                self._queue.pop(0)
            return True
        loop = asyncio.get_running_loop()
        self._inflight = req
        if not await self.send_payload(HISTORY_REQUEST, req["d"]):
            self._inflight = None
            return False
        if self._history_timer:
            self._history_timer.cancel()
        self._history_timer = loop.call_later(HISTORY_TIMEOUT, self._history_timeout_fired, req)
        return True

    def _retry_history(self) -> None:
        """A history request counts against the message rate limit: a
        ``rate_limited`` notice while one is in flight may be its answer, so it
        is sent again a little later (an extra answer is ignored)."""
        req = self._inflight
        assert req is not None
        if self._history_timer:
            self._history_timer.cancel()
        req["retries"] = req.get("retries", 0) + 1
        if req["retries"] > 3:
            asyncio.ensure_future(self._history_failed())
            return

        def resend() -> None:
            if self._inflight is not req:
                return
            asyncio.ensure_future(self.send_payload(HISTORY_REQUEST, req["d"]))
            self._history_timer = asyncio.get_running_loop().call_later(
                HISTORY_TIMEOUT, self._history_timeout_fired, req)

        self._history_timer = asyncio.get_running_loop().call_later(random.uniform(1.0, 2.0), resend)

    def _history_timeout_fired(self, req: dict) -> None:
        if self._inflight is req:
            asyncio.ensure_future(self._history_failed())

    async def _next(self) -> None:
        if not self._inflight and self._queue:
            await self._request(self._queue.pop(0))

    def _cancel_history(self) -> None:
        if self._history_timer:
            self._history_timer.cancel()
            self._history_timer = None
        self._inflight = None
        self._queue = []
        self._sync = None

    async def _login_refused(self, ws: ClientConnection, notice: dict) -> str | None:
        self._tries += 1
        code = notice.get("code")
        if code == "no_such_room" and self._ident_room:
            # A fresh standalone node does not know the room: log in to the
            # default room, then create it again.
            recreate = self._ident_room
            await self._login(ws, None)
            return recreate
        await self._emit("login_failed", notice)
        transient = code in _TRANSIENT_LOGIN_ERRORS
        if not self._ever_logged_in:
            # The very first login: report it to the caller, do not retry.
            self._login_error = LoginRefused(notice)
            self._closing = True
            self._login_event.set()
        elif transient and self._tries < 3:
            # After a reconnect our previous connection may hold the name for
            # up to a second: try again on this socket.
            await asyncio.sleep(random.uniform(1.0, 2.0))
            await self._login(ws, self.room)
            return None
        elif not transient:
            self._closing = True  # a bad name or token: retrying cannot help
        await ws.close()  # transient: run() reconnects with backoff
        return None


async def _main(argv: list[str]) -> int:
    """A tiny terminal chat: lines you type are sent; events are printed."""
    if len(argv) < 3:
        print("usage: python swiftchat_client.py ws://HOST:PORT/ws NAME [TOKEN]", file=sys.stderr)
        return 2
    chat = SwiftChatClient(argv[1], argv[2], token=argv[3] if len(argv) > 3 else None)
    chat.on("message", lambda m: print(f"[{m['room']}] {m['author']}: {m['content']}"))
    chat.on("notice", lambda n: print(("! " if n.get("error") else "* ") + str(n.get("message"))))
    chat.on("room_state", lambda s: print(f"* room {s['room']}: {s['reason']}"))
    chat.on("shutdown", lambda s: print(f"* server shutting down: {s.get('reason') or 'no reason'}"))
    chat.on("login", lambda c: print(f"* logged in as {c['me']['name']} in {c['me']['room']}"))

    def earlier(h: dict) -> None:
        if h["reason"] == "join" and h["messages"]:
            print(f"--- earlier messages in {h['room']} ---")
            for m in h["messages"]:
                print(f"[{m['room']}] {m['author']}: {m['content']}")
            print("--- end of earlier messages ---")

    chat.on("history", earlier)
    chat.on("resumed", lambda r: None if r["complete"] else print("! some messages could not be recovered"))
    runner = asyncio.create_task(chat.run())

    async def read_stdin() -> None:
        loop = asyncio.get_running_loop()
        try:
            await chat.wait_logged_in(timeout=None)
        except LoginRefused:
            return  # run() reports it
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                await chat.close()
                return
            if line.strip():
                await chat.send(line.rstrip("\n"))

    reader = asyncio.create_task(read_stdin())
    try:
        close = await runner
    except LoginRefused as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        reader.cancel()
    print(f"* disconnected (code {close.code})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv)))
