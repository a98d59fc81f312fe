// The browser client from the original README, run under Node.js.
//
//   node readme_client.js ws://127.0.0.1:PORT/live-price
//
// The lines between the markers are the README's example verbatim. Around them,
// Node gets what a browser provides: a global WebSocket (the `ws` package), with
// the README's placeholder URL pointed at the server under test. console.log is
// made to print its arguments as one JSON array per line so the test can read them.
"use strict";
const NodeWebSocket = require("ws");
const target = process.argv[2];
const README_URL = "wss://yourserver.com/live-price";

global.WebSocket = class extends NodeWebSocket {
  constructor(url, ...rest) {
    super(url === README_URL ? target : url, ...rest);
    this.on("close", (code) => process.stdout.write(JSON.stringify(["__closed__", code]) + "\n"));
    this.on("error", (err) => process.stdout.write(JSON.stringify(["__error__", String(err)]) + "\n"));
  }
};
console.log = (...args) => process.stdout.write(JSON.stringify(args) + "\n");

// ---- begin: original README, "Example Client Code" ----
const socket = new WebSocket("wss://yourserver.com/live-price");

socket.onopen = function () {
  console.log("Connected to WebSocket server");
  socket.send(JSON.stringify({ action: "subscribe", symbol: "AAPL" }));
};

socket.onmessage = function (event) {
  const data = JSON.parse(event.data);
  console.log("Live Price Update:", data);
};
// ---- end: original README ----

process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
