"""The web client at `/`, driven in headless Chromium against a real node.

What a person does: two people log in, chat both ways, switch rooms (typing
the command and clicking the room list), one bans the other, who sees it, and
a shutdown shows its banner. Also: reconnecting after a node restart restores
name and room; message text can never become HTML; login errors are shown on
the form; history: the room's latest messages shown as earlier ones at login,
older ones loaded by scrolling up, the gap of a dropped connection filled
exactly once after the reconnect (a dropped socket on a standalone node, and
a node restart on Redis), and a gap beyond retention marked. Screenshots at desktop and phone width go to docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import set_viewport
from swiftchat_node import Node

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
WAIT = 20  # seconds; generous, the assertions are about behaviour, not speed


# ----------------------------------------------------------------- helpers
def wait_until(driver, predicate, what: str, timeout: float = WAIT):
    def check(d):
        try:
            return predicate(d)
        except StaleElementReferenceException:
            return False
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)
    except TimeoutException:
        banner = text_of(driver, "#banner") if driver.find_elements(By.ID, "banner") else ""
        pytest.fail(f"timed out after {timeout} s waiting for: {what}\n"
                    f"phase={phase(driver)} banner={banner!r}\nbrowser log: {console(driver)}")


def console(driver) -> list[str]:
    try:
        return [e["message"] for e in driver.get_log("browser")][-10:]
    except Exception:
        return []


def text_of(driver, css: str) -> str:
    els = driver.find_elements(By.CSS_SELECTOR, css)
    return els[0].text if els else ""


def phase(driver) -> str | None:
    return driver.execute_script("return window.swiftchat && window.swiftchat.phase")


def login(driver, url: str, name: str, room: str | None = None) -> None:
    driver.get(url)
    field = driver.find_element(By.ID, "login-name")
    assert driver.switch_to.active_element == field, "the name field has focus on load"
    field.clear()
    if room:
        driver.find_element(By.CSS_SELECTOR, "#login-more summary").click()
        driver.find_element(By.ID, "login-room").send_keys(room)
        field.click()
    field.send_keys(name, Keys.ENTER)  # Enter submits
    wait_until(driver, lambda d: phase(d) == "online", f"{name} online")
    wait_until(driver, lambda d: d.find_element(By.ID, "app").is_displayed(), "chat view shown")
    assert driver.find_element(By.ID, "me-name").text == name
    assert driver.switch_to.active_element.get_attribute("id") == "message-input", \
        "after login the message box has focus"


def type_line(driver, text: str) -> None:
    box = driver.find_element(By.ID, "message-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait_until(driver, lambda d: box.get_attribute("value") == "", f"message box emptied after {text!r}")


def messages(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#messages .msg')].map(li => ({
            author: li.dataset.author, room: li.dataset.room, seq: li.dataset.seq,
            content: li.querySelector('.msg-content').textContent,
            time: li.querySelector('.msg-time').textContent}));""")


def has_message(driver, author: str, content: str, room: str | None = None) -> bool:
    return any(m["author"] == author and m["content"] == content and (room is None or m["room"] == room)
               for m in messages(driver))


def current_room(driver) -> str:
    return driver.find_element(By.ID, "room-name").text


def rooms(driver) -> dict:
    return driver.execute_script("""
        const out = {};
        for (const li of document.querySelectorAll('#room-list li')) out[li.dataset.room] = {
            users: Number(li.dataset.users), locked: li.dataset.locked === 'true',
            closed: li.dataset.closed === 'true',
            current: li.querySelector('button').getAttribute('aria-current') === 'true'};
        return out;""")


def members(driver) -> list[str]:
    return [li.get_attribute("data-user") for li in driver.find_elements(By.CSS_SELECTOR, "#member-list li")]


def notices(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#messages .notice')].map(li => ({
            code: li.dataset.code, error: li.classList.contains('error'),
            text: li.querySelector('.notice-text').textContent}));""")


def banner(driver) -> tuple[str, str] | None:
    b = driver.find_element(By.ID, "banner")
    # Not is_displayed(): the banner fades in, and starts at opacity 0.
    if b.get_attribute("hidden") is not None:
        return None
    return b.get_attribute("data-kind"), b.find_element(By.ID, "banner-text").get_attribute("textContent")


def sys_lines(driver) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#messages .sys")]


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ------------------------------------------------------------------- tests
def test_page_and_assets_are_served_self_contained(node):
    for path, ctype in (("/", "text/html"), ("/app.css", "text/css"), ("/app.js", "javascript")):
        with urllib.request.urlopen(node.http_url + path, timeout=5) as r:
            assert r.status == 200
            assert ctype in r.headers["Content-Type"]
            body = r.read().decode()
        # No CDN or other outside asset: works offline.
        for attr in ('src="http', "src='http", 'href="http', "href='http", "url(http", "@import"):
            assert attr not in body, f"{path} loads an outside asset ({attr})"
    assert "innerHTML" not in (ROOT / "static" / "app.js").read_text(), "app.js must not use innerHTML"


def test_two_people_chat_switch_rooms_ban_and_shutdown(node, browsers):
    # Said before anyone logs in: shown as earlier messages (and in the screenshots).
    carol = Talker(node.ws_url, "carol")
    carol.say("Morning! The release notes draft is in the team doc.", "Standup moves to 10:30 today.")
    carol.close()
    alice, bob = browsers(), browsers()
    login(alice, node.http_url, "alice")
    wait_until(alice, lambda d: [m["seq"] for m in room_messages(d) if m["earlier"]] == [1, 2],
               "carol's messages shown as earlier ones")
    login(bob, node.http_url, "bob")

    # Room list and people come from CACHE_UPDATE, \users and joined notices.
    wait_until(alice, lambda d: rooms(d).get("general", {}).get("users") == 2, "general shows 2 users")
    assert rooms(alice)["general"]["current"]
    wait_until(alice, lambda d: sorted(members(d)) == ["alice", "bob"], "alice sees both in the room")
    wait_until(bob, lambda d: sorted(members(d)) == ["alice", "bob"], "bob sees both in the room")
    assert current_room(alice) == "general"
    wait_until(alice, lambda d: any("bob joined #general" in s for s in sys_lines(d)), "alice sees bob join")

    # Chat both ways; each message shows author, room and time.
    type_line(alice, "Hi bob! Ready for the release?")
    wait_until(bob, lambda d: has_message(d, "alice", "Hi bob! Ready for the release?", "general"),
               "bob receives alice's message")
    mention = bob.find_element(By.CSS_SELECTOR, '#messages .msg[data-author="alice"]')
    assert "mention" in mention.get_attribute("class").split(), "bob's name in a message is highlighted for bob"
    type_line(bob, "Almost, the changelog is at https://example.com/changes")
    box = bob.find_element(By.ID, "message-input")
    box.send_keys(Keys.ARROW_UP)  # recalls what bob sent last
    assert box.get_attribute("value") == "Almost, the changelog is at https://example.com/changes"
    box.send_keys(Keys.ARROW_DOWN)
    assert box.get_attribute("value") == ""
    wait_until(alice, lambda d: has_message(d, "bob", "Almost, the changelog is at https://example.com/changes"),
               "alice receives bob's message")
    msg = [m for m in messages(alice) if m["author"] == "bob"][0]
    assert msg["room"] == "general" and msg["seq"] == "4"
    assert msg["time"].strip(), "the message shows its time"
    link = alice.find_element(By.CSS_SELECTOR, "#messages .msg-content a")
    assert link.get_attribute("href") == "https://example.com/changes"
    assert link.get_attribute("rel") == "noopener noreferrer nofollow"

    # The command prefix works in the message box: alice moves to a new room.
    type_line(alice, "\\join lounge")
    wait_until(alice, lambda d: current_room(d) == "lounge", "alice is in #lounge")
    wait_until(alice, lambda d: rooms(d).get("lounge", {}).get("current"), "lounge is current in the list")
    # bob sees the new room appear (ROOM_STATE created) and clicks it.
    wait_until(bob, lambda d: "lounge" in rooms(d), "bob's room list shows lounge")
    bob.find_element(By.CSS_SELECTOR, '#room-list li[data-room="lounge"] button').click()
    wait_until(bob, lambda d: current_room(d) == "lounge", "bob is in #lounge")
    wait_until(alice, lambda d: any("bob joined #lounge" in s for s in sys_lines(d)), "alice sees bob join lounge")
    wait_until(alice, lambda d: sorted(members(d)) == ["alice", "bob"], "people list of lounge")
    wait_until(bob, lambda d: sorted(members(d)) == ["alice", "bob"], "bob's people list of lounge")
    type_line(bob, "Nice and quiet in here.")
    wait_until(alice, lambda d: has_message(d, "bob", "Nice and quiet in here.", "lounge"), "message in lounge")
    type_line(alice, "Shipping it tonight, then pizza à la carte")
    wait_until(bob, lambda d: has_message(d, "alice", "Shipping it tonight, then pizza à la carte", "lounge"),
               "bob gets alice's message in lounge")
    wait_until(alice, lambda d: rooms(d).get("lounge", {}).get("users") == 2, "lounge shows 2 users")

    # Screenshots of a real conversation.
    desktop = screenshot(alice, "desktop.png")
    assert png_size(desktop) == (1280, 800)
    set_viewport(alice, 390, 844, mobile=True)
    time.sleep(0.5)
    assert not alice.find_element(By.ID, "sidebar").is_displayed() or \
        alice.execute_script("return document.getElementById('sidebar').getBoundingClientRect().right <= 0"), \
        "at phone width the room list is a hidden drawer"
    phone = screenshot(alice, "phone.png")
    assert png_size(phone) == (390, 844)
    # The drawer opens from the menu button, and closes after picking a room.
    alice.find_element(By.ID, "toggle-rooms").click()
    wait_until(alice, lambda d: d.execute_script(
        "return document.getElementById('sidebar').getBoundingClientRect().left >= 0"), "rooms drawer open")
    # Escape closes it and gives the focus back to the message box.
    alice.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_until(alice, lambda d: d.execute_script(
        "return document.getElementById('sidebar').getBoundingClientRect().right <= 0"), "rooms drawer closed")
    assert alice.switch_to.active_element.get_attribute("id") == "message-input"
    set_viewport(alice, 1280, 800)

    # \help is discoverable: the help button sends it and the answer is shown.
    assert "help" in alice.find_element(By.ID, "help-btn").get_attribute("title")
    alice.find_element(By.ID, "help-btn").click()
    wait_until(alice, lambda d: any(n["code"] == "info" and "\\join" in n["text"] for n in notices(d)),
               "help answer shown")
    # Typing the prefix lists the commands.
    box = alice.find_element(By.ID, "message-input")
    box.send_keys("\\ba")
    wait_until(alice, lambda d: d.find_element(By.ID, "cmd-popup").is_displayed(), "command suggestions")
    assert "\\ban" in alice.find_element(By.ID, "cmd-popup").text
    box.send_keys(Keys.TAB)  # completes to "\ban "
    assert box.get_attribute("value") == "\\ban "

    # The room's owner bans bob, who sees it.
    box.send_keys("bob", Keys.ENTER)
    wait_until(bob, lambda d: (banner(d) or ("", ""))[1].startswith("You were banned from #lounge"),
               "bob sees the ban banner")
    assert banner(bob)[0] == "error"
    wait_until(bob, lambda d: current_room(d) == "general", "bob is back in general")
    wait_until(alice, lambda d: any("bob left #lounge" in s for s in sys_lines(d)), "alice sees bob leave")
    wait_until(alice, lambda d: members(d) == ["alice"], "bob is gone from lounge's people")
    type_line(bob, "\\join lounge")
    wait_until(bob, lambda d: any(n["code"] == "banned" and n["error"] for n in notices(d)),
               "rejoining shows a 'banned' error notice")
    assert current_room(bob) == "general"
    # An error from the server is shown distinctly.
    type_line(bob, "\\frobnicate")
    wait_until(bob, lambda d: any(n["code"] == "unknown_command" and n["error"] for n in notices(d)),
               "unknown command error")

    # A cluster shutdown shows its banner and the client does not reconnect.
    assert node.shutdown_http("Maintenance window") == 202
    for d, who in ((alice, "alice"), (bob, "bob")):
        wait_until(d, lambda d: phase(d) == "offline", f"{who} offline after shutdown")
        kind, text = banner(d)
        assert kind == "error" and "Maintenance window" in text, (who, kind, text)
        assert any(n["code"] == "shutdown" for n in notices(d))
    assert node.wait(20) == 0
    time.sleep(6)  # past the 0.5–5 s window a reconnect would have used
    for d in (alice, bob):
        assert phase(d) == "offline"
        assert d.execute_script("return window.swiftchat.attempts") == 0
        assert not d.find_element(By.ID, "message-input").is_enabled()


def test_reconnect_after_node_restart_restores_name_and_room(tmp_path, browsers):
    node = Node(tmp_path).start()
    try:
        alice = browsers()
        login(alice, node.http_url, "alice", room=None)
        type_line(alice, "\\join ops")
        wait_until(alice, lambda d: current_room(d) == "ops", "alice in ops")
        node.terminate()  # drain: SHUTDOWN with reconnect: true, then close 1001
        wait_until(alice, lambda d: phase(d) == "reconnecting", "reconnecting after the drain")
        kind, text = banner(alice)
        assert kind == "warn" and ("restarting" in text or "Reconnecting" in text), text
        assert node.wait(20) == 0
    finally:
        node.stop()
    # A new node on the same address (a fresh standalone node knows no rooms).
    node2 = Node(tmp_path, port=node.port).start()
    try:
        wait_until(alice, lambda d: phase(d) == "online", "reconnected", timeout=60)
        wait_until(alice, lambda d: current_room(d) == "ops", "back in ops")
        assert alice.find_element(By.ID, "me-name").text == "alice"
        assert alice.execute_script("return window.swiftchat.attempts") == 0
        wait_until(alice, lambda d: (banner(d) or ("", ""))[0] == "success", "reconnected banner")
        # It really works: someone new talks to alice in ops.
        bob = browsers()
        login(bob, node2.http_url, "bob", room="ops")
        assert current_room(bob) == "ops"
        type_line(bob, "welcome back")
        wait_until(alice, lambda d: has_message(d, "bob", "welcome back", "ops"), "message after reconnect")
        # Reloading the page logs in again by itself, same name, same room.
        alice.refresh()
        wait_until(alice, lambda d: phase(d) == "online" and d.find_element(By.ID, "app").is_displayed(),
                   "logged in again after a reload")
        wait_until(alice, lambda d: current_room(d) == "ops", "still in ops after a reload")
        assert alice.find_element(By.ID, "me-name").text == "alice"
        type_line(alice, "reloaded")
        bob_sees = lambda d: has_message(d, "alice", "reloaded", "ops")  # noqa: E731
        wait_until(bob, bob_sees, "bob gets alice's message after her reload")
    finally:
        node2.stop()


def test_message_text_never_becomes_html(node, browsers):
    from websockets.asyncio.client import connect

    alice = browsers()
    login(alice, node.http_url, "alice")
    payloads = [
        '<img src=x onerror="window.__pwned=1">',
        "<script>window.__pwned=2</script>",
        '"><svg onload="window.__pwned=3"></svg>',
        "javascript:window.__pwned=4 http://x.test/<b>bold</b>",
    ]

    async def mallory():
        async with connect(node.ws_url) as ws:
            await ws.send(json.dumps({"op": 5, "d": {"name": "mallory"}}))
            for p in payloads:
                await ws.send(json.dumps({"op": 1, "d": {"content": p}}))
            await asyncio.sleep(0.5)

    asyncio.run(mallory())
    for p in payloads:
        wait_until(alice, lambda d, p=p: has_message(d, "mallory", p), f"text shown literally: {p}")
    assert alice.execute_script("return window.__pwned") is None
    assert alice.find_elements(By.CSS_SELECTOR, "#messages img, #messages script, #messages b") == []
    hrefs = [a.get_attribute("href") for a in alice.find_elements(By.CSS_SELECTOR, "#messages a")]
    assert all(h.startswith("http") for h in hrefs), hrefs


def test_login_errors_are_shown_on_the_form(node, browsers):
    from websockets.asyncio.client import connect

    page = browsers()
    page.get(node.http_url)
    name = page.find_element(By.ID, "login-name")
    name.send_keys("not a name!", Keys.ENTER)
    wait_until(page, lambda d: d.find_element(By.ID, "login-error").is_displayed(), "invalid name error")
    assert name.get_attribute("aria-invalid") == "true"

    async def hold_name_and_check():
        async with connect(node.ws_url) as ws:
            await ws.send(json.dumps({"op": 5, "d": {"name": "taken"}}))
            assert json.loads(await ws.recv())["op"] == 4
            name.clear()
            name.send_keys("taken", Keys.ENTER)
            wait_until(page, lambda d: "taken" in d.find_element(By.ID, "login-error").text, "name_taken shown")
            assert phase(page) != "online"
            # Try again with another name on the same page.
            name.clear()
            name.send_keys("free_name", Keys.ENTER)
            wait_until(page, lambda d: phase(d) == "online", "second try logs in")

    asyncio.run(hold_name_and_check())
    assert page.find_element(By.ID, "me-name").text == "free_name"


def test_locked_room_asks_for_its_password(node, browsers):
    alice, bob = browsers(), browsers()
    login(alice, node.http_url, "alice")
    type_line(alice, "\\join vault")
    wait_until(alice, lambda d: current_room(d) == "vault", "alice in vault")
    type_line(alice, "\\lock opensesame")
    wait_until(alice, lambda d: d.find_elements(By.CSS_SELECTOR, "#room-flags .tag.locked"),
               "the room header shows 'locked'")
    wait_until(alice, lambda d: rooms(d)["vault"]["locked"], "vault locked in alice's list")

    login(bob, node.http_url, "bob")
    wait_until(bob, lambda d: rooms(d).get("vault", {}).get("locked"), "bob sees vault locked")
    bob.find_element(By.CSS_SELECTOR, '#room-list li[data-room="vault"] button').click()
    dialog = bob.find_element(By.ID, "pw-dialog")
    wait_until(bob, lambda d: dialog.get_attribute("open") is not None, "password dialog opens")
    # Escape cancels.
    bob.find_element(By.ID, "pw-input").send_keys(Keys.ESCAPE)
    wait_until(bob, lambda d: dialog.get_attribute("open") is None, "Escape closes the dialog")
    assert current_room(bob) == "general"

    bob.find_element(By.CSS_SELECTOR, '#room-list li[data-room="vault"] button').click()
    wait_until(bob, lambda d: dialog.get_attribute("open") is not None, "dialog again")
    bob.find_element(By.ID, "pw-input").send_keys("wrong", Keys.ENTER)  # Enter joins
    wait_until(bob, lambda d: any(n["code"] == "room_locked" and n["error"] for n in notices(d)),
               "a wrong password is refused")
    wait_until(bob, lambda d: dialog.get_attribute("open") is not None
               and d.find_element(By.ID, "pw-error").is_displayed(), "dialog asks again, saying why")
    assert current_room(bob) == "general"
    bob.find_element(By.ID, "pw-input").send_keys("opensesame", Keys.ENTER)
    wait_until(bob, lambda d: current_room(d) == "vault", "the right password gets bob in")
    wait_until(alice, lambda d: any("bob joined #vault" in s for s in sys_lines(d)), "alice sees bob join")


# ------------------------------------------------------------------ history
def history_node(tmp_path, **env) -> Node:
    """A node whose rate limit lets a test post a room's backlog quickly."""
    return Node(tmp_path, SWIFTCHAT_LIMITS__MESSAGES_PER_SECOND="1000",
                SWIFTCHAT_LIMITS__MESSAGE_BURST="1000", **env).start()


class Talker:
    """A plain WebSocket user (no client code under test) who posts messages."""

    def __init__(self, ws_url: str, name: str):
        from websockets.sync.client import connect as sync_connect

        self.name = name
        self.ws = sync_connect(ws_url, open_timeout=10, legacy=True)
        self.ws.send(json.dumps({"op": 5, "d": {"name": name}}))
        self.lock = threading.Lock()
        self._wait(lambda p: p["op"] == 4, "login")

    def _wait(self, pred, what: str) -> dict:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                p = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                continue
            if pred(p):
                return p
        pytest.fail(f"{self.name}: no {what} within {WAIT} s")

    def say(self, *contents: str) -> int:
        """Posts the messages; returns the seq of the last one once it is accepted."""
        with self.lock:
            for c in contents:
                self.ws.send(json.dumps({"op": 1, "d": {"content": c}}))
            last = self._wait(lambda p: p["op"] == 0 and p["d"]["author"] == self.name
                              and p["d"]["content"] == contents[-1], f"echo of {contents[-1]!r}")
            return last["d"]["seq"]

    def close(self) -> None:
        self.ws.close()


def room_messages(driver, room: str = "general") -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#messages .msg')].filter(li => li.dataset.room === arguments[0])
            .map(li => ({seq: Number(li.dataset.seq), content: li.querySelector('.msg-content').textContent,
                         earlier: li.classList.contains('earlier')}));""", room)


def test_history_earlier_messages_gap_fill_after_reconnect_and_scroll_back(tmp_path, browsers):
    from tcp_proxy import TcpProxy

    # History deep enough for everything said during the drop: the resume
    # then takes several pages (page_size 100) while live messages keep coming.
    node = history_node(tmp_path, SWIFTCHAT_HISTORY__MAX_MESSAGES="1000")
    proxy = TcpProxy(node.port)
    pat = None
    try:
        pat = Talker(node.ws_url, "pat")
        assert pat.say(*[f"old {i}" for i in range(1, 71)]) == 70

        # Logging in shows the room's latest 50 messages, marked as earlier.
        alice = browsers()
        login(alice, proxy.http_url, "alice")
        wait_until(alice, lambda d: len(room_messages(d)) == 50, "the latest 50 messages shown")
        shown = room_messages(alice)
        assert [m["seq"] for m in shown] == list(range(21, 71))
        assert [m["content"] for m in shown] == [f"old {i}" for i in range(21, 71)]
        assert all(m["earlier"] for m in shown)
        assert alice.execute_script("""
            const d = document.querySelector('#messages .divider.earlier');
            const first = document.querySelector('#messages .msg');
            return d !== null && d.textContent === 'Earlier messages'
                && !!(d.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING);""")

        # A live message comes after them, not muted.
        pat.say("live 1")
        wait_until(alice, lambda d: has_message(d, "pat", "live 1"), "a live message")
        live = room_messages(alice)[-1]
        assert live == {"seq": 71, "content": "live 1", "earlier": False}
        colors = alice.execute_script("""
            const c = (sel) => getComputedStyle(document.querySelector(sel)).color;
            return [c('#messages .msg.earlier .msg-content'), c('#messages .msg:not(.earlier) .msg-content')];""")
        assert colors[0] != colors[1], f"earlier messages look the same as new ones: {colors}"

        # Scrolling to the top loads the older ones, above, in order.
        alice.execute_script("document.getElementById('messages').scrollTop = 0")
        wait_until(alice, lambda d: len(room_messages(d)) == 71, "older messages loaded by scrolling up")
        assert [m["seq"] for m in room_messages(alice)] == list(range(1, 72))
        assert [m["content"] for m in room_messages(alice)][:3] == ["old 1", "old 2", "old 3"]
        assert alice.execute_script("return window.swiftchat.oldestSeq") == 1
        assert not alice.find_element(By.CSS_SELECTOR, "#messages .load-older").is_displayed(), \
            "nothing older is left to load"

        # The connection drops (the node keeps running); messages are sent
        # meanwhile, and keep coming while the page reconnects and resumes.
        proxy.cut()
        wait_until(alice, lambda d: phase(d) == "reconnecting", "reconnecting after the drop")
        pat.say(*[f"missed {i}" for i in range(1, 6)])
        stop = threading.Event()

        def keep_talking():  # about 200 messages a second
            i = 0
            while not stop.is_set():
                pat.say(*[f"during {i + k}" for k in range(1, 6)])
                i += 5
                time.sleep(0.02)

        talker = threading.Thread(target=keep_talking, daemon=True)
        talker.start()
        proxy.restore()
        try:
            wait_until(alice, lambda d: phase(d) == "online", "back online", timeout=60)
            time.sleep(1.0)
        finally:
            stop.set()
            talker.join(10)
        last = pat.say("after 1")
        wait_until(alice, lambda d: has_message(d, "pat", "after 1"), "message after the resume")
        shown = room_messages(alice)
        seqs = [m["seq"] for m in shown]
        # (The page keeps its last 600 lines: the oldest may have scrolled out.)
        assert seqs[0] <= 71 and seqs == list(range(seqs[0], last + 1)), \
            f"every message exactly once, in order: {sorted({s for s in seqs if seqs.count(s) > 1})} twice, " \
            f"{sorted(set(range(seqs[0], last + 1)) - set(seqs))} missing"
        assert last > 71 + 5 + 100, f"the resume needed several pages ({last} messages)"
        contents = [m["content"] for m in shown]
        for i in range(1, 6):
            assert contents.count(f"missed {i}") == 1
        assert not any(m["earlier"] for m in shown if m["seq"] > 70), \
            "missed messages are not shown as earlier ones"
        assert "Reconnected" in [li.text for li in alice.find_elements(By.CSS_SELECTOR, "#messages .divider")]
        assert not any("could not be recovered" in s for s in sys_lines(alice))
        assert proxy.accepted >= 2
    finally:
        if pat:
            pat.close()
        proxy.close()
        node.stop()


def test_history_gap_beyond_retention_is_marked(tmp_path, browsers):
    from tcp_proxy import TcpProxy

    node = history_node(tmp_path, SWIFTCHAT_HISTORY__MAX_MESSAGES="10")
    proxy = TcpProxy(node.port)
    pat = None
    try:
        pat = Talker(node.ws_url, "pat")
        alice = browsers()
        login(alice, proxy.http_url, "alice")
        pat.say("before")
        wait_until(alice, lambda d: has_message(d, "pat", "before"), "a live message")
        proxy.cut()
        wait_until(alice, lambda d: phase(d) == "reconnecting", "reconnecting after the drop")
        last = pat.say(*[f"gone {i}" for i in range(1, 26)])  # 25 messages; history keeps 10
        assert last == 26
        proxy.restore()
        wait_until(alice, lambda d: has_message(d, "pat", "gone 25"), "the last missed message", timeout=60)
        wait_until(alice, lambda d: any("Some messages could not be recovered." in s for s in sys_lines(d)),
                   "the gap that history could not fill is marked")
        assert [m["seq"] for m in room_messages(alice)] == [1] + list(range(17, 27))
    finally:
        if pat:
            pat.close()
        proxy.close()
        node.stop()


def test_history_resume_after_the_node_restarts_on_redis(tmp_path, browsers):
    from swiftchat_node import RedisServer

    redis = RedisServer(tmp_path)
    env = {"SWIFTCHAT_REDIS__URL": redis.url, "SWIFTCHAT_LIMITS__MESSAGES_PER_SECOND": "1000",
           "SWIFTCHAT_LIMITS__MESSAGE_BURST": "1000"}
    nodes = [Node(tmp_path, **env).start(), Node(tmp_path, **env).start()]
    pat = None
    try:
        a, b = nodes
        pat = Talker(b.ws_url, "pat")  # on the node that stays up
        pat.say("before 1", "before 2")
        alice = browsers()
        login(alice, a.http_url, "alice")
        wait_until(alice, lambda d: [m["seq"] for m in room_messages(d) if m["earlier"]] == [1, 2],
                   "history from Redis shown as earlier messages")
        pat.say("live 1")
        wait_until(alice, lambda d: has_message(d, "pat", "live 1"), "a live message across nodes")

        # alice's node restarts (drain, then a new process on the same port);
        # pat keeps talking on the other node meanwhile.
        a.terminate()
        wait_until(alice, lambda d: phase(d) == "reconnecting", "reconnecting after the drain")
        assert a.wait(20) == 0
        pat.say(*[f"missed {i}" for i in range(1, 31)])
        nodes.append(Node(tmp_path, port=a.port, **env).start())
        wait_until(alice, lambda d: phase(d) == "online", "back online", timeout=60)
        last = pat.say("after")
        wait_until(alice, lambda d: has_message(d, "pat", "after"), "a message after the resume")
        seqs = [m["seq"] for m in room_messages(alice)]
        assert seqs == list(range(1, last + 1)), seqs
        assert not any("could not be recovered" in s for s in sys_lines(alice))
    finally:
        if pat:
            pat.close()
        for n in nodes:
            n.stop()
        redis.stop()
