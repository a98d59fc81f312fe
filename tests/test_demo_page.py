"""The live demo page at `/`, served by stockstream and run in headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stockstream.auth import mint_token
from tests.support.inprocess import Stack, inprocess_stack, settings_for
from tests.support.node import JS_DIR, NodeProcess
from tests.support.waiting import now_ms, period_with_room

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SIMULATED = ("--simulate", "--simulate-rate", "10")
VENDORED = (
    "/static/vendor/lightweight-charts.standalone.production.js",
    "/static/vendor/lightweight-charts.LICENSE.txt",
    "/static/vendor/lightweight-charts.NOTICE.txt",
)
MINUTE_MS = 60_000
DAY_MS = 86_400_000


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
    """The page and every file it loads (the vendored chart library with its
    licence and notice included) come from stockstream itself under a strict
    Content-Security-Policy, and nothing outside the page's folder is served."""
    async with inprocess_stack("memory") as stack, aiohttp.ClientSession() as http:
        async with http.get(stack.url + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
            policy = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        # Everything the page loads comes from the server itself: no CDN. The only
        # absolute address is the link to TradingView the chart library's licence asks for.
        for asset in ("/static/app.js", "/static/chart.js", "/static/style.css", "/static/favicon.svg", *VENDORED):
            assert asset in page
            async with http.get(stack.url + asset) as resp:
                assert resp.status == 200, asset
                assert resp.headers["Content-Security-Policy"] == policy
                body = await resp.read()
            if asset.endswith(".js") and "vendor/" in asset:
                assert b"Lightweight Charts" in body and b"Apache License 2.0" in body
        assert "http://" not in page
        assert page.count("https://") == 1 and '<a href="https://www.tradingview.com/"' in page
        assert '<script src="http' not in page and '<link rel="stylesheet" href="http' not in page
        for missing in (
            "/static/nope.js",
            "/static/..%2fdemo.py",
            "/static/%2e%2e/app.py",
            "/static/vendor/..%2f..%2fdemo.py",
            "/static/vendor/",
            "/static/vendor",
        ):
            async with http.get(stack.url + missing) as resp:
                assert resp.status == 404, missing
                body = await resp.json()
                assert body["error"]["code"] == "not_found"


async def expect_line(
    browser: NodeProcess, kind: str, name: str | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """The browser script's report of `kind` (and step or wait `name`); fails at once on a failure."""

    def find(lines: list[Any]) -> Any:
        for line in lines:
            if line.get("kind") == "failed":
                raise AssertionError(f"in the browser: {line.get('error')}\nstderr: {browser.stderr_text[-2000:]}")
            if line.get("kind") == kind and (name is None or name in (line.get("name"), line.get("for"))):
                return line
        if browser.exited.is_set():
            raise AssertionError(
                f"browser script exited; output: {lines[-5:]!r}\nstderr: {browser.stderr_text[-2000:]}"
            )
        return None

    return await browser.lines.wait_for(find, timeout, f"{kind} {name or ''}".strip())


@pytest.mark.slow
async def test_quotes_board_streams_adds_removes_and_reconnects(servers, chromium, playwright) -> None:
    """The board streams the default symbols, adds and removes symbols, rejects an
    invalid one, and across a server restart says so and resumes by itself, its
    prices and open chart following the restarted server's stream."""
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
        # The restarted (embedded) backend numbers TSLA's updates from 1 again: the
        # page follows the new stream rather than waiting for it to pass the old numbers.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{restarted.url}/api/quotes/TSLA") as resp:
                newest_seq = (await resp.json())["seq"]
        latest = resumed["row"]["latest"]
        assert latest["seq"] <= newest_seq, (latest, newest_seq)
        assert resumed["row"]["points"][-1] == latest["price"], resumed["row"]
        assert resumed["chart"]["symbol"] == "TSLA" and resumed["chart"]["candles"], resumed["chart"]
        await expect_line(browser, "done")
    finally:
        await browser.stop()


def chart_candles(server_candles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The server's candles as the chart holds them (time in seconds)."""
    return [
        {"time": c["start"] // 1000, "open": c["open"], "high": c["high"], "low": c["low"], "close": c["close"]}
        for c in server_candles
    ]


def fed_by(event: dict[str, Any]) -> dict[str, Any]:
    """A `candle` event as the chart holds its candle."""
    return chart_candles([event])[0]


async def server_candles(stack: Stack, symbol: str, interval: str, start: int, end: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        url = f"{stack.url}/api/candles/{symbol}?interval={interval}&from={max(0, start)}&to={end}"
        async with http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["candles"]


async def test_chart_seeded_board_day_change_no_data_and_phone_layout(
    backend: str, request: pytest.FixtureRequest, chromium, playwright
) -> None:
    """The board starts from the server's history (sparklines, the day's change
    from its first UTC price, its low and high) and says "no data yet" for a
    symbol without a price; a clicked symbol opens a candlestick chart seeded
    with the server's candles whose current candle moves with published prices
    and whose next one starts at the bucket boundary, with volume bars, fed by
    the server's live `candle` events of the chosen interval (the page builds
    no candle itself); and at 390 px every control is reachable without
    sideways scrolling."""
    ARTIFACTS.mkdir(exist_ok=True)
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    # Yesterday's prices must still be in history whatever the time of day.
    async with inprocess_stack(backend, redis_url, history_max_age=7 * 86400.0) as stack:
        # The chart's live 1m candle must still be the one these prices fall in
        # when the browser publishes into it (an update of a closed period is late).
        minute = await period_with_room(MINUTE_MS, 40_000)
        now = now_ms()
        midnight = now - now % DAY_MS
        # Yesterday's last price is neither the day's open nor its high.
        await stack.publish("AAPL", 250.0, timestamp=midnight - 1000, volume=7)
        await stack.publish("AAPL", 100.0, timestamp=midnight, volume=5)
        published = [101.0 + i for i in range(10)]
        for i, price in enumerate(published):
            newest = await stack.publish("AAPL", price, timestamp=min(now, minute + i), volume=100)
        # Wide numbers, for the layout at narrower widths.
        await stack.publish("MSFT", 67215.0, volume=10)
        await stack.publish("MSFT", 67627.61, volume=10)
        await stack.publish("OLD", 12.5, timestamp=midnight - 5000)

        browser = NodeProcess(
            "demo_chart.js", stack.url + "/?symbols=AAPL,MSFT,OLD,ZZZZ", str(ARTIFACTS), name="demo-chart"
        )
        await browser.start()
        try:
            seeded = await expect_line(browser, "step", "seeded", timeout=45)
            aapl = seeded["aapl"]
            assert seeded["aaplState"]["points"] == [250.0, 100.0, *published], seeded
            assert aapl["sparkPoints"] == 12, aapl
            assert aapl["last"] == "110.00"
            assert aapl["change"] == "+10.00 (+10.00%)", aapl  # from 100.00, the day's first price
            assert aapl["range"] == "100.00 – 110.00", aapl
            assert seeded["zzzz"]["state"] == "empty" and seeded["zzzz"]["last"] == "no data yet", seeded
            # Last priced yesterday: its price shows, but no change or range for today.
            assert seeded["old"]["last"] == "12.50" and seeded["old"]["change"] == seeded["old"]["range"] == "", seeded

            cut = newest["timestamp"]
            chart = (await expect_line(browser, "step", "chart-seeded"))["chart"]
            expected = await server_candles(stack, "AAPL", "1m", cut - 300 * MINUTE_MS, cut)
            assert chart["interval"] == "1m" and chart["candles"] == chart_candles(expected), chart
            assert [v["value"] for v in chart["volume"]] == [c["volume"] for c in expected]
            before = chart["candles"][-1]
            assert before["time"] == minute // 1000 and before["close"] == 110.0

            await expect_line(browser, "wait", "publish-same-bucket")
            await stack.publish("AAPL", 112.5, timestamp=cut + 1, volume=50)
            await browser.send({"price": 112.5})
            moved_step = await expect_line(browser, "step", "candle-moved")
            moved = moved_step["chart"]
            assert len(moved["candles"]) == len(chart["candles"])
            assert moved["candles"][-1] == {**before, "high": 112.5, "close": 112.5}
            assert moved["volume"][-1]["value"] == expected[-1]["volume"] + 50
            # The chart holds what the server's live candle stream sent last.
            stream = moved_step["stream"]
            assert stream["requests"] == [{"action": "subscribeCandles", "symbol": "AAPL", "interval": "1m"}], stream
            assert moved["candleEvents"] > chart["candleEvents"], (moved["candleEvents"], chart["candleEvents"])
            assert fed_by(stream["candles"][-1]) == moved["candles"][-1], stream
            assert stream["candles"][-1]["volume"] == expected[-1]["volume"] + 50, stream
            # The legend reads out the newest candle.
            assert moved_step["legend"].split() == [
                "O",
                f"{before['open']:.2f}",
                "H",
                "112.50",
                "L",
                f"{before['low']:.2f}",
                "C",
                "112.50",
                "V",
                f"{expected[-1]['volume'] + 50:,}",
            ], moved_step["legend"]

            await expect_line(browser, "wait", "publish-next-bucket")
            next_ts = minute + MINUTE_MS + 5
            await stack.publish("AAPL", 108.25, timestamp=next_ts, volume=30)
            await browser.send({"bucket": (minute + MINUTE_MS) // 1000})
            started_step = await expect_line(browser, "step", "candle-started")
            started = started_step["chart"]
            assert fed_by(started_step["stream"]["candles"][-1]) == started["candles"][-1], started_step
            assert started["candles"][:-1] == moved["candles"]
            assert started["candles"][-1] == {
                "time": (minute + MINUTE_MS) // 1000,
                "open": 108.25,
                "high": 108.25,
                "low": 108.25,
                "close": 108.25,
            }
            assert started["volume"][-1]["value"] == 30

            seconds = await expect_line(browser, "step", "interval-1s")
            assert seconds["pressed"] == "true"
            expected = await server_candles(stack, "AAPL", "1s", next_ts - 300_000, next_ts)
            assert seconds["chart"]["candles"] == chart_candles(expected), seconds
            await expect_line(browser, "wait", "publish-next-second")
            tick_ts = next_ts + 1000
            await stack.publish("AAPL", 109.0, timestamp=tick_ts, volume=10)
            await browser.send({"bucket": (tick_ts - tick_ts % 1000) // 1000})
            ticked = await expect_line(browser, "step", "second-candle")
            assert ticked["stream"]["requests"][-2:] == [
                {"action": "unsubscribeCandles", "symbol": "AAPL", "interval": "1m"},
                {"action": "subscribeCandles", "symbol": "AAPL", "interval": "1s"},
            ], ticked["stream"]
            assert fed_by(ticked["stream"]["candles"][-1]) == ticked["chart"]["candles"][-1], ticked["stream"]
            assert ticked["stream"]["candles"][-1]["interval"] == "1s"
            assert ticked["chart"]["candles"][:-1] == chart_candles(expected)
            assert ticked["chart"]["candles"][-1]["close"] == 109.0
            assert ticked["quote"].split() == ["109.00", "+9.00", "(+9.00%)"], ticked["quote"]

            widths = (await expect_line(browser, "step", "widths"))["widths"]
            assert all(int(width) >= scroll for width, scroll in widths.items()), widths
            phone = await expect_line(browser, "step", "phone")
            assert phone["scrollWidth"] <= 390, phone
            assert phone["controls"] >= 14 and phone["unreachable"] == [], phone

            closed = await expect_line(browser, "step", "closed")
            assert closed["focused"] == "AAPL", closed  # Escape closed the chart; focus is back on AAPL
            no_data = await expect_line(browser, "step", "no-data-chart")
            assert "No data yet for ZZZZ" in no_data["message"] and no_data["onTop"] is True, no_data
            assert no_data["chart"]["candles"] == [], no_data
            await expect_line(browser, "wait", "publish-first-price")
            first = await stack.publish("ZZZZ", 42.5, volume=3)
            await browser.send({"price": 42.5})
            started = await expect_line(browser, "step", "first-price")
            bucket = first["timestamp"] - first["timestamp"] % 1000
            assert started["chart"]["candles"] == [
                {"time": bucket // 1000, "open": 42.5, "high": 42.5, "low": 42.5, "close": 42.5}
            ], started
            assert started["chart"]["volume"][-1]["value"] == 3
            assert started["zzzz"]["state"] == "live" and started["zzzz"]["last"] == "42.50", started
            assert started["messageHidden"] is True
            await expect_line(browser, "done")
        finally:
            await browser.stop()
        for shot in ("demo-chart-desktop.png", "demo-chart-phone.png", "demo-chart-phone-no-data.png"):
            assert (ARTIFACTS / shot).stat().st_size > 0, shot


async def test_a_token_in_the_address_reaches_the_stream_and_the_api(chromium, playwright) -> None:
    """With REQUIRE_AUTH, a token in the page's address (?token=) goes with the
    stream's subscription and the history and candle requests: the board is
    seeded from history and the day's first price, and a symbol the token may
    not read is taken off the board with the reason."""
    secret = "demo-page-secret-that-is-long-enough"
    async with inprocess_stack("memory", require_auth=True, jwt_secret=secret) as stack:
        now = now_ms()
        midnight = now - now % DAY_MS
        await stack.publish("AAPL", 50.0, timestamp=midnight)
        for price in (51.0, 52.0, 55.0):
            await stack.publish("AAPL", price, timestamp=max(midnight + 1, now - 1000))
        token = mint_token(settings_for(None, 0, jwt_secret=secret), "trader", symbols=["AAPL", "MSFT"])
        browser = NodeProcess("demo_rows.js", f"{stack.url}/?symbols=AAPL,TSLA&token={token}", name="demo-rows")
        await browser.start()
        try:
            board = await expect_line(browser, "step", "board", timeout=45)
            assert set(board["rows"]) == {"AAPL"}, board
            assert "TSLA" in board["message"] and "forbidden" in board["message"], board
            aapl = board["rows"]["AAPL"]
            assert aapl["points"] == [50.0, 51.0, 52.0, 55.0], aapl
            assert aapl["change"] == "+5.00 (+10.00%)", aapl
            await expect_line(browser, "done")
        finally:
            await browser.stop()
