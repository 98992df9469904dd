"""The web server's figures, with baselines from the same run: ``python bench/web.py``.

* WEB1: a 1e7-point float64 result (80 MB) downloaded as ``.npy`` through ``pyroinst web``
  (HTTP, read into a preallocated buffer), against the same bytes over raw TCP
  (bench.servers tcp). Goal: at least 0.3 x, measured as W2 measures pyroinst itself:
  the same result downloaded again and again (the web server keeps finished results it
  sent, up to 512 MiB). A first download of each new result (the web server fetches it
  from the device server, then sends it) is shown too, without a goal: on this machine
  a device server sends an array its job thread has just written about 4 x more slowly
  the first time than later (a plain socketpair shows the same), which W2's repeated
  fetches never see.
* WEB2: latency from ``publish`` on the device to the event at an HTTP SSE client
  (the device publishes ``time.time()``; same clock). Goal: median at most 20 ms.
* WEB5: fan-out: 100 SSE clients on one job stream publishing 100 items a second; items
  a second each client gets, and the CPU of the lab's process (one reader upstream,
  whatever the number of clients).
* WEB3, WEB4 (only where Debian's chromium and chromedriver are installed): plot updates
  per second in the dashboard's job view, for 1,000-point lines published 50 times a
  second and 512 x 512 images published 20 times a second. Goals: at least 10 and 5.

Every server runs in its own process; the figures are medians.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Server, client  # noqa: E402

POINTS = 10_000_000


def start_lab() -> tuple[subprocess.Popen, str, str]:  # the process, its url and token
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYRO_", "PYROINST_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.webdev"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url, token = proc.stdout.readline().split()
    return proc, url.rstrip("/"), token


def request(url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, data, headers)
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return answer


def wait_done(url: str, token: str, job: str) -> None:
    while request(url, token, "GET", f"/api/devices/web/jobs/{job}")["state"] != "done":
        time.sleep(0.05)


def download_mbps(url: str, token: str, repeats: int) -> tuple[float, float]:
    """(median MB/s of first downloads, each of a new job's result: fetched from the device
    server, then sent; median MB/s of repeated downloads of one result, kept by the web
    server)."""
    first = [_download(url, token, _new_result(url, token)) for _ in range(repeats)]
    job = _new_result(url, token)
    again = [_download(url, token, job) for _ in range(repeats + 1)][1:]
    return statistics.median(first), statistics.median(again)


def _new_result(url: str, token: str) -> str:
    job = request(url, token, "POST", "/api/devices/web/big", {"args": [POINTS]})["id"]
    wait_done(url, token, job)
    return job


_BUFFER = bytearray(POINTS * 8 + 4096)


def _download(url: str, token: str, job: str) -> float:
    host, port = url.split("//")[1].split(":")
    buffer = _BUFFER
    speeds = []
    for _ in range(1):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        start = time.perf_counter()
        conn.request(
            "GET",
            f"/api/devices/web/jobs/{job}/result?format=npy",
            headers={"Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        view, got = memoryview(buffer), 0
        while True:
            n = response.readinto(view[got:])
            if not n:
                break
            got += n
        speeds.append(got / (time.perf_counter() - start) / 1e6)
        conn.close()
        assert got == POINTS * 8 + 128, got
    return speeds[0]


def sse_latency_ms(url: str, token: str, count: int = 200) -> list[float]:
    job = request(url, token, "POST", "/api/devices/web/ticks", {"args": [count, 0.02]})["id"]
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request(
        "GET", f"/api/devices/web/jobs/{job}/events", headers={"Authorization": f"Bearer {token}"}
    )
    response = conn.getresponse()
    latencies, event = [], None
    while True:
        line = response.fp.readline()
        if not line:
            break
        now = time.time()
        text = line.decode().strip()
        if text.startswith("event: "):
            event = text[7:]
        elif text.startswith("data: ") and event == "item":
            latencies.append((now - json.loads(text[6:])["value"]) * 1000)
        elif text.startswith("data: ") and event == "end":
            break
    conn.close()
    return latencies[10:]  # the first items were published before the stream opened


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fan_out(url: str, token: str, pid: int, clients: int = 100, seconds: float = 5.0) -> dict:
    """``clients`` SSE clients on one job stream (100 items a second): items a second each
    client gets (median, lowest), and the lab process's CPU meanwhile (the web server and
    the device server share that process; the device's share is its publishing)."""
    count = int((seconds + 3) * 100)
    job = request(url, token, "POST", "/api/devices/web/ticks", {"args": [count, 0.01]})["id"]
    host, port = url.split("//")[1].split(":")
    got = [0] * clients
    stop = threading.Event()
    opened = threading.Barrier(clients + 1)

    def read(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request(
            "GET",
            f"/api/devices/web/jobs/{job}/events",
            headers={"Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        opened.wait(60)
        while not stop.is_set():
            line = response.fp.readline()
            if not line:
                break
            if line.startswith(b"event: item"):
                got[n] += 1
        conn.close()

    threads = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    opened.wait(60)
    start_counts, cpu0, t0 = list(got), _cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)  # measuring a rate: the window is the measurement
    elapsed = time.perf_counter() - t0
    cpu = (_cpu_seconds(pid) - cpu0) / elapsed
    rates = [(g - s) / elapsed for g, s in zip(got, start_counts, strict=True)]
    stop.set()
    request(url, token, "POST", f"/api/devices/web/jobs/{job}/cancel")
    for thread in threads:
        thread.join(10)
    return {"median": statistics.median(rates), "lowest": min(rates), "cpu": cpu * 100}


def page_rates(url: str, token: str) -> dict[str, float] | None:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.binary_location = chromium
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    rates = {}
    try:
        driver.get(f"{url}/?token={token}")
        for kind, method, args in (
            ("lines", "lines", [400, 1000, 0.02]),
            ("images", "images", [200, 512, 0.05]),
        ):
            job = request(url, token, "POST", f"/api/devices/web/{method}", {"args": args})["id"]
            driver.get(f"{url}/#/job/web/{job}")
            plot = driver.find_element(By.ID, "plot")
            if kind == "lines":  # frame-like lines: each drawn alone, as they come
                driver.find_element(By.ID, "newest-only").click()
            deadline = time.monotonic() + 30
            while int(plot.get_attribute("data-drawn") or 0) < 5:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{kind}: the page drew nothing")
                time.sleep(0.05)
            first, t0 = int(plot.get_attribute("data-drawn")), time.perf_counter()
            time.sleep(4.0)  # measuring a rate: the window is the measurement
            drawn = int(plot.get_attribute("data-drawn")) - first
            rates[kind] = drawn / (time.perf_counter() - t0)
            request(url, token, "POST", f"/api/devices/web/jobs/{job}/cancel")
    finally:
        driver.quit()
    return rates


def main() -> None:
    quick = "--quick" in sys.argv
    tcp = Server("tcp")
    lab, url, token = start_lab()
    try:
        tcp_mbps = client("tcp", tcp.address, "w2", POINTS, 3 if quick else 7)["mbps"]
        web_mbps, cached_mbps = download_mbps(url, token, 3 if quick else 7)
        latencies = sse_latency_ms(url, token, 100 if quick else 300)
        fans = fan_out(url, token, lab.pid, 100, 3.0 if quick else 5.0)
        rates = page_rates(url, token)
    finally:
        tcp.stop()
        lab.stdin.close()
        lab.wait(30)
    median = statistics.median(latencies)
    rows = [
        (
            "WEB1 .npy download, 80 MB (fetched from the device, then sent)",
            f"{web_mbps:.0f} MB/s",
            f"{web_mbps / tcp_mbps:.2f} × TCP ({tcp_mbps:.0f} MB/s)",
        ),
        (
            "WEB1 the same result again (kept by the web server)",
            f"{cached_mbps:.0f} MB/s",
            f"{cached_mbps / tcp_mbps:.2f} × TCP",
        ),
        (
            "WEB2 publish → SSE client",
            f"median {median:.1f} ms, p90 {statistics.quantiles(latencies, n=10)[-1]:.1f} ms",
            f"{len(latencies)} events",
        ),
    ]
    rows.append(
        (
            "WEB5 100 SSE clients on one job stream (100 items/s)",
            f"median {fans['median']:.0f}, lowest {fans['lowest']:.0f} items/s per client",
            f"lab process CPU {fans['cpu']:.0f} % of a core (web and device server)",
        )
    )
    checks = [
        (
            "WEB1 repeated ≥ 0.3 × raw TCP",
            f"{cached_mbps / tcp_mbps:.2f}",
            cached_mbps / tcp_mbps >= 0.3,
        ),
        ("WEB2 median ≤ 20 ms", f"{median:.1f}", median <= 20),
    ]
    if rates is None:
        rows.append(("WEB3/WEB4 page updates", "not measured", "no chromium/chromedriver here"))
    else:
        rows.append(
            ("WEB3 page: 1,000-point lines", f"{rates['lines']:.1f} draws/s", "published at 50/s")
        )
        rows.append(
            ("WEB4 page: 512 x 512 images", f"{rates['images']:.1f} draws/s", "published at 20/s")
        )
        checks.append(("WEB3 ≥ 10 updates/s", f"{rates['lines']:.1f}", rates["lines"] >= 10))
        checks.append(("WEB4 ≥ 5 updates/s", f"{rates['images']:.1f}", rates["images"] >= 5))
    print("| workload | figure | ratio / note |\n|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    print("\n| target | measured | met |\n|---|---|---|")
    for name, value, ok in checks:
        print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
