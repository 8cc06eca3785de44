"""A real headless Chromium driven over the DevTools protocol (CDP), for tests.

Small on purpose: start the browser with ``--remote-debugging-port=0``, read
the port it picked from ``DevToolsActivePort`` in its profile, and send CDP
commands to its first page over a WebSocket (``trio_websocket``, which
py-libp2p already installs).  Each command opens its own connection inside
``trio.run``, so the synchronous tests and their :func:`wait_for` loops need
no event loop of their own.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from ._daemons import wait_for

_ids = itertools.count(1)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium process with its own profile under ``profile``."""

    def __init__(self, executable: str, profile: Path, *, width: int = 1400, height: int = 1100) -> None:
        self.profile = profile
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--window-size={width},{height}", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        port = wait_for(lambda: port_file.exists() and port_file.read_text().split("\n", 1)[0].strip(),
                        timeout=30, what="Chromium's DevTools port")
        self.devtools = f"http://127.0.0.1:{port}"
        pages = wait_for(lambda: [t for t in httpx.get(self.devtools + "/json/list", timeout=5).json()
                                  if t.get("type") == "page"], timeout=30, what="a Chromium page")
        self.page_ws = pages[0]["webSocketDebuggerUrl"]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def command(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30) -> dict[str, Any]:
        """Send one CDP command to the page and return its ``result`` (AssertionError on a CDP error)."""
        async def one() -> dict[str, Any]:
            with trio.fail_after(timeout):
                async with open_websocket_url(self.page_ws, max_message_size=64 << 20) as ws:
                    n = next(_ids)
                    await ws.send_message(json.dumps({"id": n, "method": method, "params": params or {}}))
                    while True:
                        message = json.loads(await ws.get_message())
                        if message.get("id") == n:
                            assert "error" not in message, message["error"]
                            return message.get("result", {})

        return trio.run(one)

    def navigate(self, url: str) -> None:
        self.command("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (exceptions fail the test)."""
        result = self.command("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A full-page PNG of the page, written to ``path``."""
        size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        shot = self.command("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
