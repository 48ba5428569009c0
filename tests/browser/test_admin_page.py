"""The operator's page at `/admin`, in headless Chromium against real nodes.

Two nodes share a real redis-server (short heartbeat), some users sit in
rooms. The page asks for the token (a non-admin token is refused with a
message), then lists both nodes and the rooms (busiest first, with state and
owner) and the totals, draws its chart, and a drain confirmed in the page
drains that node: its client is told to reconnect, its process exits 0, and
it leaves the list while the other node goes on. Screenshots at desktop and
phone width go to docs/screenshots/admin-desktop.png and admin-phone.png.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from websockets.sync.client import connect

from conftest import set_viewport
from swiftchat_node import JWT_SECRET, Node

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
WAIT = 20


def jwt(sub: str, admin: bool, secret: str = JWT_SECRET, exp_in: int = 600) -> str:
    """An HS256 JWT, as the node verifies them (stdlib only)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    claims = {"sub": sub, "exp": int(time.time()) + exp_in}
    if admin:
        claims["admin"] = True
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    exe = shutil.which("redis-server")
    if not exe:
        pytest.fail("redis-server not found: apt-get install -y redis-server", pytrace=False)
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not answer PING within 10 s", pytrace=False)
    yield f"redis://127.0.0.1:{port}"
    proc.kill()
    proc.wait(10)


@pytest.fixture
def cluster(tmp_path, redis_url):
    nodes = []
    for node_id in ("node-a", "node-b"):
        nodes.append(Node(tmp_path, **{
            "SWIFTCHAT_REDIS__URL": redis_url,
            "SWIFTCHAT_SERVER__NODE_ID": node_id,
            "SWIFTCHAT_REDIS__HEARTBEAT_SECS": "1",
            "SWIFTCHAT_REDIS__NODE_TTL_SECS": "3",
        }).start())
    yield nodes
    for n in nodes:
        n.stop()


class User:
    """A logged-in WebSocket client (the sync `websockets` client)."""

    def __init__(self, stack: ExitStack, node: Node, name: str, room: str | None = None):
        self.name = name
        # Closed when the test's ExitStack unwinds.
        self.ws = stack.enter_context(connect(node.ws_url, open_timeout=10, close_timeout=2))
        self.ws.send(json.dumps({"op": 5, "d": {"name": name}}))
        self.wait_for(lambda f: f.get("op") == 7 and f["d"].get("code") == "joined"
                      and f["d"].get("user") == name)
        if room:
            self.ws.send(json.dumps({"op": 1, "d": {"content": f"\\join {room}"}}))
            self.wait_for(lambda f: f.get("op") == 7 and f["d"].get("code") == "joined"
                          and f["d"].get("room") == room and f["d"].get("user") == name)

    def wait_for(self, pred, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: expected frame not seen within {timeout} s")
            frame = json.loads(self.ws.recv(timeout=left))
            if pred(frame):
                return frame

    def send(self, content: str) -> None:
        self.ws.send(json.dumps({"op": 1, "d": {"content": content}}))


def wait_until(driver, predicate, what: str, timeout: float = WAIT):
    def check(d):
        try:
            return predicate(d)
        except StaleElementReferenceException:
            return False
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)
    except TimeoutException:
        logs = []
        try:
            logs = [e["message"] for e in driver.get_log("browser")][-10:]
        except Exception:
            pass
        pytest.fail(f"timed out after {timeout} s waiting for: {what}\nbrowser log: {logs}")


def node_ids(driver) -> list[str]:
    return [li.get_attribute("data-node-id")
            for li in driver.find_elements(By.CSS_SELECTOR, "#node-list li.node")]


def room_rows(driver) -> list[list[str]]:
    return [[td.get_attribute("textContent") for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, "#room-rows tr")]


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture
def stack():
    with ExitStack() as s:
        yield s


def test_admin_page_lists_the_cluster_and_drains_a_node(cluster, browsers, stack):
    a, b = cluster
    users = [
        User(stack, a, "Ada", "lobby"), User(stack, a, "Grace", "lobby"),
        User(stack, b, "Linus", "lobby"), User(stack, b, "Ken", "rust"), User(stack, a, "Barbara"),
    ]
    on_b = users[2]
    for i in range(10):
        users[0].send(f"hello {i}")

    driver = browsers()
    driver.get(a.http_url + "/admin")
    # The token prompt comes first, with focus in the field.
    wait_until(driver, lambda d: d.find_element(By.ID, "token-view").is_displayed(), "token prompt")
    assert not driver.find_element(By.ID, "dash").is_displayed()
    assert driver.switch_to.active_element.get_attribute("id") == "token-input"

    # A valid token without admin rights is refused, with a message.
    driver.find_element(By.ID, "token-input").send_keys(jwt("visitor", admin=False))
    driver.find_element(By.ID, "token-submit").click()
    wait_until(driver, lambda d: d.find_element(By.ID, "token-error").is_displayed(),
               "refusal of a non-admin token")
    assert "admin" in driver.find_element(By.ID, "token-error").text
    assert driver.execute_script("return sessionStorage.getItem('swiftchat-admin-token')") is None

    # The page runs under its Content-Security-Policy without violations.
    violations = [e["message"] for e in driver.get_log("browser")
                  if "Content Security Policy" in e["message"]]
    assert not violations, violations
    driver.find_element(By.ID, "token-input").send_keys(jwt("operator", admin=True))
    driver.find_element(By.ID, "token-submit").click()
    wait_until(driver, lambda d: d.find_element(By.ID, "dash").is_displayed(), "dashboard")
    wait_until(driver, lambda d: node_ids(d) == ["node-a", "node-b"], "both nodes listed")
    wait_until(driver, lambda d: [r[0] for r in room_rows(d)] == ["#lobby", "#general", "#rust"],
               "rooms sorted by users, then by name")
    rows = {r[0]: r for r in room_rows(driver)}
    assert rows["#lobby"][1:] == ["3", "open", "ada"], rows
    assert rows["#rust"][1:] == ["1", "open", "ken"], rows
    assert rows["#general"][1:] == ["1", "open", "—"], rows
    wait_until(driver, lambda d: d.find_element(By.ID, "t-logged-in").text == "5", "5 logged in")
    assert driver.find_element(By.ID, "t-nodes").text == "2"
    assert driver.find_element(By.ID, "t-rooms").text == "3"
    # The token is kept for this tab: a reload goes straight to the dashboard.
    driver.refresh()
    wait_until(driver, lambda d: node_ids(d) == ["node-a", "node-b"], "dashboard after reload")
    assert not driver.find_element(By.ID, "token-view").is_displayed()

    # Steady traffic (within the rate limit) while the chart collects points
    # and the rates show; then the screenshots.
    for i in range(24):
        users[0].send(f"lobby traffic {i}")
        users[3].send(f"rust traffic {i}")
        time.sleep(0.25)
    wait_until(driver, lambda d: float(d.find_element(By.ID, "t-in").text) > 0, "a message rate")
    desktop = screenshot(driver, "admin-desktop.png")
    assert png_size(desktop) == (1280, 800)
    set_viewport(driver, 390, 844, mobile=True)
    time.sleep(0.5)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways on a phone by {overflow}px"
    phone = screenshot(driver, "admin-phone.png")
    assert png_size(phone) == (390, 844)
    set_viewport(driver, 1280, 800)

    # Drain node-b from the page: cancel first (nothing happens), then confirm.
    drain_b = driver.find_element(By.CSS_SELECTOR, "button.drain[data-node-id='node-b']")
    drain_b.click()
    wait_until(driver, lambda d: d.find_element(By.ID, "confirm-dialog").is_displayed(), "confirmation")
    assert "node-b" in driver.find_element(By.ID, "confirm-title").text
    driver.find_element(By.ID, "confirm-cancel").click()
    wait_until(driver, lambda d: not d.find_element(By.ID, "confirm-dialog").is_displayed(), "dialog closed")
    time.sleep(1.5)
    assert b.proc.poll() is None, "cancel must not drain"

    driver.find_element(By.CSS_SELECTOR, "button.drain[data-node-id='node-b']").click()
    wait_until(driver, lambda d: d.find_element(By.ID, "confirm-dialog").is_displayed(), "confirmation")
    driver.find_element(By.ID, "confirm-ok").click()
    shutdown = on_b.wait_for(lambda f: f.get("op") == 3)
    assert shutdown["d"]["reconnect"] is True, shutdown
    assert b.wait(15) == 0, b.log()
    wait_until(driver, lambda d: node_ids(d) == ["node-a"], "node-b gone from the list")
    assert "node-b is draining" in driver.find_element(By.ID, "banner-text").text
    assert a.proc.poll() is None, "node-a keeps running"
