"""The live demo page at `/`, served by stockstream and run in headless Chromium."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.inprocess import inprocess_stack
from tests.support.node import JS_DIR, NodeProcess

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SIMULATED = ("--simulate", "--simulate-rate", "10")


@pytest.fixture
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture
def playwright(node_harness: None) -> None:
    if not (JS_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        pytest.fail("playwright-core is missing from tests/js/node_modules (it belongs in tests/js/package.json)")


async def test_page_and_its_files_are_served_with_a_strict_policy() -> None:
    async with inprocess_stack("memory") as stack, aiohttp.ClientSession() as http:
        async with http.get(stack.url + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
            policy = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        # Everything the page loads comes from the server itself: no CDN.
        for asset in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
            assert asset in page
            async with http.get(stack.url + asset) as resp:
                assert resp.status == 200, asset
                assert resp.headers["Content-Security-Policy"] == policy
        assert "http://" not in page and "https://" not in page
        for missing in ("/static/nope.js", "/static/..%2fdemo.py", "/static/%2e%2e/app.py"):
            async with http.get(stack.url + missing) as resp:
                assert resp.status == 404, missing
                body = await resp.json()
                assert body["error"]["code"] == "not_found"


async def expect_line(browser: NodeProcess, kind: str, name: str | None = None,
                      timeout: float = 30.0) -> dict[str, Any]:
    """The browser script's next report of `kind` (and step `name`); fails at once on a failure."""
    def find(lines: list[Any]) -> Any:
        for line in lines:
            if line.get("kind") == "failed":
                raise AssertionError(f"in the browser: {line.get('error')}\nstderr: {browser.stderr_text[-2000:]}")
            if line.get("kind") == kind and (name is None or line.get("name") == name):
                return line
        if browser.exited.is_set():
            raise AssertionError(f"browser script exited; output: {lines[-5:]!r}\n"
                                 f"stderr: {browser.stderr_text[-2000:]}")
        return None
    return await browser.lines.wait_for(find, timeout, f"{kind} {name or ''}".strip())


@pytest.mark.slow
async def test_quotes_board_streams_adds_removes_and_reconnects(servers, chromium, playwright) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    server = await servers.start(args=SIMULATED)
    browser = NodeProcess("demo_page.js", server.url + "/", str(ARTIFACTS), name="demo-page")
    await browser.start()
    try:
        live = await expect_line(browser, "step", "live", timeout=45)
        assert {"AAPL", "MSFT", "NVDA", "BTC-USD"} <= set(live["defaults"])
        await expect_line(browser, "step", "defaults-priced")
        changed = await expect_line(browser, "step", "added-and-changed")
        assert changed["first"] != changed["second"]
        removed = await expect_line(browser, "step", "removed")
        row = await expect_line(browser, "step", "row")
        assert row["cells"][0] == "TSLA"
        assert "%" in row["cells"][2], row
        assert len(row["sparkPoints"].split()) >= 2, row
        await expect_line(browser, "step", "screenshot")
        assert (ARTIFACTS / "demo-page.png").stat().st_size > 0

        # A planned restart: the page is told, shows it, and comes back by itself.
        await expect_line(browser, "wait")
        assert server.terminate() == 0
        down = await expect_line(browser, "step", "reconnecting")
        assert "restarting" in down["status"], down
        restarted = servers.launch(args=SIMULATED, port=server.port)
        await restarted.wait_ready()
        await browser.send("restarted")
        resumed = await expect_line(browser, "step", "resumed")
        assert "TSLA" in resumed["symbols"] and removed["symbol"] not in resumed["symbols"]
        await expect_line(browser, "done")
    finally:
        await browser.stop()
