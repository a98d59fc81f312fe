// Drives the demo page in headless Chromium (playwright-core), reporting over stdout.
//
//   node demo_page.js URL SCREENSHOT_DIR
//
// stdout, one JSON object per line: {"kind": "step", "name": ..., ...} as each
// check passes, {"kind": "wait", "for": "restart"} when the page is streaming
// and the test may restart the server (it answers with a line on stdin), and
// {"kind": "done"} or {"kind": "failed", "error": ...} at the end.
"use strict";
const path = require("path");
const { out, nextStdinLine, launch, watchProblems, run } = require("./browser");

const [url, shotDir] = process.argv.slice(2);
const STEP_TIMEOUT = 10000;

async function priceOf(page, symbol) {
  return page.locator(`tr[data-symbol="${symbol}"] .price`).textContent();
}

async function waitPriceChange(page, symbol) {
  // A first price, then a different one: the row is live, not just a snapshot.
  const row = `tr[data-symbol="${symbol}"]`;
  await page.waitForSelector(`${row} .price:not(.pending)`, { timeout: STEP_TIMEOUT });
  const first = await priceOf(page, symbol);
  await page.waitForFunction(
    ([selector, before]) => document.querySelector(selector).textContent !== before,
    [`${row} .price`, first], { timeout: STEP_TIMEOUT });
  return [first, await priceOf(page, symbol)];
}

// Waits until the chart of `symbol` is seeded and its newest candle closes at the row's latest price.
async function waitChartFollows(page, symbol) {
  await page.waitForFunction((s) => {
    const chart = window.stockstreamDemo.chart();
    const row = window.stockstreamDemo.row(s);
    const last = chart.candles[chart.candles.length - 1];
    return chart.symbol === s && chart.seeded && last !== undefined && row.latest !== null
      && last.close === row.latest.price;
  }, symbol, { timeout: STEP_TIMEOUT });
  return page.evaluate(() => window.stockstreamDemo.chart());
}

async function main() {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 960, height: 640 } });
    // A refused WebSocket, or a refused request, while the server restarts is expected; nothing else is.
    const problems = watchProblems(page, /WebSocket connection to .* failed|Failed to load resource: net::ERR_CONNECTION_REFUSED/);

    await page.goto(url, { timeout: STEP_TIMEOUT });
    await page.waitForSelector('#status[data-state="live"]', { timeout: STEP_TIMEOUT });
    const defaults = await page.locator("#quotes tr").evaluateAll((rows) => rows.map((r) => r.dataset.symbol));
    out({ kind: "step", name: "live", defaults });
    for (const symbol of defaults) {
      await page.waitForSelector(`tr[data-symbol="${symbol}"] .price:not(.pending)`, { timeout: STEP_TIMEOUT });
    }
    out({ kind: "step", name: "defaults-priced" });

    // Lower case on purpose: the page normalizes like the server does.
    await page.fill("#symbol-input", "tsla");
    await page.press("#symbol-input", "Enter");
    const [first, second] = await waitPriceChange(page, "TSLA");
    out({ kind: "step", name: "added-and-changed", symbol: "TSLA", first, second });

    const removed = defaults[1];
    await page.click(`tr[data-symbol="${removed}"] button.remove`);
    await page.waitForSelector(`tr[data-symbol="${removed}"]`, { state: "detached", timeout: STEP_TIMEOUT });
    out({ kind: "step", name: "removed", symbol: removed });

    await page.fill("#symbol-input", "not a symbol!");
    await page.press("#symbol-input", "Enter");
    await page.waitForFunction(() => document.getElementById("form-message").textContent.includes("not a valid symbol"),
      null, { timeout: STEP_TIMEOUT });
    out({ kind: "step", name: "rejected-invalid" });

    const sparkPoints = await page.locator('tr[data-symbol="TSLA"] polyline').getAttribute("points");
    const cells = await page.locator('tr[data-symbol="TSLA"] td').allTextContents();
    out({ kind: "step", name: "row", cells, sparkPoints });
    await page.screenshot({ path: path.join(shotDir, "demo-page.png"), fullPage: true });
    out({ kind: "step", name: "screenshot" });

    // TSLA's chart stays open across the restart.
    await page.click('tr[data-symbol="TSLA"] button.open-chart');
    await waitChartFollows(page, "TSLA");

    // The test restarts the server: the page shows it and comes back by itself.
    out({ kind: "wait", for: "restart" });
    await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: STEP_TIMEOUT });
    const shownWhileDown = await page.locator("#status").textContent();
    out({ kind: "step", name: "reconnecting", status: shownWhileDown });
    await nextStdinLine();
    await page.waitForSelector('#status[data-state="live"]', { timeout: 2 * STEP_TIMEOUT });
    const [again, later] = await waitPriceChange(page, "TSLA");
    const symbolsAfter = await page.locator("#quotes tr").evaluateAll((rows) => rows.map((r) => r.dataset.symbol));
    const row = await page.evaluate(() => window.stockstreamDemo.row("TSLA"));
    const chart = await waitChartFollows(page, "TSLA");
    out({ kind: "step", name: "resumed", first: again, second: later, symbols: symbolsAfter, row, chart });
    await page.screenshot({ path: path.join(shotDir, "demo-page-after-restart.png"), fullPage: true });

    if (problems.length) throw new Error(problems.join("; "));
    out({ kind: "done" });
  } finally {
    await browser.close();
  }
}

run(main);
