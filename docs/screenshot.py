"""Take a screenshot of a live web page (the Dask dashboard) with headless Chromium.

    python docs/screenshot.py http://127.0.0.1:8787/status docs/dashboard.png

Chromium's own ``--screenshot`` flag shoots as soon as the page has loaded, before the
dashboard's plots arrive over their websocket, and gives a blank page. This script drives
Chromium over the DevTools protocol instead: open the page, wait a few seconds in real time
while the plots fill in, then ``Page.captureScreenshot``.

It starts its own Chromium (Debian: ``apt-get install chromium``) with a fresh profile, the
DevTools port on 127.0.0.1 only and background networking off, and stops it afterwards.
Making docs/dashboard.png, inside a network namespace that has only loopback::

    .venv/bin/python tests/loopback_only.py bash -c '
        set -m                      # job control: the run in the background keeps its Ctrl-C
        log=$(mktemp)
        .venv/bin/python -m pipelines run ingest --executor dask --keep-cluster --param scale=300 > $log &
        until grep -q "Dask dashboard" $log; do sleep 0.2; done
        .venv/bin/python docs/screenshot.py "$(grep -o "http://[^ ]*/status" $log)" docs/dashboard.png
        until grep -q "cluster kept up" $log; do sleep 1; done
        kill -INT %1; wait; tail -n 3 $log'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

# Bokeh 3 draws its plots on canvases inside shadow roots: count them all (0 means a blank page).
COUNT_CANVASES = """(() => {
    let canvases = 0;
    const walk = (root) => root.querySelectorAll("*").forEach((el) => {
        if (el.tagName === "CANVAS") canvases += 1;
        if (el.shadowRoot) walk(el.shadowRoot);
    });
    walk(document);
    return {title: document.title, canvases};
})()"""


def start_browser(binary: str, profile: Path, width: int, height: int) -> tuple[subprocess.Popen[bytes], int]:
    """Chromium with a fresh profile; its DevTools port, read from the file it writes there."""
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"{binary} exited with {proc.returncode} before opening its DevTools port")
        time.sleep(0.1)
    raise TimeoutError(f"{binary} opened no DevTools port within 30 s")


class DevTools:
    """Just enough of the DevTools protocol: commands by id, events skipped but remembered."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message["method"])

    async def wait_for(self, event: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while event not in self.events:
                message = json.loads((await self.ws.receive()).data)
                if "method" in message:
                    self.events.append(message["method"])


async def capture(port: int, url: str, out: Path, *, width: int, height: int, wait: float) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tools = DevTools(ws)
            await tools.call(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
            await tools.call("Page.enable")
            await tools.call("Page.navigate", url=url)
            await tools.wait_for("Page.loadEventFired", timeout=30)
            await asyncio.sleep(wait)  # the plots arrive over the dashboard's own websocket
            shot = await tools.call("Page.captureScreenshot", format="png")
            found = await tools.call("Runtime.evaluate", returnByValue=True, expression=COUNT_CANVASES)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return found.get("result", {}).get("value", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the page, e.g. http://127.0.0.1:8787/status")
    parser.add_argument("output", type=Path, help="the PNG to write")
    parser.add_argument("--wait", type=float, default=6.0, help="seconds between load and screenshot (default 6)")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument(
        "--browser", help=f"Chromium's executable (default: the first of {', '.join(BROWSERS)} on PATH)"
    )
    args = parser.parse_args(argv)
    binary = args.browser or next(filter(None, map(shutil.which, BROWSERS)), None)
    if binary is None:
        parser.error("no Chromium found: apt-get install chromium, or pass --browser")
    profile = Path(tempfile.mkdtemp(prefix="screenshot-profile-"))
    proc = None
    try:
        proc, port = start_browser(binary, profile, args.width, args.height)
        found = asyncio.run(capture(port, args.url, args.output, width=args.width, height=args.height, wait=args.wait))
    finally:
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            with contextlib.suppress(ProcessLookupError):  # Chromium's helper processes share its process group
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    print(
        f"{args.output}: {args.width}x{args.height}, page {found.get('title')!r} with {found.get('canvases')} canvases"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
