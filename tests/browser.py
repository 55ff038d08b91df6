"""Headless Chromium driven over the DevTools protocol on a pipe (no extra package): open a local
HTML file with the network switched off and report what a person would see.

Chromium reads protocol messages on fd 3 and writes them on fd 4, each a JSON object ended by a
NUL byte. Evaluating script through the protocol is not subject to the page's
Content-Security-Policy, so a page that allows no script can still be inspected.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def executable() -> str | None:
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


@dataclass
class Rendered:
    images: list[dict]  # per <img>: complete, naturalWidth, naturalHeight, alt
    errors: list[str]  # console errors, uncaught exceptions, failed loads, CSP violations
    requests: list[str]  # every URL the page asked for, other than data: and the page itself
    screenshot: bytes  # PNG of the whole page
    title: str
    events: list[dict] = field(default_factory=list, repr=False)


class _Pipe:
    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int):
        self.proc, self.to_browser, self.from_browser = proc, to_browser, from_browser
        self.buffer, self.next_id, self.events = b"", 0, []

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)


IMAGES = ("JSON.stringify(Array.from(document.images).map(i => ({complete: i.complete, "
          "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight, alt: i.alt})))")


def render(page: Path, width: int = 1200) -> Rendered:
    """Open ``page`` offline, wait for its load event, and collect images, errors, requests and a
    full-page screenshot."""
    chrome = executable()
    if chrome is None:
        raise FileNotFoundError("no Chromium on this machine")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    args = [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "about:blank"]
    # The browser's fds 3 and 4 are the pipe's ends: dup them into place in the child.
    def place_fds() -> None:
        read, write = os.dup(to_browser_r), os.dup(from_browser_w)  # out of the way of 3 and 4
        os.dup2(read, 3)
        os.dup2(write, 4)
    # close_fds=False: subprocess closes the fds it was not told to keep after preexec_fn runs,
    # and it cannot be told to keep 3 and 4 under those numbers.
    proc = subprocess.Popen(args, preexec_fn=place_fds, close_fds=False,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe = _Pipe(proc, to_browser_w, from_browser_r)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            pipe.call(method, session=session)
        pipe.call("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                       "uploadThroughput": -1}, session=session)
        pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        url = page.resolve().as_uri()
        pipe.call("Page.navigate", {"url": url}, session=session)
        pipe.wait_for("Page.loadEventFired")
        images = json.loads(pipe.call("Runtime.evaluate", {"expression": IMAGES, "returnByValue": True},
                                      session=session)["result"]["value"])
        title = pipe.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                          session=session)["result"]["value"]
        size = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": int(size["height"]),
                                                         "deviceScaleFactor": 1, "mobile": False}, session=session)
        shot = base64.b64decode(pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                          session=session)["data"])
        pipe.call("Browser.close")
    finally:
        proc.kill()
        proc.wait()
        os.close(to_browser_w)
        os.close(from_browser_r)
        shutil.rmtree(profile, ignore_errors=True)
    return Rendered(images=images, errors=_errors(pipe.events), requests=_requests(pipe.events, url),
                    screenshot=shot, title=title, events=pipe.events)


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            out.append(f"exception: {details.get('text')} {details.get('exception', {}).get('description', '')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.loadingFailed":
            out.append(f"load failed: {params.get('errorText')}")
    return out


def _requests(events: list[dict], page_url: str) -> list[str]:
    urls = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return [u for u in urls if not u.startswith("data:") and u != page_url]
