// The live quotes board: one /live-price WebSocket, reconnecting with backoff.
//
// Symbols come from ?symbols=A,B, else from this browser's last visit, else
// the defaults. Updates only change state; the table is redrawn at most once
// per animation frame, so a burst of prices costs one repaint.
"use strict";

(() => {
  const DEFAULT_SYMBOLS = ["AAPL", "MSFT", "NVDA", "BTC-USD", "^GSPC"];
  const STORAGE_KEY = "stockstream.symbols";
  const SYMBOL_PATTERN = /^[A-Z0-9^][A-Z0-9.\-_/:=^]{0,31}$/;  // the server's rule
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

  // symbol -> {first, last, previous, timestamp, points, updates, changed, el: {...}}
  const rows = new Map();
  const dirty = new Set();
  let socket = null;
  let failures = 0;
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

  function saveSymbols() {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify([...rows.keys()]));
    } catch (e) { /* private mode: the board still works, it is just not remembered */ }
  }

  // -- the connection ---------------------------------------------------------

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function endpoint() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    // A token in the page's address (?token=JWT) goes along, for servers with REQUIRE_AUTH.
    const token = new URLSearchParams(location.search).get("token");
    return scheme + location.host + "/live-price" + (token ? "?token=" + encodeURIComponent(token) : "");
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
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (message && typeof message === "object") {
        if ("type" in message) onReply(message);
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
    const price = update.price;
    if (!row || typeof price !== "number") return;
    if (row.first === null) row.first = price;
    row.previous = row.last;
    row.last = price;
    row.timestamp = update.timestamp;
    row.updates += 1;
    row.points.push(price);
    if (row.points.length > SPARK_POINTS) row.points.shift();
    row.changed = true;
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
    cell(tr, "symbol").textContent = symbol;
    const price = cell(tr, "num");
    const priceText = document.createElement("span");
    priceText.className = "price pending";
    priceText.textContent = "…";
    price.appendChild(priceText);
    const change = cell(tr, "num change");
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
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = `Remove ${symbol}`;
    remove.setAttribute("aria-label", `Remove ${symbol}`);
    remove.addEventListener("click", () => unsubscribe(symbol));
    cell(tr).appendChild(remove);
    quotes.appendChild(tr);
    rows.set(symbol, {
      first: null, last: null, previous: null, timestamp: null, points: [], updates: 0, changed: false,
      el: { tr, price: priceText, change, svg, line, time },
    });
    empty.hidden = true;
  }

  function removeRow(symbol) {
    const row = rows.get(symbol);
    if (!row) return;
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

  function render() {
    frameRequested = false;
    for (const row of dirty) renderRow(row);
    dirty.clear();
  }

  function renderRow(row) {
    const { el } = row;
    el.tr.dataset.updates = String(row.updates);
    el.price.classList.remove("pending", "flash-up", "flash-down");
    const digits = decimalsFor(row.last);
    el.price.textContent = formatNumber(row.last, digits);
    if (row.previous !== null && row.previous !== row.last) {
      // Restart the flash: the class is removed above and re-added after a reflow.
      void el.price.offsetWidth;
      el.price.classList.add(row.last > row.previous ? "flash-up" : "flash-down");
    }
    const change = row.last - row.first;
    const percent = row.first ? (change / row.first) * 100 : 0;
    const sign = change > 0 ? "+" : change < 0 ? "−" : "";
    el.change.textContent = `${sign}${formatNumber(Math.abs(change), digits)} (${sign}${Math.abs(percent).toFixed(2)}%)`;
    el.change.className = "num change" + (change > 0 ? " up" : change < 0 ? " down" : "");
    el.time.textContent = Number.isFinite(row.timestamp) ? new Date(row.timestamp).toLocaleTimeString() : "";
    renderSpark(row, change);
  }

  function renderSpark(row, change) {
    const points = row.points;
    const low = Math.min(...points);
    const high = Math.max(...points);
    const span = high - low || 1;
    const step = SPARK_WIDTH / Math.max(1, SPARK_POINTS - 1);
    const offset = SPARK_WIDTH - step * (points.length - 1);
    const coords = points.map((p, i) => {
      const x = offset + i * step;
      const y = SPARK_HEIGHT - 2 - ((p - low) / span) * (SPARK_HEIGHT - 4);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    row.el.line.setAttribute("points", coords.join(" "));
    row.el.svg.setAttribute("class", "spark" + (change > 0 ? " up" : change < 0 ? " down" : ""));
  }

  function showMessage(text) {
    formMessage.textContent = text;
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
  connect();
})();
