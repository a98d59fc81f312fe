// Drives the demo page's seeded board, its candlestick chart and its phone
// layout in headless Chromium, while the test publishes prices.
//
//   node demo_chart.js URL SCREENSHOT_DIR
//
// The page is opened with ?symbols=AAPL,MSFT,OLD,ZZZZ after the test published
// AAPL's and MSFT's history and a price of OLD's yesterday; ZZZZ has no price. stdout, one JSON line each:
// {"kind": "step", "name": ..., ...} with what the page shows, {"kind": "wait",
// "for": ...} when the test should publish (it answers with a JSON line on
// stdin once it has), then {"kind": "done"} or {"kind": "failed", "error": ...}.
"use strict";
const path = require("path");
const { out, ask, launch, watchProblems, run } = require("./browser");

const [url, shotDir] = process.argv.slice(2);
const STEP_TIMEOUT = 10000;
const PHONE = { width: 390, height: 844 };

// The page's /live-price frames: the candle requests it sent and the candle events it received.
function watchCandleFrames(page) {
  const frames = { requests: [], candles: [] };
  const parse = (payload) => {
    try {
      return JSON.parse(payload);
    } catch (e) {
      return null;
    }
  };
  page.on("websocket", (ws) => {
    ws.on("framesent", (frame) => {
      const message = parse(frame.payload);
      if (message && /Candles$/.test(message.action)) frames.requests.push(message);
    });
    ws.on("framereceived", (frame) => {
      const message = parse(frame.payload);
      if (message && message.type === "candle") frames.candles.push(message);
    });
  });
  return frames;
}

// The board redraws once per animation frame: after this, it shows every update received so far.
function nextFrame(page) {
  return page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
}

function chartState(page) {
  return page.evaluate(() => window.stockstreamDemo.chart());
}

function rowState(page, symbol) {
  return page.evaluate((s) => window.stockstreamDemo.row(s), symbol);
}

// What the board's row shows, as text.
async function rowText(page, symbol) {
  const row = page.locator(`tr[data-symbol="${symbol}"]`);
  return {
    state: await row.getAttribute("data-state"),
    last: (await row.locator(".price").textContent()).trim(),
    change: (await row.locator("td.change").textContent()).trim(),
    range: (await row.locator("td.range").textContent()).trim(),
    sparkPoints: ((await row.locator("polyline").getAttribute("points")) || "").split(" ").filter(Boolean).length,
  };
}

// Waits until the chart is seeded and its newest candle has the fields of
// `want` (any of interval, time, close), and returns the chart's state.
async function waitForCandle(page, want, what) {
  try {
    await page.waitForFunction((w) => {
      const state = window.stockstreamDemo.chart();
      const last = state.candles[state.candles.length - 1];
      return state.seeded && last !== undefined && (w.interval === undefined || state.interval === w.interval)
        && (w.time === undefined || last.time === w.time) && (w.close === undefined || last.close === w.close);
    }, want, { timeout: STEP_TIMEOUT });
  } catch (err) {
    throw new Error(`${what}: the chart holds ${JSON.stringify(await chartState(page))}`);
  }
  return chartState(page);
}

// Every button, input and link: inside the page's width once scrolled into view, and the one hit by a tap there.
async function unreachableControls(page) {
  const found = [];
  const controls = page.locator("button:visible, input:visible, a:visible");
  const count = await controls.count();
  for (let i = 0; i < count; i += 1) {
    const control = controls.nth(i);
    await control.scrollIntoViewIfNeeded();
    const problem = await control.evaluate((el, width) => {
      const box = el.getBoundingClientRect();
      const name = el.getAttribute("aria-label") || el.textContent.trim() || el.id || el.tagName;
      // Half a pixel of slack: layout positions are fractional.
      if (box.left < -0.5 || box.right > width + 0.5) return `${name}: spans x ${box.left}..${box.right}`;
      if (box.top < -0.5 || box.bottom > window.innerHeight + 0.5) {
        return `${name}: not in view after scrolling (y ${box.top}..${box.bottom} of ${window.innerHeight}, scrolled to ${window.scrollY} of ${document.documentElement.scrollHeight})`;
      }
      const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
      if (!hit || !(hit === el || el.contains(hit))) return `${name}: covered by ${hit && hit.outerHTML.slice(0, 80)}`;
      return null;
    }, PHONE.width);
    if (problem) found.push(problem);
  }
  return { count, found };
}

async function main() {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, locale: "en-US", timezoneId: "UTC" });
    // ZZZZ has no price, so the page's history request for it answers 404.
    const problems = watchProblems(page, /status of 404/);
    const frames = watchCandleFrames(page);
    const stream = () => ({ requests: frames.requests.slice(), candles: frames.candles.slice(-3) });

    // -- the board, seeded from history before any live update --------------------
    await page.goto(url, { timeout: STEP_TIMEOUT });
    await page.waitForSelector('#status[data-state="live"]', { timeout: STEP_TIMEOUT });
    await page.waitForSelector('tr[data-symbol="ZZZZ"][data-state="empty"]', { timeout: STEP_TIMEOUT });
    await page.waitForLoadState("networkidle", { timeout: STEP_TIMEOUT });
    out({
      kind: "step", name: "seeded",
      aapl: await rowText(page, "AAPL"), aaplState: await rowState(page, "AAPL"),
      zzzz: await rowText(page, "ZZZZ"), old: await rowText(page, "OLD"),
    });

    // -- the chart: seeded from /api/candles, then moved by live prices --------------
    await page.click('tr[data-symbol="AAPL"] button.open-chart');
    await page.waitForSelector("#chart-panel:not([hidden]) canvas", { timeout: STEP_TIMEOUT });
    // Off the chart: with the crosshair on a candle, the legend would show that one.
    await page.mouse.move(1, 1);
    const seeded = await waitForCandle(page, {}, "seeded 1m candles");
    const expanded = await page.getAttribute('tr[data-symbol="AAPL"] button.open-chart', "aria-expanded");
    out({ kind: "step", name: "chart-seeded", chart: seeded, expanded });

    const same = await ask("publish-same-bucket", { last: seeded.candles[seeded.candles.length - 1] });
    const moved = await waitForCandle(page, { close: same.price }, "the current candle moves");
    out({ kind: "step", name: "candle-moved", chart: moved, legend: await page.textContent("#chart-legend"),
          stream: stream() });

    const next = await ask("publish-next-bucket");
    const started = await waitForCandle(page, { time: next.bucket }, "a new candle starts");
    out({ kind: "step", name: "candle-started", chart: started, stream: stream() });

    await page.click('#chart-panel button[data-interval="1s"]');
    const pressed = await page.getAttribute('#chart-panel button[data-interval="1s"]', "aria-pressed");
    const seconds = await waitForCandle(page, { interval: "1s" }, "1s candles");
    out({ kind: "step", name: "interval-1s", chart: seconds, pressed });
    const tick = await ask("publish-next-second");
    const secondCandle = await waitForCandle(page, { time: tick.bucket }, "a new 1s candle");
    await nextFrame(page);
    out({ kind: "step", name: "second-candle", chart: secondCandle, quote: await page.textContent("#chart-quote"),
          stream: stream() });
    await page.screenshot({ path: path.join(shotDir, "demo-chart-desktop.png"), fullPage: true });

    // -- narrower screens: nothing scrolls sideways ------------------------------------
    const widths = {};
    for (const width of [1024, 800, 700, 500]) {
      await page.setViewportSize({ width, height: 900 });
      await nextFrame(page);
      widths[width] = await page.evaluate(() => document.documentElement.scrollWidth);
    }
    out({ kind: "step", name: "widths", widths });

    // -- a phone: one column, every control reachable, no sideways scrolling ---------
    await page.setViewportSize(PHONE);
    await nextFrame(page);
    const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    const reach = await unreachableControls(page);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(shotDir, "demo-chart-phone.png"), fullPage: true });
    out({ kind: "step", name: "phone", scrollWidth, controls: reach.count, unreachable: reach.found });

    // -- Escape closes the chart and focus returns to its symbol ------------------------
    await page.focus('#chart-panel button[data-interval="1m"]');
    await page.keyboard.press("Escape");
    await page.waitForSelector("#chart-panel", { state: "hidden", timeout: STEP_TIMEOUT });
    const focused = await page.evaluate(() => document.activeElement.closest("tr") && document.activeElement.closest("tr").dataset.symbol);
    out({ kind: "step", name: "closed", focused });

    // -- a symbol without data: the chart says so, then starts with its first price ----
    await page.click('tr[data-symbol="ZZZZ"] button.open-chart');
    await page.waitForSelector("#chart-message", { state: "visible", timeout: STEP_TIMEOUT });
    // "Loading…" shows while the candles are fetched; what counts is what replaces it.
    await page.waitForFunction(() => document.querySelector("#chart-message").textContent !== "Loading…", null, {
      timeout: STEP_TIMEOUT,
    });
    const emptyChart = {
      message: await page.textContent("#chart-message"),
      // Shown over the chart, not hidden under its canvas.
      onTop: await page.locator("#chart-message").evaluate((el) => {
        const box = el.getBoundingClientRect();
        return document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2) === el;
      }),
      chart: await chartState(page),
    };
    await page.screenshot({ path: path.join(shotDir, "demo-chart-phone-no-data.png"), fullPage: true });
    out({ kind: "step", name: "no-data-chart", ...emptyChart });
    const first = await ask("publish-first-price");
    const firstCandle = await waitForCandle(page, { close: first.price }, "the first candle");
    await page.waitForSelector('tr[data-symbol="ZZZZ"][data-state="live"]', { timeout: STEP_TIMEOUT });
    out({
      kind: "step", name: "first-price", chart: firstCandle, zzzz: await rowText(page, "ZZZZ"),
      messageHidden: await page.locator("#chart-message").isHidden(),
    });

    if (problems.length) throw new Error(problems.join("; "));
    out({ kind: "done" });
  } finally {
    await browser.close();
  }
}

run(main);
