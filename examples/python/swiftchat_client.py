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

MESSAGE, MESSAGE_CREATE, ROOM_STATE, SHUTDOWN, CACHE_UPDATE, IDENTIFY, CACHE_REQUEST, NOTICE = range(8)

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
                 backoff_base: float = 1.0, backoff_max: float = 30.0):
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

    # ------------------------------------------------------------------ events
    def on(self, event: str, callback: Callable) -> Callable[[], None]:
        """Calls ``callback`` on ``event``; returns a function that unsubscribes."""
        self._handlers.setdefault(event, []).append(callback)
        return lambda: self._handlers[event].remove(callback)

    async def _emit(self, event: str, *args: Any) -> None:
        for callback in list(self._handlers.get(event, ())):
            try:
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
            if isinstance(me.get("room"), str):
                if me["room"] != self.room:
                    self.password = None
                self.room = me["room"]
            if not self.logged_in:
                self.logged_in = True
                self._ever_logged_in = True
                self._attempt = 0
                self._login_event.set()
                await self._emit("cache_update", d)
                await self._emit("login", d)
                if recreate:
                    await self.command("join", recreate)
                return None
        if op == NOTICE and isinstance(d, dict) and d.get("error") and not self.logged_in:
            await self._emit("notice", d)
            return await self._login_refused(ws, d)
        event = _EVENT_OF_OP.get(op) if isinstance(op, int) else None
        if event:
            await self._emit(event, d)
        return recreate

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
