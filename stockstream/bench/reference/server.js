'use strict';
// The original Node.js design, kept small and faithful so the benchmark can
// compare stockstream against it: Express + Socket.IO v4 with the Redis
// adapter, one Redis subscriber for every `stock:*` channel, one Socket.IO
// room per symbol, a snapshot (GET stock:SYM) on subscribe.
//
// Configuration: PORT (5000), HOST (0.0.0.0), REDIS_URL (redis://127.0.0.1:6379).

const http = require('http');
const express = require('express');
const { Server } = require('socket.io');
const { createClient } = require('redis');
const { createAdapter } = require('@socket.io/redis-adapter');

const PORT = Number(process.env.PORT || 5000);
const HOST = process.env.HOST || '0.0.0.0';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const CHANNEL_PREFIX = 'stock:';
const SYMBOL_RE = /^[A-Z0-9^][A-Z0-9.\-_/:=^]{0,31}$/;

// "AAPL", ["AAPL", "MSFT"], {symbol: "AAPL"} or {symbols: [...]} -> array, or null.
function requestedSymbols(payload) {
  if (typeof payload === 'string') return [payload];
  if (Array.isArray(payload)) return payload;
  if (payload && typeof payload === 'object') {
    if (Array.isArray(payload.symbols)) return payload.symbols;
    if (typeof payload.symbol === 'string') return [payload.symbol];
  }
  return null;
}

function subscribedSymbols(socket) {
  return [...socket.rooms].filter((room) => room !== socket.id);
}

// With an ack callback the answer goes there; without one, failures become an `error` event.
function reply(socket, ack, answer) {
  if (typeof ack === 'function') ack(answer);
  else if (!answer.ok) socket.emit('error', answer.error);
}

async function main() {
  const app = express();
  const server = http.createServer(app);
  const io = new Server(server, { cors: { origin: '*' } });

  const pubClient = createClient({ url: REDIS_URL });
  const subClient = pubClient.duplicate();
  const priceReader = pubClient.duplicate();
  const priceSubscriber = pubClient.duplicate();
  const clients = [pubClient, subClient, priceReader, priceSubscriber];
  for (const client of clients) client.on('error', (err) => console.error('redis:', err.message));
  await Promise.all(clients.map((client) => client.connect()));
  io.adapter(createAdapter(pubClient, subClient));

  let ready = false;
  app.get('/healthz', (req, res) => res.sendStatus(200));
  app.get('/readyz', (req, res) => res.sendStatus(ready ? 200 : 503));

  await priceSubscriber.pSubscribe(CHANNEL_PREFIX + '*', (message, channel) => {
    let update;
    try {
      update = JSON.parse(message);
    } catch (err) {
      return; // not JSON: nobody can use it
    }
    io.to(channel.slice(CHANNEL_PREFIX.length)).emit('stockUpdate', update);
  });
  ready = true;

  io.on('connection', (socket) => {
    socket.on('subscribe', async (payload, ack) => {
      const requested = requestedSymbols(payload);
      if (requested === null || requested.some((s) => typeof s !== 'string')) {
        reply(socket, ack, { ok: false, error: { code: 'invalid_payload', message: 'subscribe needs a symbol or a list of symbols' } });
        return;
      }
      const added = [];
      const failed = [];
      for (const raw of requested) {
        const symbol = raw.toUpperCase();
        if (!SYMBOL_RE.test(symbol)) failed.push({ symbol: raw, code: 'invalid_symbol' });
        else if (!socket.rooms.has(symbol)) {
          socket.join(symbol);
          added.push(symbol);
        }
      }
      reply(socket, ack, { ok: true, symbols: subscribedSymbols(socket), added, failed });
      for (const symbol of added) {
        const latest = await priceReader.get(CHANNEL_PREFIX + symbol);
        if (latest) socket.emit('stockUpdate', JSON.parse(latest));
      }
    });

    socket.on('unsubscribe', (payload, ack) => {
      const requested = requestedSymbols(payload);
      if (requested === null || requested.some((s) => typeof s !== 'string')) {
        reply(socket, ack, { ok: false, error: { code: 'invalid_payload', message: 'unsubscribe needs a symbol or a list of symbols' } });
        return;
      }
      const removed = [];
      for (const raw of requested) {
        const symbol = raw.toUpperCase();
        if (socket.rooms.has(symbol)) {
          socket.leave(symbol);
          removed.push(symbol);
        }
      }
      reply(socket, ack, { ok: true, symbols: subscribedSymbols(socket), removed });
    });
  });

  const shutdown = () => {
    io.close();
    Promise.allSettled(clients.map((client) => client.quit())).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);

  server.listen(PORT, HOST, () => console.log(`reference server on ${HOST}:${PORT}`));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
