"""The chat page at ``/`` in a real browser (headless Chromium): the model picker fed by ``/v1/models``, the fit
verdict, a question to SmolLM2 answered as a stream, Markdown rendered, the stop button. A screenshot of the page
is saved next to the test's files (``chat.png`` in its tmp dir)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from e2e.serving import FAST, REF, SECOND, serve, two_models
from helpers.browser import chromium

QUESTION = "What is the capital of France? Answer with one word."


def test_the_chat_page_in_chromium(tmp_path: Path) -> None:
    home = two_models(tmp_path / "home")
    with serve(home, *FAST, log=tmp_path / "serve.log") as server:
        asyncio.run(_session(server.url, tmp_path))
        # the stop button disconnected the long answer: the model is free again at once
        deadline = time.monotonic() + 5
        while any(m["busy"] for m in httpx.get(f"{server.url}/modelctl/ps").json()["models"]):
            assert time.monotonic() < deadline, "the stopped answer went on generating"
            time.sleep(0.05)
    shot = tmp_path / "chat.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


async def _session(url: str, tmp_path: Path) -> None:
    async with chromium(tmp_path / "profile") as page:
        await page.goto(f"{url}/")
        options = await page.wait_for(
            "document.querySelectorAll('#model option').length >= 2 && "
            "[...document.querySelectorAll('#model option')].map(o => o.value)"
        )
        assert sorted(options) == sorted([REF, SECOND])
        await page.evaluate(
            f"(() => {{ const s = document.getElementById('model'); s.value = {json.dumps(REF)};"
            " s.dispatchEvent(new Event('change')); })()"
        )
        fit = await page.wait_for(
            "document.getElementById('fit').textContent.startsWith('fit: ') && "
            "document.getElementById('fit').textContent"
        )
        assert "fits" in fit and "CPU RAM" in fit and "context 512" in fit

        await page.evaluate("document.getElementById('temperature').value = '0'")
        await page.evaluate(f"document.getElementById('prompt').value = {json.dumps(QUESTION)}")
        await page.evaluate("document.getElementById('send').click()")
        await page.wait_for("document.querySelector('.msg.assistant')?.dataset.done === '1'", timeout=120)
        answer = await page.evaluate("document.querySelector('.msg.assistant').innerText")
        assert "Paris" in answer, answer
        assert "tokens/s" in answer  # the answer's stats line
        rendered = await page.evaluate("markdown('**bold** and `code`\\n\\n- one\\n- two\\n\\n<script>x</script>')")
        assert "<strong>bold</strong>" in rendered and "<code>code</code>" in rendered and "<li>two</li>" in rendered
        assert "<script>" not in rendered  # the model's text is escaped
        await page.evaluate("document.getElementById('fit').textContent")
        await page.wait_for("document.getElementById('fit').textContent.includes('loaded')")
        await page.screenshot(tmp_path / "chat.png")

        # a long answer, stopped after its first pieces: text shown before the answer is done is what streaming
        # means (a count of DOM updates was not: under load a 7-token answer arrives in as few as 3 pieces)
        await page.evaluate("document.getElementById('prompt').value = 'Count from 1 to 500, one number a line.'")
        await page.evaluate("document.getElementById('send').click()")
        await page.wait_for("document.querySelectorAll('.msg.assistant')[1]?.innerText.length > 3", timeout=120)
        await page.evaluate("document.getElementById('stop').click()")
        await page.wait_for("document.querySelectorAll('.msg.assistant')[1].dataset.done === '1'")
        assert "stopped" in await page.evaluate("document.querySelectorAll('.msg.assistant')[1].innerText")
        assert await page.evaluate("document.getElementById('send').disabled") is False
