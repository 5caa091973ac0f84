"""Headless Chromium driven through the DevTools protocol (for the MLflow UI test).

Debian's ``chromium`` package, started with a fresh profile and no network of its own beyond the
loopback pages it is sent to; the protocol is spoken over a websocket with aiohttp (already here
through ray[default]), so no browser download and no driver package are needed.

    with Chromium(tmp_path) as page:
        page.goto("http://127.0.0.1:5000/#/models/x")
        page.wait_for_text(["champion"])
        page.screenshot(tmp_path / "models.png")
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000", "--remote-debugging-address=127.0.0.1",
                  "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One browser, one page; synchronous methods over an asyncio loop of its own."""

    def __init__(self, tmp: Path, timeout: float = 30.0) -> None:
        self.tmp, self.timeout = Path(tmp), timeout
        self.profile = self.tmp / "chromium-profile"
        self.loop = asyncio.new_event_loop()
        self.proc: subprocess.Popen | None = None
        self._ids = 0

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        exe = chromium_path()
        assert exe, "chromium is not installed"
        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's old port
        self.log = open(self.tmp / "chromium.log", "wb")
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        port = self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.loop.run_until_complete(self._connect(pages[0]["webSocketDebuggerUrl"]))
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.loop.run_until_complete(self._close())
        finally:
            self.loop.close()
            if self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log.close()

    def _devtools_port(self) -> int:
        """Chromium writes the port it picked (port 0: the OS's choice) into the profile."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: "
                                   f"{(self.tmp / 'chromium.log').read_text(errors='replace')[-2000:]}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    async def _connect(self, ws_url: str) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(ws_url, max_msg_size=0)

    async def _close(self) -> None:
        await self.ws.close()
        await self.session.close()

    # --- protocol -------------------------------------------------------------------------
    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        msg_id = self._ids
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive(timeout=self.timeout)).data)
            if msg.get("id") == msg_id:  # events (no id) are not needed here
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.loop.run_until_complete(self._call(method, params))

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    # --- what the tests use ---------------------------------------------------------------
    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """The page's visible text, no-break spaces as plain ones (the UI writes '@\u00a0champion')."""
        return self.evaluate("document.body ? document.body.innerText.replace(/\\u00a0/g, ' ') : ''") or ""

    def wait_for_text(self, needles: list[str], timeout: float | None = None) -> str:
        """The page's visible text once it contains every needle (the React app renders late)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(0.25)
        missing = [n for n in needles if n not in text]
        raise AssertionError(f"page {self.evaluate('location.href')} never showed {missing}; it shows:\n{text[:3000]}")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """The value of a JS expression once it is truthy."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"{expression!r} stayed falsy on {self.evaluate('location.href')}:\n{self.text()[:2000]}")

    def click_text(self, text: str) -> None:
        """Click the innermost visible element whose text is exactly ``text``."""
        js = f"""(() => {{
            const want = {json.dumps(text)};
            const els = [...document.querySelectorAll('a, button, span, div, [role=tab], [role=button]')]
              .filter(e => e.offsetParent !== null && e.innerText && e.innerText.trim() === want);
            if (!els.length) return false;
            els[els.length - 1].click();
            return true;
        }})()"""
        self.wait_for(js)

    def type_into(self, selector: str, text: str) -> None:
        """Replace the text of an input the way a user types (React sees real input events)."""
        self.wait_for(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "if (!e) return false; e.focus(); e.select(); return true; })()")
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
