"""Load a page in headless Chromium and report what a reader would see go wrong.

A tiny DevTools-protocol client (``websocket-client``, which Jupyter already installs): it
opens the page, waits for its load event, and returns the console errors, uncaught
exceptions and failed loads, the state of every ``<img>`` (``naturalWidth > 0`` once loaded)
and the text of an element. Without Chromium or ``websocket-client`` :func:`available` is
False and the tests that need a browser skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("URNET_CHROMIUM", "/usr/bin/chromium")


def available() -> str | None:
    """None when a browser check can run, else why not."""
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM}"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "websocket-client is not installed"
    return None


def inspect_page(path: str | Path, *, element_id: str | None = None, timeout: float = 60.0) -> dict:
    """Open ``path`` in a 1280 x 1000 window and return ``{"errors": [...], "images": [{"src",
    "complete", "width", "alt", "shown_width", "shown_height"}] (formula images left out),
    "text": str | None, "title": str, "nav": [hrefs of the link bar] | None, "page_width",
    "scroll_width" (wider than ``page_width``: the page scrolls sideways), "overflowing": [elements
    past the right edge, outside scrollable outputs]}``."""
    import websocket

    profile = tempfile.mkdtemp(prefix="urnet-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0",
         "--window-size=1280,1000", "--hide-scrollbars", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = _devtools_port(proc, timeout)
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
        ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        errors: list[str] = []
        ids = iter(range(1, 10**6))

        def send(method: str, **params) -> dict:
            msg_id = next(ids)
            ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == msg_id:
                    return msg.get("result", {})
                _collect(msg, errors)

        for domain in ("Page", "Runtime", "Log", "Network"):
            send(f"{domain}.enable")
        send("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(ws.recv())
            _collect(msg, errors)
            if msg.get("method") == "Page.loadEventFired":
                break
        else:
            errors.append("the page did not finish loading")
        time.sleep(0.5)  # late console messages
        script = ("JSON.stringify({images: Array.from(document.images).filter(i => !i.classList.contains('math'))"
                  ".map(i => ({src: i.getAttribute('src').slice(0, 80), complete: i.complete, width: i.naturalWidth,"
                  " alt: i.getAttribute('alt'), shown_width: i.getBoundingClientRect().width,"
                  " shown_height: i.getBoundingClientRect().height})), title: document.title,"
                  " page_width: document.documentElement.clientWidth, scroll_width: document.documentElement.scrollWidth,"
                  " overflowing: Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect()"
                  ".right > document.documentElement.clientWidth + 1 && !e.closest('.jp-OutputArea-output, .jp-RenderedHTMLCommon table'))"
                  ".slice(0, 10).map(e => e.tagName + '.' + e.className),"
                  " nav: document.getElementById('urnet-nav') ? Array.from(document.getElementById('urnet-nav')"
                  ".querySelectorAll('a')).map(a => a.getAttribute('href')) : null,"
                  f" text: {json.dumps(element_id)} && document.getElementById({json.dumps(element_id)}) ?"
                  f" document.getElementById({json.dumps(element_id)}).innerText : null}})")
        result = send("Runtime.evaluate", expression=script, returnByValue=True)
        ws.close()
        page = json.loads(result["result"]["value"])
        page["errors"] = errors
        return page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if match:
            return int(match.group(1))
    raise RuntimeError("Chromium did not start its DevTools endpoint:\n" + "".join(seen[-20:]))


def _collect(msg: dict, errors: list[str]) -> None:
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.exceptionThrown":
        errors.append("uncaught: " + params.get("exceptionDetails", {}).get("text", ""))
    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        errors.append("log: " + params["entry"].get("text", "") + " " + params["entry"].get("url", ""))
    elif method == "Network.loadingFailed":
        errors.append("failed load: " + params.get("errorText", "") + " " + params.get("requestId", ""))
