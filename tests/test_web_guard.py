"""A page on another site cannot drive the lab through the dashboard, with or without a
token: a real headless Chromium opens a page on a second origin that tries, and requests
with foreign Host names are refused. The dashboard itself keeps working."""

from __future__ import annotations

import http.server
import threading

import httpx
import pytest
from Pyro5.server import expose

import pyroinst
from tests.helpers import web_lab
from tests.test_web_browser import CHROMIUM, DRIVER, Service, webdriver  # skips without them

TOKEN = "guard-token-0123456789abcdef"


class Counter:
    """Counts the calls that reach it."""

    def __init__(self) -> None:
        self.hits = 0

    def hit(self, value: int = 0) -> int:
        """Count one call."""
        self.hits += 1
        return self.hits

    @pyroinst.job
    def measure(self, n: int = 1) -> int:
        """A job that counts too."""
        self.hits += 1
        return n

    @expose
    @pyroinst.concurrent
    def count(self) -> int:
        """Calls so far."""
        return self.hits


ATTACK = """<!doctype html><html><body><script>
const target = "TARGET";
const tries = [
  fetch(target + "/api/devices/dev/hit", {method: "POST", mode: "no-cors",
        headers: {"Content-Type": "text/plain"}, body: '{"args":[777]}'}),
  fetch(target + "/api/devices/dev/measure", {method: "POST", mode: "no-cors",
        body: '{"args":[777]}'}),
  fetch(target + "/api/devices/dev/hit", {method: "POST",
        headers: {"Content-Type": "application/json"}, body: '{"args":[1]}'}),
  fetch(target + "/api/devices/dev/reserve", {method: "POST", mode: "no-cors",
        headers: {"Content-Type": "text/plain"}, body: '{"args":["mallory", 600]}'}),
  fetch(target + "/logout", {method: "POST", mode: "no-cors"}),
];
const form = document.createElement("form");
form.method = "POST"; form.action = target + "/api/devices/dev/hit"; form.target = "sink";
form.enctype = "text/plain";
const field = document.createElement("input");
field.name = '{"args":[5],"x":"'; field.value = '"}';
form.appendChild(field);
const sink = document.createElement("iframe"); sink.name = "sink";
document.body.appendChild(sink); document.body.appendChild(form);
Promise.allSettled(tries).then(() => { form.submit(); setTimeout(() => {
  document.title = "tried"; }, 1000); });
</script></body></html>"""


@pytest.fixture(scope="module")
def open_lab():
    """A lab and a dashboard without a token (on 127.0.0.1, as by default)."""
    counter = Counter()
    with web_lab(None, {"dev": counter}) as (ns, server, web):
        yield counter, web


@pytest.fixture(scope="module")
def attacker(open_lab):
    """A page on a second origin (another port) aiming at the dashboard."""
    _, web = open_lab
    page = ATTACK.replace("TARGET", web.url.rstrip("/")).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(5)
    server.server_close()


@pytest.fixture(scope="module")
def chromium():
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_a_page_on_another_origin_reaches_no_device(open_lab, attacker, chromium):
    counter, web = open_lab
    before = counter.hits
    chromium.get(attacker)
    deadline_title = "tried"
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(chromium, 20, poll_frequency=0.05).until(lambda d: d.title == deadline_title)
    assert counter.hits == before, "a cross-site request reached the device"
    listed = httpx.get(web.url + "api/devices", timeout=10).json()
    assert listed[0]["reservation"] is None  # mallory reserved nothing
    # The dashboard itself still works, from its own page.
    chromium.get(web.url)
    answer = chromium.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch("/api/devices/dev/hit", {method: "POST", headers: {"Content-Type":
        "application/json"}, body: '{"args":[1]}'}).then(r => done(r.status));"""
    )
    assert answer == 200 and counter.hits == before + 1


def test_foreign_host_names_are_refused(open_lab):
    counter, web = open_lab
    port = web.port
    for host in (f"rebind.attacker.example:{port}", "x#", f"evil.test:{port}"):
        answer = httpx.get(f"http://127.0.0.1:{port}/api/devices", headers={"Host": host})
        assert answer.status_code == 421, (host, answer.text)
        assert "DNS rebinding" in answer.json()["message"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert httpx.get(f"http://127.0.0.1:{port}/api/devices", headers={"Host": host}).is_success


def test_changes_need_json_and_the_same_origin(open_lab):
    counter, web = open_lab
    base = web.url.rstrip("/")
    before = counter.hits
    refused = [
        httpx.post(base + "/api/devices/dev/hit", content=b'{"args":[1]}'),  # no type
        httpx.post(
            base + "/api/devices/dev/hit",
            content=b'{"args":[1]}',
            headers={"Content-Type": "text/plain"},
        ),
        httpx.post(
            base + "/api/devices/dev/hit",
            json={"args": [1]},
            headers={"Origin": "http://127.0.0.1:1"},
        ),
        httpx.post(
            base + "/api/devices/dev/hit",
            json={"args": [1]},
            headers={"Sec-Fetch-Site": "cross-site"},
        ),
        httpx.post(base + "/logout", headers={"Origin": "http://evil.test"}),
    ]
    for answer in refused:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] == "CrossSiteRequest"
    assert counter.hits == before
    assert httpx.post(base + "/api/devices/dev/hit", json={"args": [1]}).status_code == 200


def test_no_login_bypass_through_the_host_header():
    """The check is on the path the server received: a Host that makes a rebuilt URL's
    path empty (``x#``) lists nothing."""
    with web_lab(TOKEN, {"dev": Counter()}) as (_, _, web):
        answer = httpx.get(web.url + "api/devices", headers={"Host": "x#"})
        assert answer.status_code in (401, 421)
        assert "dev" not in answer.text
        wrong = httpx.get(web.url + "api/devices", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
