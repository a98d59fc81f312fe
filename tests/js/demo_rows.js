// Opens the demo page in headless Chromium and reports its board once settled.
//
//   node demo_rows.js URL
//
// stdout, one JSON line each: {"kind": "step", "name": "board", "rows": {SYMBOL: {...}},
// "message": ...} when the page is live and its requests are answered, then
// {"kind": "done"} or {"kind": "failed", "error": ...}.
"use strict";
const { out, launch, watchProblems, run } = require("./browser");

const [url] = process.argv.slice(2);
const STEP_TIMEOUT = 10000;

async function main() {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, locale: "en-US" });
    // The page asks the API about every symbol on the board, also one the token may not read.
    const problems = watchProblems(page, /status of 403/);
    await page.goto(url, { timeout: STEP_TIMEOUT });
    await page.waitForSelector('#status[data-state="live"]', { timeout: STEP_TIMEOUT });
    await page.waitForSelector('#quotes tr[data-state="loading"]', { state: "detached", timeout: STEP_TIMEOUT });
    await page.waitForLoadState("networkidle", { timeout: STEP_TIMEOUT });
    const rows = await page.evaluate(() => {
      const found = {};
      for (const tr of document.querySelectorAll("#quotes tr")) {
        const symbol = tr.dataset.symbol;
        found[symbol] = { ...window.stockstreamDemo.row(symbol), change: tr.querySelector("td.change").textContent };
      }
      return found;
    });
    out({ kind: "step", name: "board", rows, message: await page.textContent("#form-message") });
    if (problems.length) throw new Error(problems.join("; "));
    out({ kind: "done" });
  } finally {
    await browser.close();
  }
}

run(main);
