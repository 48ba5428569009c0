#!/usr/bin/env python3
"""End-to-end test of the compose cluster, run by deploy/e2e.sh.

It drives the real docker-compose.yml (project E2E_PROJECT, already built
images) and talks to the cluster as WebSocket clients through the load
balancer's published port on 127.0.0.1 only. Replica-level facts (which node
holds how many connections, readiness) are read inside the containers with
`docker exec ... busybox wget http://127.0.0.1:8765/...`, and the load
balancer's view from its stats page the same way, so no test traffic leaves
loopback and the project's own containers.

Steps (each must pass, in order):
  up3      `compose up -d`: 3 replicas by default, all UP in HAProxy; through
           the LB /healthz /readyz / answer 200, /metrics and /admin/ 403
  spread   6 clients through the LB land on all 3 replicas (node /metrics)
  chat     a message from each client reaches all clients, same seq
  scale5   `compose up -d --scale swiftchat=5`: 2 new replicas UP in HAProxy
           without restarting it, and 4 new clients land on them
  kill     `docker kill` one replica: its clients reconnect through the LB,
           every client logs in again and CACHE_UPDATE users == N on all
           clients within 30 s
  rolling  deploy/rolling-restart.sh: every replica drains in turn and exits
           0 on SIGTERM; its clients get SHUTDOWN reconnect:true + 1001 and
           come back; no client lost
  scale3   `compose up -d --scale swiftchat=3`: the removed replicas drain,
           HAProxy drops them (3 UP), their clients come back, users == N
  shutdown `compose exec swiftchat swiftchat shutdown --reason ...`: every
           client gets SHUTDOWN reconnect:false + close 1001; every running
           SwiftChat container exits 0 and stays down

Prints one summary line starting with "e2e:" and exits non-zero on failure.
"""

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

PROJECT = os.environ["E2E_PROJECT"]
COMPOSE = os.environ.get("E2E_COMPOSE", "docker-compose").split()
COMPOSE_ARGS = ["-p", PROJECT] + os.environ.get("E2E_COMPOSE_ARGS", "").split()
LB_PORT = int(os.environ["LB_PORT"])
URL = f"ws://127.0.0.1:{LB_PORT}/ws"
SERVICE = "swiftchat"
CONN_METRIC = os.environ.get("E2E_CONN_METRIC", "swiftchat_connections")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERGE_SECS = 30.0
VERBOSE = os.environ.get("E2E_VERBOSE", "0") == "1"

T0 = time.monotonic()


def log(msg):
    print(f"[e2e {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def debug(msg):
    if VERBOSE:
        log(msg)


class StepFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise StepFailed(msg)


# --------------------------------------------------------------------------
# docker / compose helpers (blocking; called through asyncio.to_thread so the
# clients' event loop keeps running)

def run(cmd, check_rc=True, timeout=120):
    debug("$ " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check_rc and p.returncode != 0:
        raise StepFailed(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-800:]}")
    return p


def compose(*args, **kw):
    return run(COMPOSE + COMPOSE_ARGS + list(args), **kw)


def containers(service=SERVICE, running_only=True):
    """Container ids of a service of this project, ordered by container number."""
    p = run(["docker", "ps"] + ([] if running_only else ["-a"]) + [
             "--filter", f"label=com.docker.compose.project={PROJECT}",
             "--filter", f"label=com.docker.compose.service={service}",
             "--format", '{{.ID}} {{.Label "com.docker.compose.container-number"}}'])
    rows = [line.split() for line in p.stdout.splitlines() if line.strip()]
    rows.sort(key=lambda r: int(r[1]) if len(r) > 1 and r[1].isdigit() else 0)
    return [r[0] for r in rows]


def inspect(cid, fmt):
    return run(["docker", "inspect", "-f", fmt, cid]).stdout.strip()


def container_number(cid):
    return int(inspect(cid, '{{ index .Config.Labels "com.docker.compose.container-number" }}'))


def http_in(cid, port, path, check_rc=True):
    """GET http://127.0.0.1:port/path inside the container (busybox wget)."""
    p = run(["docker", "exec", cid, "busybox", "wget", "-q", "-O", "-",
             f"http://127.0.0.1:{port}{path}"], check_rc=check_rc, timeout=30)
    return p


def node_connections(cid):
    text = http_in(cid, 8765, "/metrics").stdout
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(CONN_METRIC) and len(line) > len(CONN_METRIC) and line[len(CONN_METRIC)] in " {":
            total += float(line.rsplit(None, 1)[1])
            seen = True
    check(seen, f"metric {CONN_METRIC} not in /metrics of {cid}")
    return int(total)


def lb_up_servers():
    """Servers HAProxy has UP in backend swiftchat_nodes (its Prometheus
    exporter on the stats port)."""
    lb = containers("lb")
    check(lb, "load balancer container not running")
    p = http_in(lb[0], 8404, "/metrics", check_rc=False)
    if p.returncode != 0:
        return []
    up = []
    for line in p.stdout.splitlines():
        if (line.startswith("haproxy_server_status{") and 'proxy="swiftchat_nodes"' in line
                and 'state="UP"' in line and line.rsplit(None, 1)[1] == "1"):
            up.append(line.split('server="', 1)[1].split('"', 1)[0])
    return up


def lb_server_count():
    return len(lb_up_servers())


def container_ip(cid):
    return inspect(cid, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}").split()[0]


def lb_http(method, path):
    """Status of an HTTP request to the load balancer on 127.0.0.1."""
    req = urllib.request.Request(f"http://127.0.0.1:{LB_PORT}{path}", method=method,
                                 data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def dump_logs():
    path = os.path.join(REPO, "target", f"e2e-{PROJECT}.log")
    try:
        p = compose("logs", "--no-color", "--timestamps", check_rc=False, timeout=60)
        with open(path, "w") as f:
            f.write(p.stdout + p.stderr)
        log(f"compose logs written to {path}")
        for line in (p.stdout.splitlines())[-40:]:
            print("    " + line)
    except Exception as e:  # noqa: BLE001
        log(f"could not collect logs: {e}")


# --------------------------------------------------------------------------
# a chat client that behaves like the protocol asks: reconnect with jitter,
# retry a name that is still taken by a dead node's presence

class Client:
    def __init__(self, name):
        self.name = name
        self.messages = []          # op 0 payloads
        self.shutdowns = []         # op 3 payloads
        self.closes = []            # close codes received from the server (None: no close frame)
        self.logins = 0             # successful logins (1 + reconnects)
        self.users = None           # `users` of the last CACHE_UPDATE
        self.done = False           # SHUTDOWN reconnect:false received, or stopped
        self.errors = []
        self.ws = None
        self.logged_in = asyncio.Event()
        self.cache = asyncio.Event()
        self.new_message = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        backoff = 0.5
        while not self.done:
            delay = None
            try:
                async with connect(URL, open_timeout=5, close_timeout=3, max_size=1 << 20) as ws:
                    self.ws = ws
                    await self._login(ws)
                    backoff = 0.5
                    async for raw in ws:
                        self._handle(json.loads(raw))
            except ConnectionClosed:
                pass
            except (OSError, asyncio.TimeoutError) as e:
                debug(f"{self.name}: connect failed: {e!r}")
            except Exception as e:  # noqa: BLE001
                self.errors.append(repr(e))
                debug(f"{self.name}: {e!r}")
            finally:
                if self.ws is not None:
                    rcvd = self.ws.protocol.close_rcvd
                    self.closes.append(rcvd.code if rcvd is not None else None)
                    self.ws = None
                self.logged_in.clear()
            if self.done:
                break
            if self.shutdowns and self.shutdowns[-1].get("reconnect") and self.closes and self.closes[-1] == 1001:
                delay = random.uniform(0.5, 5.0)       # PROTOCOL.md: 0.5-5 s after SHUTDOWN reconnect:true
            else:
                delay = random.uniform(0.5, 1.0) * backoff
                backoff = min(backoff * 2, 4.0)
            debug(f"{self.name}: reconnect in {delay:.1f}s")
            await asyncio.sleep(delay)

    async def _login(self, ws):
        deadline = time.monotonic() + CONVERGE_SECS
        while True:
            await ws.send(json.dumps({"op": 5, "d": {"name": self.name}}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg.get("op") == 4:
                    self._handle(msg)
                    self.logins += 1
                    self.logged_in.set()
                    return
                if msg.get("op") == 7 and (msg.get("d") or {}).get("error"):
                    code = msg["d"].get("code")
                    if code == "name_taken" and time.monotonic() < deadline:
                        # still held by the presence of a node that died
                        await asyncio.sleep(1.0)
                        break
                    raise StepFailed(f"{self.name}: login refused: {msg}")
                self._handle(msg)

    def _handle(self, msg):
        op, d = msg.get("op"), msg.get("d")
        if op == 0:
            self.messages.append(d)
            self.new_message.set()
        elif op == 4:
            self.users = d.get("users")
            self.cache.set()
        elif op == 3:
            self.shutdowns.append(d)
            if d and d.get("reconnect") is False:
                self.done = True

    async def say(self, text):
        check(self.ws is not None and self.logged_in.is_set(), f"{self.name} not logged in")
        await self.ws.send(json.dumps({"op": 1, "d": {"content": text}}))

    async def cache_users(self, timeout=3.0):
        if self.ws is None or not self.logged_in.is_set():
            return None
        self.cache.clear()
        try:
            await self.ws.send(json.dumps({"op": 6, "d": None}))
            await asyncio.wait_for(self.cache.wait(), timeout)
        except (ConnectionClosed, asyncio.TimeoutError):
            return None
        return self.users

    def got(self, author, content):
        return next((m for m in self.messages if m.get("author") == author and m.get("content") == content), None)

    async def stop(self):
        self.done = True
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:  # noqa: BLE001
                pass
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass


# --------------------------------------------------------------------------
# waiting helpers

async def until(pred, timeout, what, interval=0.5):
    """Polls pred (sync or async) until true; returns the seconds it took."""
    start = time.monotonic()
    last = None
    while True:
        last = pred()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_lb_up(n, timeout=60):
    async def ok():
        up = await asyncio.to_thread(lb_up_servers)
        debug(f"haproxy UP: {up}")
        return len(up) == n and len(await asyncio.to_thread(containers)) == n
    return await until(ok, timeout, f"{n} replicas running and UP in HAProxy", interval=1.0)


async def connect_clients(names, clients):
    new = []
    for name in names:   # one after another: leastconn sees each new connection
        c = Client(name)
        clients.append(c)
        new.append(c)
        try:
            await asyncio.wait_for(c.logged_in.wait(), 15)
        except asyncio.TimeoutError:
            raise StepFailed(f"{name} could not log in through the LB: {c.errors}")
        await asyncio.sleep(0.2)
    return new


async def spread():
    cids = await asyncio.to_thread(containers)
    return {cid: await asyncio.to_thread(node_connections, cid) for cid in cids}


async def chat_round(clients, senders, tag):
    """Each sender posts once; every client must get every post with one seq."""
    texts = []
    for s in senders:
        text = f"{tag} from {s.name} {random.randrange(1 << 30)}"
        await s.say(text)
        texts.append((s.name, text))

    def all_got():
        return all(c.got(a, t) for c in clients for a, t in texts)
    await until(all_got, 10, f"all {len(clients)} clients to receive {len(texts)} messages", interval=0.2)
    for a, t in texts:
        seqs = {c.got(a, t)["seq"] for c in clients}
        check(len(seqs) == 1, f"message {t!r} seen with different seq {seqs}")


async def converge(clients, n, timeout):
    """Every client logged in and its CACHE_UPDATE says users == n."""
    async def ok():
        if not all(c.logged_in.is_set() for c in clients):
            return False
        counts = await asyncio.gather(*(c.cache_users() for c in clients))
        debug(f"users seen: {counts}")
        return all(u == n for u in counts)
    return await until(ok, timeout, f"all {n} clients logged in with CACHE_UPDATE users == {n}", interval=1.0)


# --------------------------------------------------------------------------

async def main():
    passed = []
    notes = []
    clients = []
    step = "setup"
    try:
        # ---- up3
        step = "up3"
        t = time.monotonic()
        await asyncio.to_thread(compose, "up", "-d", "--no-build", timeout=300)
        took = await wait_lb_up(3)
        cids = await asyncio.to_thread(containers)
        check(len(cids) == 3, f"expected 3 replicas by default, got {len(cids)}")
        for method, path, want in [("GET", "/healthz", 200), ("GET", "/readyz", 200), ("GET", "/", 200),
                                   ("GET", "/metrics", 403), ("POST", "/admin/shutdown", 403)]:
            got = await asyncio.to_thread(lb_http, method, path)
            check(got == want, f"{method} {path} through the LB answered {got}, expected {want}")
        passed.append("up3")
        notes.append(f"up3 {time.monotonic() - t:.0f}s")
        log(f"up: 3 replicas UP in HAProxy after {time.monotonic() - t:.1f}s (LB wait {took:.1f}s)")

        # ---- spread
        step = "spread"
        await connect_clients([f"c{i}" for i in range(6)], clients)
        per_node = await spread()
        log(f"connections per replica: {sorted(per_node.values())}")
        check(sum(per_node.values()) == 6, f"replicas count {sum(per_node.values())} connections, expected 6: {per_node}")
        check(all(v >= 1 for v in per_node.values()), f"a replica got no client: {per_node}")
        passed.append("spread")

        # ---- chat across replicas
        step = "chat"
        await chat_round(clients, clients, "hello")
        passed.append("chat")
        log("chat: 6 messages from 3 replicas reached all 6 clients with one seq each")

        # ---- scale to 5
        step = "scale5"
        before = set(cids)
        t = time.monotonic()
        await asyncio.to_thread(compose, "up", "-d", "--no-build", "--no-recreate", "--scale", f"{SERVICE}=5", timeout=300)
        lb_before = (await asyncio.to_thread(containers, "lb"))[0]
        await wait_lb_up(5)
        lb_after = (await asyncio.to_thread(containers, "lb"))[0]
        check(lb_before == lb_after and inspect(lb_after, "{{.RestartCount}}") == "0",
              "load balancer was restarted or recreated by the scale-up")
        scale_took = time.monotonic() - t
        new_cids = [c for c in await asyncio.to_thread(containers) if c not in before]
        check(len(new_cids) == 2, f"expected 2 new replicas, got {new_cids}")
        await connect_clients([f"c{i}" for i in range(6, 10)], clients)
        per_node = await spread()
        log(f"after scale to 5: connections per replica {[per_node[c] for c in sorted(per_node)]}, "
            f"new replicas {[per_node[c] for c in new_cids]}")
        check(all(per_node[c] >= 1 for c in new_cids), f"a new replica took no new connection: {per_node}")
        check(sum(per_node.values()) == 10, f"expected 10 connections in all, got {per_node}")
        await chat_round(clients, [clients[-1], clients[0]], "scaled")
        passed.append("scale5")
        notes.append(f"scale5 {scale_took:.0f}s")

        # ---- kill one replica
        step = "kill"
        cids = await asyncio.to_thread(containers)
        # not container number 1: the plain `compose exec swiftchat` used for the
        # shutdown below runs in number 1
        candidates = [c for c in cids if await asyncio.to_thread(container_number, c) != 1]
        victim = max(candidates, key=lambda c: per_node.get(c, 0))
        k = per_node.get(victim, 0)
        check(k >= 1, "no replica with clients to kill")
        logins_before = {c.name: c.logins for c in clients}
        t = time.monotonic()
        await asyncio.to_thread(run, ["docker", "kill", victim])
        log(f"killed replica {victim[:12]} holding {k} clients")
        took = await converge(clients, len(clients), CONVERGE_SECS)
        moved = [c.name for c in clients if c.logins > logins_before[c.name]]
        check(len(moved) == k, f"expected the {k} clients of the killed replica to reconnect, saw {moved}")
        kill_took = time.monotonic() - t
        check(kill_took <= CONVERGE_SECS, f"convergence took {kill_took:.1f}s > {CONVERGE_SECS}s")
        per_node = await spread()
        check(sum(per_node.values()) == len(clients), f"connections after the kill: {per_node}")
        await chat_round(clients, [next(c for c in clients if c.name in moved)], "after-kill")
        passed.append("kill")
        notes.append(f"kill: {k} clients back, users=={len(clients)} after {kill_took:.1f}s")
        log(f"kill: {k} clients reconnected ({', '.join(moved)}), every client sees users == {len(clients)} "
            f"{kill_took:.1f}s after the kill; replicas now {sorted(per_node.values())}")
        # the killed replica stays down (docker kill counts as a manual stop)
        await wait_lb_up(len(await asyncio.to_thread(containers)))

        # ---- rolling restart
        step = "rolling"
        t = time.monotonic()
        logins_before = {c.name: c.logins for c in clients}
        shut_before = {c.name: len(c.shutdowns) for c in clients}
        p = await asyncio.to_thread(run, ["bash", os.path.join(REPO, "deploy", "rolling-restart.sh")],
                                    True, 600)
        for line in p.stdout.splitlines():
            debug("rolling: " + line)
        restarted = [line for line in p.stdout.splitlines() if line.startswith("restarted ")]
        check(restarted and all("(drain exit 0)" in line for line in restarted),
              f"a node did not exit 0 on SIGTERM: {restarted}")
        took = await converge(clients, len(clients), CONVERGE_SECS)
        for c in clients:
            new = c.shutdowns[shut_before[c.name]:]
            check(new and all(s.get("reconnect") is True for s in new),
                  f"{c.name}: expected SHUTDOWN reconnect:true during the rolling restart, got {new}")
            check(c.logins > logins_before[c.name], f"{c.name} did not reconnect")
            check(1001 in c.closes, f"{c.name}: no close 1001 seen: {c.closes}")
        await chat_round(clients, [clients[0], clients[-1]], "rolled")
        roll_took = time.monotonic() - t
        passed.append("rolling")
        notes.append(f"rolling {roll_took:.0f}s")
        log(f"rolling restart of {len(await asyncio.to_thread(containers))} replicas in {roll_took:.1f}s: "
            f"each exited 0 on SIGTERM, every client got SHUTDOWN reconnect:true + 1001, came back, users == {len(clients)}")
        await wait_lb_up(len(await asyncio.to_thread(containers)))

        # ---- scale down to 3
        step = "scale3"
        t = time.monotonic()
        before = set(await asyncio.to_thread(containers))
        logins_before = {c.name: c.logins for c in clients}
        shut_before = {c.name: len(c.shutdowns) for c in clients}
        await asyncio.to_thread(compose, "up", "-d", "--no-build", "--no-recreate", "--scale", f"{SERVICE}=3", timeout=300)
        await wait_lb_up(3)
        gone = before - set(await asyncio.to_thread(containers))
        check(gone, "scaling to 3 stopped no running replica")
        took = await converge(clients, len(clients), CONVERGE_SECS)
        per_node = await spread()
        check(sum(per_node.values()) == len(clients), f"connections after scale-down: {per_node}")
        # compose removed the containers, so their exit status is gone; that
        # they drained shows in what their clients got: SHUTDOWN
        # reconnect:true (not a dropped socket), then a new login elsewhere
        moved = [c for c in clients if c.logins > logins_before[c.name]]
        check(moved, "no client was on the removed replicas")
        for c in moved:
            new = c.shutdowns[shut_before[c.name]:]
            check(new and new[-1].get("reconnect") is True, f"{c.name}: moved without SHUTDOWN reconnect:true ({new})")
        await chat_round(clients, [clients[1], clients[-2]], "scaled-down")
        passed.append("scale3")
        notes.append(f"scale3 {time.monotonic() - t:.0f}s")
        log(f"scale to 3: {len(gone)} replica(s) drained ({len(moved)} clients got SHUTDOWN reconnect:true "
            f"and came back), HAProxy has 3 UP, "
            f"users == {len(clients)} on all clients; connections {sorted(per_node.values())}")

        # ---- cluster-wide shutdown
        step = "shutdown"
        running = await asyncio.to_thread(containers)
        t = time.monotonic()
        p = await asyncio.to_thread(compose, "exec", "-T", SERVICE, "swiftchat", "shutdown",
                                    "--reason", "e2e cluster shutdown")
        await until(lambda: all(c.done for c in clients), 15, "SHUTDOWN reconnect:false on every client")
        await until(lambda: all(c.ws is None for c in clients), 15, "every client closed")
        for c in clients:
            last = c.shutdowns[-1]
            check(last.get("reconnect") is False and last.get("reason") == "e2e cluster shutdown",
                  f"{c.name}: last SHUTDOWN {last}")
            check(c.closes and c.closes[-1] == 1001, f"{c.name}: close codes {c.closes}, expected 1001 last")

        def all_exited():
            return all(inspect(cid, "{{.State.Status}}") == "exited" for cid in running)
        await until(all_exited, 20, "every SwiftChat container to exit")
        codes = {cid[:12]: inspect(cid, "{{.State.ExitCode}}") for cid in running}
        check(all(v == "0" for v in codes.values()), f"exit codes {codes}")
        await asyncio.sleep(3)
        check(all(inspect(cid, "{{.State.Status}}") == "exited" for cid in running),
              "a SwiftChat container was restarted after the shutdown")
        passed.append("shutdown")
        notes.append(f"shutdown: {len(clients)} clients op3+1001, {len(running)} exit 0 in {time.monotonic() - t:.1f}s")
        log(f"shutdown: {len(clients)} clients got SHUTDOWN reconnect:false + 1001; "
            f"{len(running)} containers exited 0 in {time.monotonic() - t:.1f}s")
    except StepFailed as e:
        log(f"FAILED at {step}: {e}")
        await asyncio.to_thread(dump_logs)
        print(f"e2e: FAIL at {step} after {time.monotonic() - T0:.0f}s; passed: {' '.join(passed) or 'none'}; {e}",
              flush=True)
        print(f"E2E_STEPS {len(passed)} 1", flush=True)
        return 1
    finally:
        for c in clients:
            await c.stop()
    print(f"E2E_STEPS {len(passed)} 0", flush=True)
    print(f"e2e: PASS {len(passed)}/{len(passed)} steps ({' '.join(passed)}) with {len(clients)} clients in "
          f"{time.monotonic() - T0:.0f}s; " + "; ".join(notes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
