// The live quotes board: one /live-price WebSocket, reconnecting with backoff,
// and the HTTP API for what the stream alone cannot tell (history, the day's
// first price).
//
// Symbols come from ?symbols=A,B, else from this browser's last visit, else
// the defaults. Updates only change state; the table is redrawn at most once
// per animation frame, so a burst of prices costs one repaint.
//
// The stream is in publish order, so each update it brings is the newest.
// Where an HTTP answer and the stream overlap, they are reconciled by position
// (`seq` when both carry one, else the timestamp) among the updates that came
// after the request was sent; earlier ones are in the answer. (Comparing
// positions across a reconnect would be wrong: a restarted backend starts
// `seq` again from 1.)
"use strict";

(() => {
  const DEFAULT_SYMBOLS = ["AAPL", "MSFT", "NVDA", "BTC-USD", "^GSPC"];
  const STORAGE_KEY = "stockstream.symbols";
  const CHART_STORAGE_KEY = "stockstream.chart";
  const SYMBOL_PATTERN = /^[A-Z0-9^][A-Z0-9.\-_/:=^]{0,31}$/;  // the server's rule
  const DAY_MS = 86400000;
  const SPARK_POINTS = 60;
  const SPARK_WIDTH = 120;
  const SPARK_HEIGHT = 28;
  const RECONNECT_FIRST_MS = 500;
  const RECONNECT_CAP_MS = 10000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const quotes = document.getElementById("quotes");
  const empty = document.getElementById("empty");
  const status = document.getElementById("status");
  const form = document.getElementById("add-form");
  const input = document.getElementById("symbol-input");
  const formMessage = document.getElementById("form-message");

  // symbol -> {symbol, state, latest, previous, points, day, updates, el}
  //   state: "loading" (asked), "empty" (the server has no price), "live"
  //   latest: the newest update held {price, timestamp, seq, arrival}; points: the sparkline's
  //   updates; updates: how many the stream brought (`arrival` numbers them; 0 for history)
  //   day: {start, open, high, low, partial} of the UTC day of the newest price
  const rows = new Map();
  const dirty = new Set();
  let socket = null;
  let failures = 0;
  let everConnected = false;
  let reconnectTimer = null;
  let frameRequested = false;
  let shuttingDown = false;

  // -- symbols --------------------------------------------------------------

  function normalize(raw) {
    const symbol = String(raw).trim().toUpperCase();
    return SYMBOL_PATTERN.test(symbol) ? symbol : null;
  }

  function initialSymbols() {
    const fromUrl = new URLSearchParams(location.search).get("symbols");
    if (fromUrl !== null) return fromUrl.split(",").map(normalize).filter(Boolean);
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE_KEY));
      if (Array.isArray(saved)) return saved.map(normalize).filter(Boolean);
    } catch (e) { /* storage unavailable or corrupt: use the defaults */ }
    return DEFAULT_SYMBOLS.slice();
  }

  function remember(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch (e) { /* private mode: the board still works, it is just not remembered */ }
  }

  function recall(key) {
    try {
      return JSON.parse(localStorage.getItem(key));
    } catch (e) {
      return null;
    }
  }

  function saveSymbols() {
    remember(STORAGE_KEY, [...rows.keys()]);
  }

  // -- positions in a symbol's stream ---------------------------------------------

  function positionOf(update, arrival) {
    const seq = Number.isInteger(update.seq) ? update.seq : null;
    return { price: update.price, timestamp: update.timestamp, seq, arrival };
  }

  function sameUpdate(a, b) {
    return b !== undefined && b !== null && a.seq === b.seq && a.timestamp === b.timestamp && a.price === b.price;
  }

  // Whether `a` comes after `b` in the symbol's stream.
  function isAfter(a, b) {
    if (b === null || b === undefined) return true;
    if (a.seq !== null && b.seq !== null) return a.seq > b.seq;
    return a.timestamp > b.timestamp;
  }

  function dayStart(timestamp) {
    return timestamp - (timestamp % DAY_MS);
  }

  // -- the HTTP API --------------------------------------------------------------

  function token() {
    // A token in the page's address (?token=JWT) goes along, for servers with REQUIRE_AUTH.
    return new URLSearchParams(location.search).get("token");
  }

  async function getJson(path) {
    const headers = { Accept: "application/json" };
    const jwt = token();
    if (jwt) headers.Authorization = "Bearer " + jwt;
    const response = await fetch(path, { headers, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (e) { /* not JSON: the status says enough */ }
    return { status: response.status, body };
  }

  // The sparkline's recent prices and the day's open/high/low, from the server:
  // the page then shows more than what it happened to see since it opened.
  function seed(row) {
    const symbol = encodeURIComponent(row.symbol);
    const askedAt = row.updates;
    getJson(`/api/history/${symbol}?limit=${SPARK_POINTS}`).then(({ status: code, body }) => {
      if (rows.get(row.symbol) !== row) return;
      if (code === 404) {
        if (row.latest === null) row.state = "empty";
      } else if (code === 200 && body && Array.isArray(body.updates)) {
        seedHistory(row, body.updates.filter(isPrice).map((u) => positionOf(u, 0)), askedAt);
      }
      markDirty(row);
    }).catch(() => { /* offline: the stream fills the row when it is back */ });
    const today = dayStart(Date.now());
    getJson(`/api/candles/${symbol}?interval=1d&from=${today}`).then(({ status: code, body }) => {
      if (rows.get(row.symbol) !== row || code !== 200 || !body || !Array.isArray(body.candles)) return;
      const candle = body.candles.find((c) => c.start === today);
      if (candle) seedDay(row, candle, Boolean(body.partial || body.next));
      markDirty(row);
    }).catch(() => {});
  }

  function isPrice(update) {
    return update && typeof update.price === "number" && Number.isFinite(update.timestamp);
  }

  // `askedAt`: how many updates the stream had brought when history was asked for.
  function seedHistory(row, history, askedAt) {
    if (!history.length) return;
    const newest = history[history.length - 1];
    // The stream's updates since the request that history does not hold stay, after it.
    const later = row.points.filter((p) => p.arrival > askedAt && isAfter(p, newest));
    row.points = history.concat(later).slice(-SPARK_POINTS);
    if (row.latest === null) {
      row.latest = newest;
      applyToDay(row, newest);
    }
    row.state = "live";
  }

  function seedDay(row, candle, partial) {
    if (row.day === null || candle.start > row.day.start) {
      row.day = { start: candle.start, open: candle.open, high: candle.high, low: candle.low, partial };
    } else if (candle.start === row.day.start) {
      // The server saw the day from its start: its open wins over the first price this page saw.
      row.day.open = candle.open;
      row.day.high = Math.max(row.day.high, candle.high);
      row.day.low = Math.min(row.day.low, candle.low);
      row.day.partial = partial;
    }
  }

  function applyToDay(row, update) {
    const start = dayStart(update.timestamp);
    if (row.day === null || start > row.day.start) {
      // A new UTC day (or no answer from the server yet): this price opens it until the server says otherwise.
      row.day = { start, open: update.price, high: update.price, low: update.price, partial: false };
    } else if (start === row.day.start) {
      row.day.high = Math.max(row.day.high, update.price);
      row.day.low = Math.min(row.day.low, update.price);
    }
  }

  // -- the connection ---------------------------------------------------------

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function send(message) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(message));
    return true;
  }

  function endpoint() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const jwt = token();
    return scheme + location.host + "/live-price" + (jwt ? "?token=" + encodeURIComponent(jwt) : "");
  }

  function connect() {
    reconnectTimer = null;
    shuttingDown = false;
    setStatus(failures ? "reconnecting" : "connecting", failures ? "reconnecting…" : "connecting…");
    const ws = new WebSocket(endpoint());
    socket = ws;
    ws.onopen = () => {
      failures = 0;
      setStatus("live", "live");
      // A fresh connection has no subscriptions: ask for every symbol again;
      // the server answers with a snapshot of each before live prices.
      if (rows.size) send({ action: "subscribe", symbols: [...rows.keys()] });
      // What was published while the connection was down comes from the server's history.
      if (everConnected) {
        for (const row of rows.values()) seed(row);
      }
      chart.connected(everConnected);
      everConnected = true;
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (message && typeof message === "object") {
        if (message.type === "candle") chart.onCandle(message);
        else if ("type" in message) onReply(message);
        else onUpdate(message);
      }
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    failures += 1;
    // Exponential with jitter, so a restarted server is not hit by every page at once.
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_FIRST_MS * 2 ** (failures - 1));
    const delay = Math.round(ceiling * (0.5 + Math.random() / 2));
    const why = shuttingDown ? "server restarting" : "disconnected";
    setStatus("reconnecting", `${why}, retrying in ${Math.max(1, Math.round(delay / 1000))}s`);
    reconnectTimer = setTimeout(connect, delay);
  }

  function onReply(reply) {
    if (reply.type === "subscribed" && Array.isArray(reply.failed) && reply.failed.length) {
      rejectSymbols(reply.failed.map((f) => f.symbol), reply.failed[0].code);
    } else if (reply.type === "error") {
      if (reply.code === "server_shutdown") {
        shuttingDown = true;
      } else if (Array.isArray(reply.symbols)) {
        rejectSymbols(reply.symbols, reply.code);
      } else {
        showMessage(reply.message || reply.code);
      }
    }
  }

  function rejectSymbols(symbols, code) {
    for (const symbol of symbols) removeRow(String(symbol).toUpperCase());
    saveSymbols();
    showMessage(`${symbols.join(", ")}: ${String(code).replace(/_/g, " ")}`);
  }

  function onUpdate(update) {
    const row = rows.get(String(update.symbol).toUpperCase());
    if (!row || !isPrice(update)) return;
    row.updates += 1;
    const position = positionOf(update, row.updates);
    row.state = "live";
    row.previous = row.latest;
    row.latest = position;
    // The subscribe snapshot repeats what history already gave: keep it once.
    if (!sameUpdate(position, row.points[row.points.length - 1])) {
      row.points.push(position);
      if (row.points.length > SPARK_POINTS) row.points.shift();
    }
    applyToDay(row, position);
    markDirty(row);
  }

  function markDirty(row) {
    dirty.add(row);
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(render);
    }
  }

  // -- the board ---------------------------------------------------------------

  function cell(tr, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    tr.appendChild(td);
    return td;
  }

  function addRow(symbol) {
    const tr = document.createElement("tr");
    tr.dataset.symbol = symbol;
    tr.dataset.updates = "0";
    tr.dataset.state = "loading";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open-chart";
    open.textContent = symbol;
    open.title = `Chart ${symbol}`;
    open.setAttribute("aria-expanded", "false");
    open.addEventListener("click", () => toggleChart(symbol));
    cell(tr, "symbol").appendChild(open);
    const price = cell(tr, "num last");
    const priceText = document.createElement("span");
    priceText.className = "price pending";
    priceText.textContent = "…";
    price.appendChild(priceText);
    const change = cell(tr, "num change");
    const range = cell(tr, "num range");
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", SPARK_WIDTH);
    svg.setAttribute("height", SPARK_HEIGHT);
    svg.setAttribute("viewBox", `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
    svg.setAttribute("aria-hidden", "true");
    const line = document.createElementNS(SVG_NS, "polyline");
    svg.appendChild(line);
    cell(tr, "trend").appendChild(svg);
    const time = cell(tr, "time");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "icon remove";
    remove.textContent = "×";
    remove.title = `Remove ${symbol}`;
    remove.setAttribute("aria-label", `Remove ${symbol}`);
    remove.addEventListener("click", () => unsubscribe(symbol));
    cell(tr, "actions").appendChild(remove);
    quotes.appendChild(tr);
    const row = {
      symbol, state: "loading", latest: null, previous: null, points: [], day: null, updates: 0,
      el: { tr, open, price: priceText, change, range, svg, line, time },
    };
    rows.set(symbol, row);
    empty.hidden = true;
    seed(row);
  }

  function removeRow(symbol) {
    const row = rows.get(symbol);
    if (!row) return;
    if (chart.symbol === symbol) chart.close();
    row.el.tr.remove();
    rows.delete(symbol);
    dirty.delete(row);
    empty.hidden = rows.size > 0;
  }

  // Sub-dollar prices get four decimals; a change is shown with its price's precision.
  function decimalsFor(price) {
    return Math.abs(price) < 1 ? 4 : 2;
  }

  function formatNumber(value, digits) {
    return value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  // {text, direction} of the change from today's first price (UTC), or null
  // while there is none (a symbol last priced on an earlier day shows no change).
  function dayChange(row) {
    const { latest, day } = row;
    if (latest === null || day === null || dayStart(latest.timestamp) !== day.start) return null;
    if (day.start < dayStart(Date.now())) return null;
    const change = latest.price - day.open;
    const percent = day.open ? (change / day.open) * 100 : 0;
    const sign = change > 0 ? "+" : change < 0 ? "−" : "";
    const digits = decimalsFor(latest.price);
    return {
      text: `${sign}${formatNumber(Math.abs(change), digits)} (${sign}${Math.abs(percent).toFixed(2)}%)`,
      direction: change > 0 ? "up" : change < 0 ? "down" : "",
    };
  }

  function render() {
    frameRequested = false;
    for (const row of dirty) renderRow(row);
    dirty.clear();
  }

  function renderRow(row) {
    const { el, latest, day } = row;
    el.tr.dataset.updates = String(row.updates);
    el.tr.dataset.state = row.state;
    el.price.classList.remove("pending", "flash-up", "flash-down");
    if (latest === null) {
      el.price.classList.toggle("pending", row.state === "loading");
      el.price.textContent = row.state === "empty" ? "no data yet" : "…";
      el.price.title = row.state === "empty" ? "The server has no price for this symbol yet; it appears with the first one." : "";
      if (chart.symbol === row.symbol) chart.setQuote(row.state === "empty" ? "no data yet" : "", "");
      return;
    }
    el.price.title = "";
    const digits = decimalsFor(latest.price);
    el.price.textContent = formatNumber(latest.price, digits);
    const previous = row.previous;
    if (previous !== null && previous.price !== latest.price) {
      // Restart the flash: the class is removed above and re-added after a reflow.
      void el.price.offsetWidth;
      el.price.classList.add(latest.price > previous.price ? "flash-up" : "flash-down");
      row.previous = latest;
    }
    const change = dayChange(row);
    el.change.textContent = change ? change.text : "";
    el.change.className = "num change" + (change && change.direction ? " " + change.direction : "");
    el.change.title = change && day.partial
      ? "from the oldest price the server still holds for today" : "from the day's first price (UTC)";
    el.range.textContent = change
      ? `${formatNumber(day.low, decimalsFor(day.low))} – ${formatNumber(day.high, decimalsFor(day.high))}` : "";
    el.time.textContent = updatedText(latest.timestamp);
    renderSpark(row, change ? change.direction : "");
    if (chart.symbol === row.symbol) {
      chart.setQuote(`${el.price.textContent}  ${change ? change.text : ""}`, change ? change.direction : "");
    }
  }

  // The time of day, with the date when it is not today.
  function updatedText(timestamp) {
    const when = new Date(timestamp);
    if (when.toDateString() === new Date().toDateString()) return when.toLocaleTimeString();
    return when.toLocaleString(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
  }

  function renderSpark(row, direction) {
    const prices = row.points.map((p) => p.price);
    if (!prices.length) return;
    const low = Math.min(...prices);
    const high = Math.max(...prices);
    const span = high - low || 1;
    const step = SPARK_WIDTH / Math.max(1, prices.length - 1);
    const coords = prices.map((p, i) => {
      const x = i * step;
      const y = SPARK_HEIGHT - 2 - ((p - low) / span) * (SPARK_HEIGHT - 4);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    row.el.line.setAttribute("points", coords.join(" "));
    row.el.svg.setAttribute("class", "spark" + (direction ? " " + direction : ""));
  }

  function showMessage(text) {
    formMessage.textContent = text;
  }

  // -- the chart -----------------------------------------------------------------

  const chart = window.stockstreamChart.create(
    {
      panel: document.getElementById("chart-panel"),
      chart: document.getElementById("chart"),
      message: document.getElementById("chart-message"),
      legend: document.getElementById("chart-legend"),
      symbol: document.getElementById("chart-symbol"),
      quote: document.getElementById("chart-quote"),
      close: document.getElementById("chart-close"),
      intervals: [...document.querySelectorAll("#chart-panel [data-interval]")],
    },
    getJson,
    (symbol) => {
      const row = rows.get(symbol);
      return row ? row.latest : null;
    },
    send,
    (closed) => {
      markSelected(null);
      saveChart();
      // Focus goes back to the symbol whose chart it was (keyboard users are not lost at the top).
      const row = rows.get(closed);
      if (row) row.el.open.focus({ preventScroll: true });
    });

  function markSelected(symbol) {
    for (const row of rows.values()) {
      row.el.tr.classList.toggle("selected", row.symbol === symbol);
      row.el.open.setAttribute("aria-expanded", String(row.symbol === symbol));
    }
  }

  function saveChart() {
    remember(CHART_STORAGE_KEY, { symbol: chart.symbol, interval: chart.interval });
  }

  function openChart(symbol) {
    chart.open(symbol);
    markSelected(symbol);
    const row = rows.get(symbol);
    if (row) markDirty(row);
    saveChart();
  }

  function toggleChart(symbol) {
    if (chart.symbol === symbol) chart.close();
    else openChart(symbol);
  }

  for (const button of document.querySelectorAll("#chart-panel [data-interval]")) {
    button.addEventListener("click", saveChart);
  }

  // -- adding and removing ---------------------------------------------------------

  function subscribe(raw) {
    const symbol = normalize(raw);
    if (!symbol) {
      showMessage(`"${String(raw).trim()}" is not a valid symbol`);
      return false;
    }
    if (rows.has(symbol)) {
      showMessage(`${symbol} is already on the board`);
      return false;
    }
    showMessage("");
    addRow(symbol);
    saveSymbols();
    send({ action: "subscribe", symbol });
    return true;
  }

  function unsubscribe(symbol) {
    removeRow(symbol);
    saveSymbols();
    send({ action: "unsubscribe", symbol });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (subscribe(input.value)) input.value = "";
    input.focus();
  });

  for (const symbol of new Set(initialSymbols())) addRow(symbol);
  empty.hidden = rows.size > 0;
  const savedChart = recall(CHART_STORAGE_KEY);
  if (savedChart && typeof savedChart === "object") {
    if (typeof savedChart.interval === "string") chart.chooseInterval(savedChart.interval);
    if (typeof savedChart.symbol === "string" && rows.has(savedChart.symbol)) openChart(savedChart.symbol);
  }
  connect();

  // For tests and the browser console: what the page shows, read from its state and the chart's series.
  window.stockstreamDemo = {
    chart: () => chart.state(),
    row: (symbol) => {
      const row = rows.get(symbol);
      if (!row) return null;
      return {
        state: row.state, latest: row.latest, day: row.day && { ...row.day },
        points: row.points.map((p) => p.price), updates: row.updates,
      };
    },
  };
})();
