"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol: open a page, run JavaScript in
it, take a screenshot. A few dozen lines over aiohttp's websocket client instead of a browser-automation stack.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "chromium"


class Page:
    """One tab, spoken to over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        await self._ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = await self._ws.receive_json(timeout=120)
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll until ``expression`` is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            await asyncio.sleep(0.05)

    async def goto(self, url: str) -> None:
        await self.call("Page.enable")
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def chromium(profile: Path, *, width: int = 1100, height: int = 760) -> AsyncIterator[Page]:
    """A headless Chromium with an empty profile in ``profile``; yields its first tab; always ends the browser."""
    executable = shutil.which(CHROMIUM)
    if executable is None:
        raise RuntimeError("chromium is not installed: run make setup (make test installs it)")
    profile.mkdir(parents=True, exist_ok=True)
    log = profile / "chromium.log"
    with log.open("wb") as err:  # a file, not a pipe: chromium keeps writing to it and must never block
        proc = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None:
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", log.read_text(errors="replace"))
            if found:
                port = int(found.group(1))
            elif proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode}: {log.read_text(errors='replace')}")
            elif time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools server")
            else:
                await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = await answer.json()
            target = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 << 20) as ws:
                yield Page(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
