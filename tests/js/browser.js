// What the demo page drivers share: Debian's Chromium under playwright-core
// (never a downloaded browser), JSON lines to the test on stdout, its answers
// on stdin.
"use strict";
const readline = require("readline");
const { chromium } = require("playwright-core");

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const stdinLines = [];
let stdinWaiter = null;
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (stdinWaiter) {
    const resolve = stdinWaiter;
    stdinWaiter = null;
    resolve(line);
  } else {
    stdinLines.push(line);
  }
});

function nextStdinLine() {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  return new Promise((resolve) => { stdinWaiter = resolve; });
}

// Tells the test what the page is ready for and waits for its answer (a JSON line).
async function ask(what, details) {
  out({ kind: "wait", for: what, ...details });
  return JSON.parse(await nextStdinLine());
}

function launch() {
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: 30000,
  });
}

// Page errors and console errors, except those `expected` matches.
function watchProblems(page, expected) {
  const problems = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !(expected && expected.test(msg.text()))) {
      problems.push(`console error: ${msg.text()}`);
    }
  });
  return problems;
}

// Runs main(), then exits 0, or reports the failure and exits 1.
function run(main) {
  main().then(
    () => process.exit(0),
    (err) => {
      out({ kind: "failed", error: String(err && err.stack || err) });
      process.exit(1);
    });
}

module.exports = { out, nextStdinLine, ask, launch, watchProblems, run };
