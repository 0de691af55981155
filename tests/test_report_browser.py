"""The HTML report (`aal-sweep report RESULTS --out DIR`) opened in a real headless Chromium, driven by the
DevTools protocol: no console error or uncaught exception, every figure decoded, the pair matrix section
there with its table, at M = 4 (the suite's tiny sweep) and M = 200 (a store built without training).

Needs Debian's `chromium` (`apt-get install -y chromium`; .ci/run installs it as root) and the
`websocket-client` package (the dev extra); skips, saying which is missing, without them."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import cli

websocket = pytest.importorskip("websocket", reason="websocket-client not installed (pip install websocket-client)")
BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install -y chromium)")
START_S = 60  # a cold Chromium on a loaded 2-core machine takes seconds
ROOT = Path(__file__).resolve().parents[1]


def store_benchmark():
    """benchmarks/store.py as a module: its `build` writes a complete store of M attributes with realistic
    per-image bits, column-wise, in seconds (tests/test_report.py's row-by-row builder takes a minute at 200)."""
    spec = importlib.util.spec_from_file_location("store_benchmark", ROOT / "benchmarks" / "store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Page:
    """One Chromium tab over the DevTools protocol: open a URL, keep every console error and exception."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=START_S, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params) -> dict:
        """Send one command; return its result, keeping the events that arrive meanwhile."""
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg["result"]
            if "method" in msg:
                self.events.append(msg)

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every <img> loaded or failed by then)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + START_S
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, f"{url}: no load event within {START_S} s"
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str):
        got = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in got, got["exceptionDetails"]
        return got["result"]["value"]

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and the browser's own error entries (a failed load, ...)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                out.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log ({p['entry']['source']}): {p['entry']['text']}")
        return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium on a free port (its own process group, stopped at the end), and a new tab's
    DevTools address. --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start."""
    profile = tmp_path_factory.mktemp("chromium")
    proc = subprocess.Popen(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",  # the port it chose is written to DevToolsActivePort
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_S
        while not (active.is_file() and active.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start (exit {proc.poll()}): {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])

        def new_page() -> Page:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
            with urllib.request.urlopen(req, timeout=START_S) as r:
                return Page(json.load(r)["webSocketDebuggerUrl"])

        yield new_page
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


# What the page says of itself: every <img> (decoded, its size), the h2 titles, the matrix section's table.
INSPECT = """
(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const h2 = [...document.querySelectorAll('h2')];
  const matrix = h2.find(h => /pair matrix/i.test(h.textContent));
  let el = matrix, table = null;
  while (el && !table) { el = el.nextElementSibling; if (!el || el.tagName === 'H2') break;
                         table = el.tagName === 'TABLE' ? el : el.querySelector('table'); }
  return {
    images: imgs.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
    titles: h2.map(h => h.textContent),
    matrix: matrix ? matrix.textContent : null,
    matrix_rows: table ? table.querySelectorAll('tbody tr').length : 0,
  };
})()
"""


def check_report(browser, results: Path, out: Path) -> dict:
    """`aal-sweep report` as a user runs it, then the page in Chromium: no error, every figure, the matrix."""
    done = cli("report", str(results), "--out", str(out))
    assert done.returncode == 0, done.stderr
    page = browser()
    try:
        page.open((out / "index.html").as_uri())
        seen = page.evaluate(INSPECT)
    finally:
        page.ws.close()
    assert page.errors() == []
    assert len(seen["images"]) >= 2, seen["titles"]  # the drop heat map and the accuracy bars at least
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert seen["matrix"] is not None and seen["matrix_rows"] > 0, seen["titles"]
    return seen


@pytest.mark.slow
def test_report_in_chromium_at_4_attributes(browser, tiny_sweep, tmp_path):
    _, results = tiny_sweep
    seen = check_report(browser, results, tmp_path / "report")
    assert seen["matrix"] == "Pair matrix (Table 4)" and seen["matrix_rows"] == 4 + 1  # 4 rows and the mean
    assert {i["alt"] for i in seen["images"]} >= {"drop_matrix.png", "accuracy_bars.png", "label_correlation.png"}


def test_report_in_chromium_at_200_attributes(browser, tmp_path):
    """200 single, 19,900 pair and 1,000 adversarial trials, 200 validation and test images each, and the
    synthetic dataset its config names (so the label scatter is drawn too)."""
    store_benchmark().build(tmp_path, 200, bits=0, images=200)
    seen = check_report(browser, tmp_path / "results-200", tmp_path / "report")
    assert seen["matrix"].startswith("Strongest negative pairs") and (tmp_path / "report" / "pair_matrix.csv").is_file()
    assert {i["alt"] for i in seen["images"]} >= {"drop_matrix.png", "accuracy_bars.png", "label_correlation.png"}
