// The candlestick chart panel: one symbol at a time, drawn by TradingView's
// Lightweight Charts (static/vendor/), seeded from /api/candles and then moved
// by the server's live candle stream (`subscribeCandles`): each `candle` event
// is the whole current candle, built by the server with the same buckets as
// /api/candles, so the page counts nothing itself.
//
// Reconciling the seed with the stream: a candle event replaces the candle of
// its period (unless it counts fewer updates than the one shown, i.e. it is
// older than the seed's); events arriving while the seed loads wait in
// `pending`.
"use strict";

window.stockstreamChart = (() => {
  const INTERVALS_MS = { "1s": 1000, "1m": 60000, "5m": 300000, "1h": 3600000 };
  const DEFAULT_INTERVAL = "1m";
  const CANDLES_WANTED = 300;
  const MAX_PAGES = 4;  // the server reads at most 10,000 updates per request; `next` pages back
  const COLORS = {
    up: "#22c55e", down: "#ef4444", text: "#94a3b8", grid: "#1e2a44", panel: "#111c33",
    volumeUp: "rgba(34, 197, 94, 0.45)", volumeDown: "rgba(239, 68, 68, 0.45)",
  };

  function candleOf(c) {
    return { time: c.start / 1000, open: c.open, high: c.high, low: c.low, close: c.close };
  }

  function volumeBar(time, candle, volume) {
    return { time, value: volume, color: candle.close >= candle.open ? COLORS.volumeUp : COLORS.volumeDown };
  }

  /**
   * elements: {panel, chart, message, legend, symbol, quote, close, intervals: [buttons]}
   * getJson(path) -> Promise of {status, body}
   * latest(symbol) -> the newest update the page holds for it, or null
   * send(message) -> sends a request on the page's stream; false while it is down
   * onClose(symbol) -> called when the panel closes
   */
  function create(elements, getJson, latest, send, onClose) {
    let chart = null;
    let candleSeries = null;
    let volumeSeries = null;
    let symbol = null;
    let interval = DEFAULT_INTERVAL;
    let generation = 0;      // bumped by every (re)seed and close: late answers are dropped
    let seeded = false;      // the series hold the seed; candle events apply directly
    let pending = new Map(); // candle events (by start) that came while the seed was loading
    let last = null;         // the newest candle: {time, open, high, low, close, volume, count}
    let following = null;    // {symbol, interval} of the live candles the server sends this page
    let candleEvents = 0;    // candle events received for the chart's symbol and interval
    let hovered = null;      // the candle under the crosshair, shown in the legend instead of the newest
    let precision = 2;

    function ensureChart() {
      if (chart) return;
      chart = LightweightCharts.createChart(elements.chart, {
        autoSize: true,
        layout: {
          background: { type: "solid", color: COLORS.panel }, textColor: COLORS.text,
          // The licence's link to TradingView is in the page's footer instead:
          // the logo injects an inline <style>, which the page's CSP refuses.
          attributionLogo: false,
        },
        grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
        rightPriceScale: { borderColor: COLORS.grid },
        timeScale: { borderColor: COLORS.grid, timeVisible: true, secondsVisible: false, barSpacing: 8, rightOffset: 4 },
        crosshair: { mode: LightweightCharts.CrosshairMode.Normal },
      });
      candleSeries = chart.addSeries(LightweightCharts.CandlestickSeries, {
        upColor: COLORS.up, downColor: COLORS.down, borderVisible: false,
        wickUpColor: COLORS.up, wickDownColor: COLORS.down,
      });
      // Volume as an overlay along the bottom fifth, on its own hidden scale.
      volumeSeries = chart.addSeries(LightweightCharts.HistogramSeries, {
        priceFormat: { type: "volume" }, priceScaleId: "", lastValueVisible: false, priceLineVisible: false,
      });
      volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
      candleSeries.priceScale().applyOptions({ scaleMargins: { top: 0.12, bottom: 0.25 } });
      chart.subscribeCrosshairMove((param) => {
        const candle = param.time !== undefined ? param.seriesData.get(candleSeries) : undefined;
        const bar = param.time !== undefined ? param.seriesData.get(volumeSeries) : undefined;
        hovered = candle ? { ...candle, volume: bar ? bar.value : undefined } : null;
        renderLegend();
      });
    }

    // Open, high, low, close (and volume) of the hovered candle, else of the newest.
    function renderLegend() {
      const candle = hovered || last;
      if (!candle) {
        elements.legend.textContent = "";
        return;
      }
      const f = (v) => v.toLocaleString(undefined, { minimumFractionDigits: precision, maximumFractionDigits: precision });
      const volume = candle.volume !== undefined ? `  V ${candle.volume.toLocaleString()}` : "";
      elements.legend.textContent = `O ${f(candle.open)}  H ${f(candle.high)}  L ${f(candle.low)}  C ${f(candle.close)}${volume}`;
    }

    function showMessage(text) {
      elements.message.textContent = text || "";
      elements.message.hidden = !text;
      elements.chart.dataset.state = text ? "empty" : "ready";
    }

    function precisionFor(price) {
      return Math.abs(price) < 1 ? 4 : 2;
    }

    function reset() {
      generation += 1;
      seeded = false;
      pending = new Map();
      last = null;
      hovered = null;
      candleSeries.setData([]);
      volumeSeries.setData([]);
      renderLegend();
    }

    // The live candles of the chart's symbol and interval, and no others.
    function follow() {
      const wanted = symbol === null ? null : { symbol, interval };
      if (following && (!wanted || following.symbol !== wanted.symbol || following.interval !== wanted.interval)) {
        send({ action: "unsubscribeCandles", symbol: following.symbol, interval: following.interval });
        following = null;
      }
      if (wanted && !following && send({ action: "subscribeCandles", ...wanted })) following = wanted;
    }

    async function fetchCandles(sym, intervalName, from) {
      // Newest first: each page covers what is left before the previous one.
      const pages = [];
      let end = null;
      for (let page = 0; page < MAX_PAGES; page += 1) {
        const query = `interval=${intervalName}&from=${from}` + (end === null ? "" : `&to=${end}`);
        const { status, body } = await getJson(`/api/candles/${encodeURIComponent(sym)}?${query}`);
        if (status === 404) break;
        if (status !== 200) throw new Error((body && body.error && body.error.message) || `HTTP ${status}`);
        pages.unshift(body.candles);
        if (!body.next || body.next.to < from) break;
        end = body.next.to;
      }
      return pages.flat();
    }

    async function seed() {
      reset();
      const ticket = generation;
      const intervalMs = INTERVALS_MS[interval];
      showMessage("Loading…");
      let candles;
      try {
        candles = await fetchCandles(symbol, interval, Math.max(0, Date.now() - intervalMs * CANDLES_WANTED));
      } catch (err) {
        if (ticket === generation) showMessage(`Could not load candles: ${err.message}`);
        return;
      }
      if (ticket !== generation) return;
      const data = candles.map(candleOf);
      const volumes = candles.filter((c) => c.volume !== undefined)
        .map((c) => volumeBar(c.start / 1000, c, c.volume));
      setPrecision(candles.length ? candles[candles.length - 1].close : null);
      candleSeries.setData(data);
      volumeSeries.setData(volumes);
      if (candles.length) last = lastOf(candles[candles.length - 1]);
      seeded = true;
      if (data.length || pending.size) showMessage("");
      else if (latest(symbol)) showMessage(`No stored prices for ${symbol} in this range yet.`);
      else showMessage(`No data yet for ${symbol}: the chart starts with its first price.`);
      for (const start of [...pending.keys()].sort((a, b) => a - b)) apply(pending.get(start));
      pending = new Map();
      renderLegend();
      chart.timeScale().scrollToRealTime();
    }

    function setPrecision(price) {
      const newest = latest(symbol);
      const reference = newest ? newest.price : price;
      if (reference === null) return;
      precision = precisionFor(reference);
      candleSeries.applyOptions({ priceFormat: { type: "price", precision, minMove: 10 ** -precision } });
    }

    function lastOf(c) {
      const volume = typeof c.volume === "number" ? c.volume : undefined;
      return { time: c.start / 1000, open: c.open, high: c.high, low: c.low, close: c.close, volume, count: c.count };
    }

    // One candle from the server's stream: the whole candle of its period.
    function apply(c) {
      const time = c.start / 1000;
      if (last !== null && (time < last.time || (time === last.time && c.count < last.count))) {
        return;  // older than what the chart shows: it only moves forward
      }
      if (last === null) setPrecision(c.close);
      last = lastOf(c);
      candleSeries.update({ time, open: c.open, high: c.high, low: c.low, close: c.close });
      if (last.volume !== undefined) volumeSeries.update(volumeBar(time, last, last.volume));
      showMessage("");
      renderLegend();
    }

    function renderHead() {
      elements.symbol.textContent = symbol || "";
      for (const button of elements.intervals) {
        button.setAttribute("aria-pressed", String(button.dataset.interval === interval));
      }
    }

    function open(newSymbol) {
      ensureChart();
      symbol = newSymbol;
      elements.panel.hidden = false;
      renderHead();
      chart.applyOptions({ timeScale: { secondsVisible: interval === "1s" } });
      follow();
      seed();
    }

    function close() {
      if (symbol === null) return;
      const closed = symbol;
      symbol = null;
      generation += 1;
      follow();
      elements.panel.hidden = true;
      onClose(closed);
    }

    function chooseInterval(name) {
      if (!(name in INTERVALS_MS) || name === interval) return;
      interval = name;
      if (symbol !== null) open(symbol);
    }

    function onCandle(c) {
      if (symbol === null || c.symbol !== symbol || c.interval !== interval) return;
      candleEvents += 1;
      if (seeded) apply(c);
      else pending.set(c.start, c);
    }

    elements.close.addEventListener("click", close);
    elements.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") close();
    });
    for (const button of elements.intervals) {
      button.addEventListener("click", () => chooseInterval(button.dataset.interval));
    }

    return {
      open,
      close,
      chooseInterval,
      onCandle,
      // A new connection follows nothing yet, and the old one may have missed
      // candles: follow again (the server starts with the current candle) and
      // seed again from the server's candles.
      connected(again) {
        following = null;
        follow();
        if (again && symbol !== null) seed();
      },
      get symbol() { return symbol; },
      get interval() { return interval; },
      setQuote(text, className) {
        elements.quote.textContent = text;
        elements.quote.className = "chart-quote" + (className ? " " + className : "");
      },
      // What the chart itself holds, read back through its series (for tests and the console).
      state() {
        return {
          symbol, interval, seeded, candleEvents,
          candles: candleSeries ? candleSeries.data() : [],
          volume: volumeSeries ? volumeSeries.data() : [],
        };
      },
    };
  }

  return { create, INTERVALS_MS, DEFAULT_INTERVAL };
})();
