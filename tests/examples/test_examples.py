"""The example clients against a real node.

- examples/python/swiftchat_client.py, in-process with asyncio;
- examples/js/swiftchat.js, in Node (`node --experimental-websocket`, through
  js_client_driver.mjs, which prints the client's events as JSON lines).

Each: log in, chat both ways, commands and their answers, every op reaching
its callback, a drain (SHUTDOWN reconnect: true) followed by a reconnect that
restores name and room, no reconnect after close code 1008 or after a
cluster-wide shutdown, and a refused login. History: the room's latest
messages on login, older ones on request, and after a dropped connection
(cut by a TCP proxy, the node keeps running) a resume that delivers every
message sent meanwhile exactly once, in seq order, while messages keep
coming.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect as sync_connect

from swiftchat_node import ROOT, SHUTDOWN_KEY, Node
from tcp_proxy import TcpProxy

sys.path.insert(0, str(ROOT / "examples" / "python"))

import swiftchat_client as sc  # noqa: E402

WAIT = 20.0  # seconds; generous
NODE_JS = shutil.which("node")


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path).start()
    yield n
    n.stop()


# ------------------------------------------------------------------ helpers
class Peer:
    """A plain WebSocket user (no example code), to talk to the clients under test."""

    def __init__(self, node: Node, name: str, room: str | None = None):
        self.ws = sync_connect(node.ws_url, open_timeout=10, legacy=True)
        self.ws.send(json.dumps({"op": 5, "d": {"name": name, "room": room}}))
        self.seen: list[dict] = []
        first = self.expect(lambda p: p["op"] in (4, 7))
        assert first["op"] == 4, first

    def send(self, content: str) -> None:
        self.ws.send(json.dumps({"op": 1, "d": {"content": content}}))

    def expect(self, pred, what: str = "payload", timeout: float = WAIT) -> dict:
        for p in self.seen:
            if pred(p):
                self.seen.remove(p)
                return p
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"peer: no {what} within {timeout} s; seen {self.seen[-10:]}")
            try:
                p = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                continue
            if pred(p):
                return p
            self.seen.append(p)

    def expect_message(self, author: str, content: str, room: str | None = None) -> dict:
        return self.expect(lambda p: p["op"] == 0 and p["d"]["author"] == author and p["d"]["content"] == content
                           and (room is None or p["d"]["room"] == room), f"message {author}: {content}")

    def close(self) -> None:
        self.ws.close()


class Recorder:
    """Collects a Python client's events, for asserting from asyncio code."""

    def __init__(self, client: sc.SwiftChatClient):
        self.events: list[tuple[str, object]] = []
        self.sources: list[str | None] = []
        self.changed = asyncio.Event()
        for event in ("message", "room_state", "shutdown", "cache_update", "notice", "login",
                      "login_failed", "close", "payload", "history", "resumed"):
            client.on(event, self._make(event))

    def _make(self, event):
        def record(*args):
            # A message comes with {"source": ...}: kept apart, in `sources`.
            if event == "message":
                self.sources.append(args[1]["source"] if len(args) > 1 else None)
            self.events.append((event, args[0] if len(args) == 1 or event == "message" else args))
            self.changed.set()
        return record

    def of(self, event: str) -> list:
        return [d for e, d in self.events if e == event]

    async def wait(self, pred, what: str, timeout: float = WAIT, since: int = 0):
        """Waits for an event (among those from index `since` on) matching pred."""
        deadline = time.monotonic() + timeout
        while True:
            for e, d in self.events[since:]:
                if pred(e, d):
                    return d
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {what} within {timeout} s; events: {self.events[-12:]}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass


def in_thread(fn, *args):
    """Runs a blocking helper (a Peer call) off the event loop."""
    return asyncio.to_thread(fn, *args)


# ------------------------------------------------------ reconnect policy (pure)
def test_python_reconnect_policy_follows_the_close_code_table():
    for code in (1008, 1009, 4003):
        assert sc.reconnect_delay(code, None, 0) is None
    assert sc.reconnect_delay(1001, {"reason": None, "reconnect": False}, 0) is None
    for _ in range(200):
        assert 0.5 <= sc.reconnect_delay(1001, {"reconnect": True}, 0) <= 5.0
        assert sc.reconnect_delay(4008, None, 0) >= 5.0
        d = sc.reconnect_delay(1006, None, 3)  # 8 s, jittered to [4, 8]
        assert 4.0 <= d <= 8.0
        assert sc.reconnect_delay(4009, None, 20) <= 30.0
    delays = {round(sc.reconnect_delay(1006, None, 4), 3) for _ in range(50)}
    assert len(delays) > 10, "jitter: delays differ between clients"


@pytest.mark.skipif(NODE_JS is None, reason="node is not installed")
def test_js_reconnect_policy_follows_the_close_code_table():
    script = """
    import { reconnectDelay, NO_RECONNECT } from '%s';
    const out = { never: [1008, 1009, 4003].map((c) => reconnectDelay(c, null, 0)),
      finalShutdown: reconnectDelay(1001, { reconnect: false }, 0), spread: [], flood: [], drop: [], cap: [] };
    for (let i = 0; i < 200; i++) {
      out.spread.push(reconnectDelay(1001, { reconnect: true }, 0));
      out.flood.push(reconnectDelay(4008, null, 0));
      out.drop.push(reconnectDelay(1006, null, 3));
      out.cap.push(reconnectDelay(4009, null, 20));
    }
    out.codes = NO_RECONNECT;
    console.log(JSON.stringify(out));
    """ % (ROOT / "examples" / "js" / "swiftchat.js").as_uri()
    r = subprocess.run([NODE_JS, "--input-type=module", "-e", script], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["never"] == [None, None, None] and out["finalShutdown"] is None
    assert sorted(out["codes"]) == [1008, 1009, 4003]
    assert all(500 <= d <= 5000 for d in out["spread"])
    assert all(d >= 5000 for d in out["flood"])
    assert all(4000 <= d <= 8000 for d in out["drop"])
    assert all(d <= 30000 for d in out["cap"])
    assert len(set(out["drop"])) > 10


# ----------------------------------------------------------- Python client
def test_python_client_chats_runs_commands_and_dispatches_every_op(node):
    async def scenario():
        alice = sc.SwiftChatClient(node.ws_url, "alice")
        rec = Recorder(alice)
        task = asyncio.create_task(alice.run())
        cache = await alice.wait_logged_in()
        assert cache["me"] == {"name": "alice", "room": "general"}
        assert alice.prefix == "\\"
        assert rec.of("login") and rec.of("cache_update")

        bob = await in_thread(Peer, node, "bob")
        await rec.wait(lambda e, d: e == "notice" and d["code"] == "joined" and d["user"] == "bob", "bob joined")

        assert await alice.send("hello bob")
        await in_thread(bob.expect_message, "alice", "hello bob", "general")
        await in_thread(bob.send, "hi alice")
        msg = await rec.wait(lambda e, d: e == "message" and d["author"] == "bob", "bob's message")
        assert msg["content"] == "hi alice" and msg["room"] == "general"
        assert isinstance(msg["seq"], int) and isinstance(msg["ts"], int) and msg["id"]

        # Commands: \users answers with an info notice; \join with a CACHE_UPDATE.
        await alice.command("users")
        info = await rec.wait(lambda e, d: e == "notice" and d["code"] == "info", "users answer")
        assert "alice" in info["message"] and "bob" in info["message"]
        await alice.command("join", "ops")
        await rec.wait(lambda e, d: e == "room_state" and d == {"available": True, "room": "ops",
                                                               "reason": "created"}, "ROOM_STATE created")
        await rec.wait(lambda e, d: e == "cache_update" and d["me"]["room"] == "ops", "moved to ops")
        assert alice.room == "ops"
        await alice.command("lock", "s3cret")
        await rec.wait(lambda e, d: e == "room_state" and d["reason"] == "locked", "ROOM_STATE locked")
        n = len(rec.of("cache_update"))
        assert await alice.request_cache()
        await rec.wait(lambda e, d: len(rec.of("cache_update")) > n, "CACHE_UPDATE answering op 6")
        # A wrong shutdown key is refused with a notice.
        await alice.shutdown_cluster("wrong-key")
        await rec.wait(lambda e, d: e == "notice" and d["code"] == "forbidden" and d["error"], "forbidden")
        # Every payload also reaches the catch-all callback.
        ops = {d[0] for d in rec.of("payload")}
        assert {0, 2, 4, 7} <= ops

        # A cluster-wide shutdown: SHUTDOWN reconnect false, close 1001, no reconnect.
        assert await in_thread(node.shutdown_http, "Maintenance") == 202
        close = await asyncio.wait_for(task, WAIT)
        assert close.code == 1001 and not close.reconnect
        assert rec.of("shutdown") == [{"reason": "Maintenance", "reconnect": False}]
        assert len(rec.of("login")) == 1
        bob.close()

    asyncio.run(scenario())
    assert node.wait(WAIT) == 0


def test_python_client_reconnects_after_a_drain_and_restores_name_and_room(tmp_path):
    node = Node(tmp_path).start()
    node2 = None

    async def scenario():
        nonlocal node2
        client = sc.SwiftChatClient(node.ws_url, "rita")
        rec = Recorder(client)
        task = asyncio.create_task(client.run())
        await client.wait_logged_in()
        await client.command("join", "ops")
        await rec.wait(lambda e, d: e == "cache_update" and d["me"]["room"] == "ops", "in ops")

        node.terminate()  # drain: SHUTDOWN reconnect true, close 1001
        close = await rec.wait(lambda e, d: e == "close", "close after drain")
        assert rec.of("shutdown")[0]["reconnect"] is True
        assert close.code == 1001 and close.reconnect and 0.5 <= close.delay <= 5.0
        assert await in_thread(node.wait, WAIT) == 0
        mark = len(rec.events)
        node2 = await in_thread(lambda: Node(tmp_path, port=node.port).start())

        await rec.wait(lambda e, d: e == "login", "second login", timeout=60, since=mark)
        await rec.wait(lambda e, d: e == "cache_update" and d["me"]["room"] == "ops", "back in ops", since=mark)
        assert client.name == "rita" and client.room == "ops"
        peer = await in_thread(Peer, node2, "pat", "ops")
        await client.send("back again")
        await in_thread(peer.expect_message, "rita", "back again", "ops")
        peer.close()
        await client.close()
        close = await asyncio.wait_for(task, WAIT)
        assert not close.reconnect

    try:
        asyncio.run(scenario())
    finally:
        node.stop()
        if node2:
            node2.stop()


def test_python_client_does_not_reconnect_after_1008(node):
    async def scenario():
        client = sc.SwiftChatClient(node.ws_url, "noisy")
        rec = Recorder(client)
        task = asyncio.create_task(client.run())
        await client.wait_logged_in()
        for _ in range(11):  # more than 10 bad payloads: close 1008
            await client.send_raw("this is not json")
        close = await asyncio.wait_for(task, WAIT)
        assert close.code == 1008 and not close.reconnect
        bad = [d for d in rec.of("notice") if d["code"] == "bad_payload"]
        assert len(bad) >= 10
        await asyncio.sleep(1.5)
        assert len(rec.of("login")) == 1

    asyncio.run(scenario())


def test_python_client_reports_a_refused_login(node):
    async def scenario():
        holder = sc.SwiftChatClient(node.ws_url, "dup")
        holder_task = asyncio.create_task(holder.run())
        await holder.wait_logged_in()
        client = sc.SwiftChatClient(node.ws_url, "DUP")
        rec = Recorder(client)
        with pytest.raises(sc.LoginRefused) as err:
            await asyncio.wait_for(client.run(), WAIT)
        assert err.value.notice["code"] == "name_taken"
        assert rec.of("login_failed")[0]["code"] == "name_taken"
        await holder.close()
        await asyncio.wait_for(holder_task, WAIT)

    asyncio.run(scenario())


# --------------------------------------------------------------- JS client
class JsClient:
    """examples/js/swiftchat.js in Node, through js_client_driver.mjs."""

    def __init__(self, node: Node | TcpProxy, name: str, room: str | None = None,
                 history_limit: int | None = None):
        args = [NODE_JS, "--experimental-websocket", "--no-warnings",
                str(Path(__file__).with_name("js_client_driver.mjs")), node.ws_url, name]
        if room or history_limit:
            args.append(room or "")
        if history_limit:
            args.append(str(history_limit))
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                try:
                    self.events.put(json.loads(line))
                except ValueError:
                    self.events.put({"event": "stdout", "data": line})
        self.events.put({"event": "eof", "data": None})

    def do(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str, pred=lambda d: True, timeout: float = WAIT) -> object:
        for e in self.seen:
            if not e.get("_used") and e["event"] == event and pred(e["data"]):
                e["_used"] = True
                return e["data"]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"js: no {event} within {timeout} s; seen {self.seen[-12:]}")
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(e)
            if e["event"] == event and pred(e["data"]):
                e["_used"] = True
                return e["data"]
            if e["event"] == "eof" and event != "eof":
                pytest.fail(f"js: exited before {event}; seen {self.seen[-12:]}; "
                            f"stderr: {self.proc.stderr.read()}")

    def count(self, event: str) -> int:
        return sum(1 for e in self.seen if e["event"] == event)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _node_has_websocket() -> bool:
    if NODE_JS is None:
        return False
    r = subprocess.run([NODE_JS, "--experimental-websocket", "-e",
                        "process.exit(typeof WebSocket === 'function' ? 0 : 1)"], capture_output=True)
    return r.returncode == 0


needs_node = pytest.mark.skipif(not _node_has_websocket(),
                                reason="needs Node >= 20 with --experimental-websocket")


@needs_node
def test_js_client_chats_runs_commands_and_dispatches_every_op(node):
    js = JsClient(node, "jsbot")
    try:
        login = js.expect("login")
        assert login["me"] == {"name": "jsbot", "room": "general"}
        assert js.expect("connected") == {"prefix": "\\", "room": "general"}
        peer = Peer(node, "pyuser")
        js.expect("notice", lambda d: d["code"] == "joined" and d["user"] == "pyuser")

        js.do(send="hello from node")
        peer.expect_message("jsbot", "hello from node", "general")
        peer.send("hello from python")
        msg = js.expect("message", lambda d: d["author"] == "pyuser")
        assert msg["content"] == "hello from python" and msg["room"] == "general" and msg["seq"] >= 1

        js.do(command=["users"])
        info = js.expect("notice", lambda d: d["code"] == "info")
        assert "jsbot" in info["message"] and "pyuser" in info["message"]
        js.do(command=["join", "nodes"])
        js.expect("room_state", lambda d: d == {"available": True, "room": "nodes", "reason": "created"})
        js.expect("cache_update", lambda d: d["me"]["room"] == "nodes")
        js.do(cache=True)
        js.expect("cache_update", lambda d: d["me"]["room"] == "nodes")
        js.do(shutdown=["wrong-key", "nope"])
        js.expect("notice", lambda d: d["code"] == "forbidden" and d["error"] is True)

        assert node.shutdown_http("Upgrade") == 202
        assert js.expect("shutdown") == {"reason": "Upgrade", "reconnect": False}
        close = js.expect("close")
        assert close["code"] == 1001 and close["reconnect"] is False
        assert js.proc.wait(WAIT) == 0
        assert js.count("login") == 1, "no reconnect after a cluster-wide shutdown"
        peer.close()
    finally:
        js.stop()
    assert node.wait(WAIT) == 0


@needs_node
def test_js_client_reconnects_after_a_drain_and_restores_name_and_room(tmp_path):
    node = Node(tmp_path).start()
    node2 = None
    js = JsClient(node, "jsrita")
    try:
        js.expect("login")
        js.do(command=["join", "ops"])
        js.expect("cache_update", lambda d: d["me"]["room"] == "ops")
        node.terminate()
        assert js.expect("shutdown")["reconnect"] is True
        close = js.expect("close")
        assert close["code"] == 1001 and close["reconnect"] is True and 500 <= close["delay"] <= 5000
        assert node.wait(WAIT) == 0
        node2 = Node(tmp_path, port=node.port).start()
        login = js.expect("login", timeout=60)
        assert login["me"]["name"] == "jsrita"
        js.expect("cache_update", lambda d: d["me"]["room"] == "ops")
        peer = Peer(node2, "pat", "ops")
        js.do(send="back again")
        peer.expect_message("jsrita", "back again", "ops")
        peer.close()
        js.do(close=True)
        assert js.expect("close")["reconnect"] is False
        assert js.proc.wait(WAIT) == 0
    finally:
        js.stop()
        node.stop()
        if node2:
            node2.stop()


@needs_node
def test_js_client_does_not_reconnect_after_1008(node):
    js = JsClient(node, "jsnoisy")
    try:
        js.expect("login")
        for _ in range(11):
            js.do(raw="this is not json")
        close = js.expect("close")
        assert close["code"] == 1008 and close["reconnect"] is False
        assert js.proc.wait(WAIT) == 0
        assert js.count("open") == 1, "no reconnect after 1008"
    finally:
        js.stop()


@needs_node
def test_js_client_reports_a_refused_login(node):
    peer = Peer(node, "taken")
    js = JsClient(node, "TAKEN")
    try:
        failed = js.expect("connect_failed")
        assert failed["notice"]["code"] == "name_taken"
        js.expect("login_failed", lambda d: d["code"] == "name_taken")
        assert js.proc.wait(WAIT) == 1
    finally:
        js.stop()
        peer.close()


# ------------------------------------------------------------------ history
def history_node(tmp_path) -> Node:
    """A node whose rate limit lets a test post quickly, with deep history."""
    return Node(tmp_path, SWIFTCHAT_LIMITS__MESSAGES_PER_SECOND="1000",
                SWIFTCHAT_LIMITS__MESSAGE_BURST="1000", SWIFTCHAT_HISTORY__MAX_MESSAGES="1000").start()


def post(peer: Peer, name: str, contents: list[str]) -> int:
    """Posts the messages; returns the seq of the last once it is accepted."""
    for c in contents:
        peer.send(c)
    return peer.expect_message(name, contents[-1])["d"]["seq"]


class Chatter(threading.Thread):
    """Posts bursts of messages from its own connection until stopped."""

    def __init__(self, node: Node, name: str):
        super().__init__(daemon=True)
        self.peer = Peer(node, name)
        self.name = name
        self.stop = threading.Event()
        self.sent = 0

    def run(self):
        while not self.stop.is_set():
            post(self.peer, self.name, [f"during {self.sent + k}" for k in range(1, 6)])
            self.sent += 5
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        self.join(WAIT)
        self.peer.close()


def test_python_client_history_on_join_older_pages_and_resume_after_a_drop(tmp_path):
    node = history_node(tmp_path)
    proxy = TcpProxy(node.port)
    pat = Peer(node, "pat")

    async def scenario():
        assert await in_thread(post, pat, "pat", [f"old {i}" for i in range(1, 31)]) == 30
        client = sc.SwiftChatClient(proxy.ws_url, "hana", history_limit=20)
        rec = Recorder(client)
        task = asyncio.create_task(client.run())
        await client.wait_logged_in()

        # On login: the room's latest messages, as 'history' (reason join).
        joined = await rec.wait(lambda e, d: e == "history", "history on join")
        assert joined["reason"] == "join" and joined["room"] == "general" and joined["complete"]
        assert [m["seq"] for m in joined["messages"]] == list(range(11, 31))
        assert joined["messages"][0]["content"] == "old 11" and joined["last_seq"] == 30
        assert client.position == {"room": "general", "epoch": joined["epoch"], "seq": 30}
        assert client.oldest_seq == 11
        # Older ones on request, then nothing older is left.
        assert await client.load_older()
        older = await rec.wait(lambda e, d: e == "history" and d["reason"] == "older", "older page")
        assert [m["seq"] for m in older["messages"]] == list(range(1, 11))
        assert client.oldest_seq == 1 and not await client.load_older()
        # A request of one's own.
        assert await client.request_history(after=27)
        asked = await rec.wait(lambda e, d: e == "history" and d["reason"] == "requested", "own request")
        assert [m["seq"] for m in asked["messages"]] == [28, 29, 30]
        assert rec.of("message") == [], "history is not delivered as 'message'"

        await in_thread(post, pat, "pat", ["live 1"])
        live = await rec.wait(lambda e, d: e == "message", "a live message")
        assert live["seq"] == 31 and rec.sources == ["live"]

        # The connection drops; 150 messages are sent meanwhile (two pages of
        # history), and more keep coming while the client resumes.
        mark = len(rec.events)
        proxy.cut()
        close = await rec.wait(lambda e, d: e == "close", "close after the drop", since=mark)
        assert close.reconnect
        await in_thread(post, pat, "pat", [f"missed {i}" for i in range(1, 151)])
        chatter = await in_thread(Chatter, node, "cy")
        chatter.start()
        proxy.restore()
        try:
            resumed = await rec.wait(lambda e, d: e == "resumed", "resumed", timeout=60, since=mark)
            await asyncio.sleep(0.5)
        finally:
            await in_thread(chatter.finish)
        last = await in_thread(post, pat, "pat", ["after"])
        await rec.wait(lambda e, d: e == "message" and d["content"] == "after", "after the resume")
        assert resumed["room"] == "general" and resumed["complete"] and resumed["missed"] >= 150
        seqs = [m["seq"] for m in rec.of("message")]
        assert seqs == list(range(31, last + 1)), \
            f"each once, in order: twice {sorted({s for s in seqs if seqs.count(s) > 1})}, " \
            f"missing {sorted(set(range(31, last + 1)) - set(seqs))}"
        assert "history" in rec.sources and chatter.sent >= 5
        assert len(rec.of("login")) == 2 and proxy.accepted >= 2
        await client.close()
        await asyncio.wait_for(task, WAIT)

    try:
        asyncio.run(scenario())
    finally:
        pat.close()
        proxy.close()
        node.stop()


@needs_node
def test_js_client_history_on_join_older_pages_and_resume_after_a_drop(tmp_path):
    node = history_node(tmp_path)
    proxy = TcpProxy(node.port)
    pat = Peer(node, "pat")
    js = None
    try:
        assert post(pat, "pat", [f"old {i}" for i in range(1, 31)]) == 30
        js = JsClient(proxy, "jshana", history_limit=20)
        js.expect("login")
        joined = js.expect("history")
        assert joined["reason"] == "join" and joined["complete"] and joined["lastSeq"] == 30
        assert [m["seq"] for m in joined["messages"]] == list(range(11, 31))
        js.do(older=None)
        older = js.expect("history", lambda d: d["reason"] == "older")
        assert [m["seq"] for m in older["messages"]] == list(range(1, 11))
        js.do(history={"after": 27})
        asked = js.expect("history", lambda d: d["reason"] == "requested")
        assert [m["seq"] for m in asked["messages"]] == [28, 29, 30]

        post(pat, "pat", ["live 1"])
        live = js.expect("message")
        assert live["seq"] == 31 and live["_source"] == "live"

        proxy.cut()
        assert js.expect("close")["reconnect"] is True
        post(pat, "pat", [f"missed {i}" for i in range(1, 151)])
        chatter = Chatter(node, "cy")
        chatter.start()
        proxy.restore()
        try:
            resumed = js.expect("resumed", timeout=60)
            time.sleep(0.5)
        finally:
            chatter.finish()
        last = post(pat, "pat", ["after"])
        js.expect("message", lambda d: d["content"] == "after")
        assert resumed["complete"] is True and resumed["missed"] >= 150
        msgs = [e["data"] for e in js.seen if e["event"] == "message"]
        seqs = [m["seq"] for m in msgs]
        assert seqs == list(range(31, last + 1)), \
            f"each once, in order: twice {sorted({s for s in seqs if seqs.count(s) > 1})}, " \
            f"missing {sorted(set(range(31, last + 1)) - set(seqs))}"
        assert {m["_source"] for m in msgs} == {"live", "history"}
        assert js.count("login") == 2
        js.do(close=True)
        assert js.proc.wait(WAIT) == 0
    finally:
        if js:
            js.stop()
        pat.close()
        proxy.close()
        node.stop()
