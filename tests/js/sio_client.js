// A socket.io-client v4 connection driven over stdin, reporting over stdout.
//
//   node sio_client.js URL [OPTIONS_JSON]
//
// stdin, one JSON command per line:
//   {"op": "emit", "event": "subscribe", "args": [...], "ack": true, "id": 1, "timeout": 5000}
//   {"op": "close"}
// stdout, one JSON object per line, in the order things happened:
//   {"kind": "connect", "id": "...", "transport": "polling"}
//   {"kind": "upgrade", "transport": "websocket"}
//   {"kind": "connect_error", "message": "...", "data": ...}
//   {"kind": "event", "event": "stockUpdate", "args": [...]}
//   {"kind": "ack", "id": 1, "err": null, "args": [...]}
//   {"kind": "disconnect", "reason": "..."}
//   {"kind": "resubscribed", "symbol": "AAPL", "sinceSeq": 41, "err": null, "ack": {...}}
//
// OPTIONS_JSON is socket.io-client's options, plus "resumeSymbols": [...]: then
// the client subscribes to each of those symbols on every (re)connect, with
// "sinceSeq" set to the seq of the last update it saw for it (once it saw one).
"use strict";
const { io } = require("socket.io-client");
const readline = require("readline");

const url = process.argv[2];
const options = Object.assign({ reconnection: false, forceNew: true },
  process.argv[3] ? JSON.parse(process.argv[3]) : {});
const resumeSymbols = options.resumeSymbols;
delete options.resumeSymbols;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const socket = io(url, options);

socket.io.on("open", () => {
  socket.io.engine.on("upgrade", (transport) => out({ kind: "upgrade", transport: transport.name }));
});
socket.on("connect", () => out({ kind: "connect", id: socket.id, transport: socket.io.engine.transport.name,
                                  recovered: socket.recovered === true, pid: socket._pid === undefined ? null : socket._pid }));
socket.on("connect_error", (err) => out({ kind: "connect_error", message: err.message, data: err.data === undefined ? null : err.data }));
socket.on("disconnect", (reason) => out({ kind: "disconnect", reason }));
socket.onAny((event, ...args) => out({ kind: "event", event, args }));

if (resumeSymbols) {
  const lastSeq = {};
  socket.on("stockUpdate", (update) => {
    if (update && typeof update.seq === "number") lastSeq[update.symbol] = update.seq;
  });
  socket.on("connect", () => {
    for (const symbol of resumeSymbols) {
      const request = { symbol };
      if (symbol in lastSeq) request.sinceSeq = lastSeq[symbol];
      socket.timeout(10000).emit("subscribe", request, (err, ack) => {
        out({ kind: "resubscribed", symbol, sinceSeq: request.sinceSeq === undefined ? null : request.sinceSeq,
              err: err ? String(err.message || err) : null, ack: ack === undefined ? null : ack });
      });
    }
  });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (cmd.op === "emit") {
    const args = cmd.args || [];
    if (cmd.ack) {
      socket.timeout(cmd.timeout || 5000).emit(cmd.event, ...args, (err, ...res) => {
        out({ kind: "ack", id: cmd.id, err: err ? String(err.message || err) : null, args: res });
      });
    } else {
      socket.emit(cmd.event, ...args);
    }
  } else if (cmd.op === "close") {
    socket.close();
    process.stdout.write("", () => process.exit(0));
  }
});
rl.on("close", () => {
  socket.close();
  process.exit(0);
});
