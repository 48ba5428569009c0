"""Starts and stops a real `swiftchat serve` node for the Python tests.

The binary is $TEST_SWIFTCHAT_BIN, else target/debug/swiftchat (built by
tests/run_python_tests.sh). Each node listens on a free loopback port, with a
shutdown key and a JWT secret, and logs to a file under the pytest tmp dir.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_KEY = "test-shutdown-key"
JWT_SECRET = "test-jwt-secret"


def binary() -> Path:
    path = Path(os.environ.get("TEST_SWIFTCHAT_BIN", ROOT / "target" / "debug" / "swiftchat"))
    if not path.exists():
        raise RuntimeError(f"{path} not found: run `cargo build` first (tests/run_python_tests.sh does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One standalone node on 127.0.0.1:<port>."""

    def __init__(self, log_dir: Path, port: int | None = None, **env: str):
        self.port = port or free_port()
        self.log_path = log_dir / f"node-{self.port}-{time.monotonic_ns()}.log"
        # The node reads every SWIFTCHAT_* variable as configuration and stops
        # on an unknown one: pass none from the outside, only ours.
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SWIFTCHAT_")},
            "SWIFTCHAT_ADMIN__SHUTDOWN_KEY": SHUTDOWN_KEY,
            "SWIFTCHAT_AUTH__JWT_SECRET": JWT_SECRET,
            "SWIFTCHAT_SERVER__DRAIN_SECS": "3",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            **env,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 20.0) -> "Node":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(binary()), "serve", "--bind", f"127.0.0.1:{self.port}"],
            cwd=self.log_path.parent, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.http_url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"node did not become healthy in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def shutdown_http(self, reason: str | None = "Maintenance", key: str = SHUTDOWN_KEY) -> int:
        """POST /admin/shutdown; returns the HTTP status."""
        req = urllib.request.Request(
            self.http_url + "/admin/shutdown", method="POST",
            data=json.dumps({"reason": reason}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def terminate(self) -> None:
        """SIGTERM: the node drains (SHUTDOWN with reconnect: true)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class RedisServer:
    """A real redis-server on a free loopback port, persistence off, in its own dir."""

    def __init__(self, work_dir: Path):
        self.port = free_port()
        self.dir = work_dir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
