#!/usr/bin/env python3
"""End-to-end test of the Redis Cluster override, run by deploy/e2e.sh.

It drives docker-compose.yml + docker-compose.cluster.yml (project
E2E_PROJECT, images already built): six Redis nodes (3 primaries, 3
replicas) formed by the one-shot redis-cluster-init, 3 SwiftChat replicas
with SWIFTCHAT_REDIS__CLUSTER=true, HAProxy in front. Clients talk through
the load balancer on 127.0.0.1 only; Redis is read with `docker exec ...
redis-cli` inside its containers. The client and helpers are those of
deploy/e2e_client.py.

Steps (each must pass, in order):
  rc-up        `compose up -d`: redis-cluster-init exited 0, every Redis node
               says cluster_state:ok with 3 primaries and 3 replicas, every
               replica's link to its primary is up, the 3 SwiftChat
               replicas are UP in HAProxy
  rc-chat      6 clients through the LB land on all 3 replicas; a message
               from each reaches all 6 with one seq
  rc-failover  `docker kill` of the primary that owns the slot of the room's
               channel (room `general`; the control slot {global} is
               reported too): a probe message is posted every 0.5 s by a
               client still logged in; within 60 s a probe posted after the
               kill reaches all 6 clients, the dead primary's replica owns
               the slot, cluster_state:ok; then every client is logged in
               (kept its connection or reconnected), CACHE_UPDATE says
               users == 6, and a message from each reaches all 6 with one seq
  rc-rejoin    `docker start` of the killed node: it comes back as a replica
               with its replication link up, cluster_state:ok everywhere, and
               chat still reaches everyone
  rc-shutdown  `compose exec swiftchat swiftchat shutdown --reason ...` (published
               through the cluster): every client gets SHUTDOWN
               reconnect:false + close 1001, every SwiftChat container exits 0

Prints one summary line starting with "e2e-cluster:" and "E2E_STEPS ok bad";
exits non-zero on failure.
"""

import asyncio
import os
import random
import sys
import time

import e2e_client as e
from e2e_client import StepFailed, check, log, until

ROOM = "general"
REDIS_SERVICES = ["redis"] + [f"redis-{i}" for i in range(2, 7)]
FAILOVER_SECS = float(os.environ.get("E2E_FAILOVER_SECS", "60"))


class Client(e.Client):
    """e2e_client's Client, also counting NOTICEs (op 7) by code."""

    def __init__(self, name):
        self.notices = {}
        super().__init__(name)

    def _handle(self, msg):
        if msg.get("op") == 7:
            code = (msg.get("d") or {}).get("code") or "?"
            self.notices[code] = self.notices.get(code, 0) + 1
        super()._handle(msg)


def redis_containers():
    """{service: container id} of the running Redis nodes."""
    out = {}
    for s in REDIS_SERVICES:
        c = e.containers(s)
        if c:
            out[s] = c[0]
    return out


def rcli(cid, *args, check_rc=True):
    return e.run(["docker", "exec", cid, "redis-cli"] + list(args), check_rc=check_rc, timeout=30).stdout


def cluster_nodes(cid):
    """Parsed CLUSTER NODES as seen by one node: dicts with id, addr (ip:port),
    flags (set), primary (its primary's id or None), slots [(lo, hi)]."""
    rows = []
    for line in rcli(cid, "cluster", "nodes").splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        slots = []
        for s in f[8:]:
            if s.startswith("["):
                continue   # a slot being migrated
            lo, _, hi = s.partition("-")
            slots.append((int(lo), int(hi or lo)))
        rows.append({"id": f[0], "addr": f[1].split("@", 1)[0], "flags": set(f[2].split(",")),
                     "primary": None if f[3] == "-" else f[3], "slots": slots})
    return rows


def owner_of(rows, slot):
    for r in rows:
        if "master" in r["flags"] and "fail" not in r["flags"] and any(lo <= slot <= hi for lo, hi in r["slots"]):
            return r
    return None


def cluster_info(cid):
    text = rcli(cid, "cluster", "info", check_rc=False)
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def all_ok(cids):
    for cid in cids:
        i = cluster_info(cid)
        if i.get("cluster_state") != "ok" or i.get("cluster_slots_ok") != "16384":
            return False
    return True


def ip_to_service():
    return {e.container_ip(cid): s for s, cid in redis_containers().items()}


async def main():
    passed, notes, clients = [], [], []
    step = "setup"
    try:
        # ---- rc-up
        step = "rc-up"
        t = time.monotonic()
        await asyncio.to_thread(e.compose, "up", "-d", "--no-build", timeout=300)
        init = await asyncio.to_thread(e.containers, "redis-cluster-init", False)
        check(init, "no redis-cluster-init container")
        check(e.inspect(init[0], "{{.State.Status}} {{.State.ExitCode}}") == "exited 0",
              f"redis-cluster-init: {e.inspect(init[0], '{{.State.Status}} {{.State.ExitCode}}')}")
        reds = await asyncio.to_thread(redis_containers)
        check(len(reds) == 6, f"expected 6 Redis nodes running, got {sorted(reds)}")
        check(await asyncio.to_thread(all_ok, reds.values()), "cluster_state not ok on every node")
        rows = await asyncio.to_thread(cluster_nodes, reds["redis"])
        prim = [r for r in rows if "master" in r["flags"]]
        repl = [r for r in rows if "slave" in r["flags"]]
        check(len(prim) == 3 and len(repl) == 3, f"expected 3 primaries and 3 replicas, got {len(prim)}/{len(repl)}")
        # redis-cluster-init waits for this; a replica that never synced
        # could not take over below
        for s, cid in reds.items():
            r = rcli(cid, "info", "replication")
            check("role:master" in r or "master_link_status:up" in r, f"{s}: replica link not up")
        await e.wait_lb_up(3, timeout=90)
        passed.append("rc-up")
        notes.append(f"rc-up {time.monotonic() - t:.0f}s")
        log(f"rc-up: 6 Redis nodes (3 primaries, 3 replicas) cluster_state:ok, 3 SwiftChat replicas UP "
            f"after {time.monotonic() - t:.1f}s")

        # ---- rc-chat
        step = "rc-chat"
        orig_connect = e.Client
        e.Client = Client          # connect_clients builds e.Client
        try:
            await e.connect_clients([f"r{i}" for i in range(6)], clients)
        finally:
            e.Client = orig_connect
        per_node = await e.spread()
        log(f"connections per replica: {sorted(per_node.values())}")
        check(sum(per_node.values()) == 6 and all(v >= 1 for v in per_node.values()),
              f"6 clients not spread over 3 replicas: {per_node}")
        await e.chat_round(clients, clients, "rc-hello")
        passed.append("rc-chat")
        log("rc-chat: 6 messages from 3 replicas reached all 6 clients with one seq each")

        # ---- rc-failover
        step = "rc-failover"
        some = reds["redis-3"]
        room_slot = int(rcli(some, "cluster", "keyslot", ROOM).strip())
        ctl_slot = int(rcli(some, "cluster", "keyslot", "global").strip())
        rows = await asyncio.to_thread(cluster_nodes, some)
        victim_row = owner_of(rows, room_slot)
        check(victim_row is not None, f"no primary owns slot {room_slot}")
        ip2svc = await asyncio.to_thread(ip_to_service)
        victim_svc = ip2svc.get(victim_row["addr"].split(":")[0])
        check(victim_svc, f"no container has the address {victim_row['addr']}")
        victim = reds[victim_svc]
        ctl_row = owner_of(rows, ctl_slot)
        both = ctl_row is not None and ctl_row["id"] == victim_row["id"]
        survivor = next(cid for s, cid in reds.items() if s != victim_svc)
        logins_before = {c.name: c.logins for c in clients}
        notices_before = {c.name: dict(c.notices) for c in clients}
        t_kill = time.monotonic()
        await asyncio.to_thread(e.run, ["docker", "kill", victim])
        log(f"killed Redis primary {victim_svc} ({victim_row['addr']}): owner of slot {room_slot} (room {ROOM}'s "
            f"channel and messages){' and of the control slot ' + str(ctl_slot) if both else ''}")
        # Probes: every 0.5 s one client that is logged in posts; done when a
        # probe posted after the kill has reached all clients.
        probes = []   # (sent_at, author, text)
        resumed = None
        n = 0
        while resumed is None:
            now = time.monotonic()
            check(now - t_kill <= FAILOVER_SECS,
                  f"no message reached all clients within {FAILOVER_SECS:.0f}s of the kill "
                  f"({len(probes)} probes sent; logged in: {[c.name for c in clients if c.logged_in.is_set()]})")
            up = [c for c in clients if c.logged_in.is_set() and c.ws is not None]
            if up:
                s = up[n % len(up)]
                text = f"probe {n} from {s.name} {random.randrange(1 << 30)}"
                try:
                    await s.say(text)
                    probes.append((now, s.name, text))
                except Exception:   # noqa: BLE001  (its connection just went)
                    pass
                n += 1
            for sent, a, txt in probes:
                if all(c.got(a, txt) for c in clients):
                    resumed = sent
                    break
            await asyncio.sleep(0.5)
        resumed_after = resumed - t_kill
        delivered_probes = sum(1 for _, a, txt in probes if all(c.got(a, txt) for c in clients))

        def promoted():
            r = owner_of(cluster_nodes(survivor), room_slot)
            return r is not None and r["id"] != victim_row["id"] and all_ok(
                [cid for s, cid in reds.items() if s != victim_svc])
        await until(lambda: asyncio.to_thread(promoted), 30, f"a replica to own slot {room_slot}, cluster ok")
        promoted_after = time.monotonic() - t_kill
        took = await e.converge(clients, len(clients), e.CONVERGE_SECS)
        await e.chat_round(clients, clients, "rc-after-failover")
        reconnected = [c.name for c in clients if c.logins > logins_before[c.name]]
        notices = {}
        for c in clients:
            for code, k in c.notices.items():
                d = k - notices_before[c.name].get(code, 0)
                if d:
                    notices[code] = notices.get(code, 0) + d
        passed.append("rc-failover")
        notes.append(f"rc-failover: chat resumed {resumed_after:.1f}s after the kill, "
                     f"{len(reconnected)}/6 reconnected")
        log(f"rc-failover: first probe to reach all 6 clients was posted {resumed_after:.1f}s after the kill "
            f"({delivered_probes}/{len(probes)} probes reached everyone); replica owns slot {room_slot} and "
            f"cluster ok by {promoted_after:.1f}s; clients reconnected: {reconnected or 'none'}; "
            f"NOTICEs during the failover: {notices or 'none'}; users == 6 on all (+{took:.1f}s); "
            f"6 messages reached all 6 with one seq each")

        # ---- rc-rejoin
        step = "rc-rejoin"
        t = time.monotonic()
        await asyncio.to_thread(e.run, ["docker", "start", victim])

        def rejoined():
            role = rcli(victim, "role", check_rc=False).split()
            link = "master_link_status:up" in rcli(victim, "info", "replication", check_rc=False)
            return role[:1] == ["slave"] and link and all_ok(reds.values())
        took = await until(lambda: asyncio.to_thread(rejoined), 60, f"{victim_svc} back as a replica, cluster ok")
        await e.chat_round(clients, [clients[0], clients[-1]], "rc-rejoined")
        passed.append("rc-rejoin")
        notes.append(f"rc-rejoin {took:.0f}s")
        log(f"rc-rejoin: {victim_svc} is a replica again (link up, cluster ok) {took:.1f}s after docker start")

        # ---- rc-shutdown
        step = "rc-shutdown"
        running = await asyncio.to_thread(e.containers)
        t = time.monotonic()
        await asyncio.to_thread(e.compose, "exec", "-T", e.SERVICE, "swiftchat", "shutdown",
                                "--reason", "e2e redis cluster shutdown")
        await until(lambda: all(c.done for c in clients), 15, "SHUTDOWN reconnect:false on every client")
        await until(lambda: all(c.ws is None for c in clients), 15, "every client closed")
        for c in clients:
            last = c.shutdowns[-1]
            check(last.get("reconnect") is False and last.get("reason") == "e2e redis cluster shutdown",
                  f"{c.name}: last SHUTDOWN {last}")
            check(c.closes and c.closes[-1] == 1001, f"{c.name}: close codes {c.closes}, expected 1001 last")

        def all_exited():
            return all(e.inspect(cid, "{{.State.Status}}") == "exited" for cid in running)
        await until(all_exited, 20, "every SwiftChat container to exit")
        codes = {cid[:12]: e.inspect(cid, "{{.State.ExitCode}}") for cid in running}
        check(all(v == "0" for v in codes.values()), f"exit codes {codes}")
        passed.append("rc-shutdown")
        notes.append(f"rc-shutdown {time.monotonic() - t:.1f}s")
        log(f"rc-shutdown: 6 clients got SHUTDOWN reconnect:false + 1001; {len(running)} containers exited 0 "
            f"in {time.monotonic() - t:.1f}s")
    except StepFailed as ex:
        log(f"FAILED at {step}: {ex}")
        await asyncio.to_thread(e.dump_logs)
        print(f"e2e-cluster: FAIL at {step} after {time.monotonic() - e.T0:.0f}s; "
              f"passed: {' '.join(passed) or 'none'}; {ex}", flush=True)
        print(f"E2E_STEPS {len(passed)} 1", flush=True)
        return 1
    finally:
        for c in clients:
            await c.stop()
    print(f"E2E_STEPS {len(passed)} 0", flush=True)
    print(f"e2e-cluster: PASS {len(passed)}/{len(passed)} steps ({' '.join(passed)}) in "
          f"{time.monotonic() - e.T0:.0f}s; " + "; ".join(notes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
