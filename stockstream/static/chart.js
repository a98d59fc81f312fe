// The candlestick chart panel: one symbol at a time, drawn by TradingView's
// Lightweight Charts (static/vendor/), seeded from /api/candles and then moved
// by the live updates the board receives.
//
// Reconciling the seed with the stream: the candles are requested up to the
// timestamp of the newest price the page holds (`cut`, inclusive), and only
// live updates stamped after it are applied on top; updates arriving while the
// request is under way wait in `pending`. So no update is counted twice (which
// would double its volume) whichever comes first, the answer or the update.
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

  function bucketStart(timestamp, intervalMs) {
    return timestamp - (timestamp % intervalMs);
  }

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
   * onClose(symbol) -> called when the panel closes
   */
  function create(elements, getJson, latest, onClose) {
    let chart = null;
    let candleSeries = null;
    let volumeSeries = null;
    let symbol = null;
    let interval = DEFAULT_INTERVAL;
    let generation = 0;      // bumped by every (re)seed and close: late answers are dropped
    let seeded = false;      // the series hold the seed; live updates apply directly
    let cut = null;          // updates stamped at or before this are in the seed
    let pending = [];        // live updates that came while the seed was loading
    let last = null;         // the newest candle: {time, open, high, low, close, volume}
    let stale = false;       // the stream had a gap: seed again from its next update
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
      stale = false;
      seeded = false;
      cut = null;
      pending = [];
      last = null;
      hovered = null;
      candleSeries.setData([]);
      volumeSeries.setData([]);
      renderLegend();
    }

    async function fetchCandles(sym, intervalName, from, to) {
      // Newest first: each page covers what is left before the previous one.
      const pages = [];
      let end = to;
      for (let page = 0; page < MAX_PAGES; page += 1) {
        const query = `interval=${intervalName}&from=${from}&to=${end}`;
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
      const newest = latest(symbol);
      reset();
      if (!newest) {
        // No price yet: the chart starts from the first one that arrives.
        showMessage(`No data yet for ${symbol}: the chart starts with its first price.`);
        return;
      }
      const ticket = generation;
      const intervalMs = INTERVALS_MS[interval];
      cut = newest.timestamp;
      showMessage("Loading…");
      let candles;
      try {
        candles = await fetchCandles(symbol, interval, Math.max(0, cut - intervalMs * CANDLES_WANTED), cut);
      } catch (err) {
        if (ticket === generation) showMessage(`Could not load candles: ${err.message}`);
        return;
      }
      if (ticket !== generation) return;
      const data = candles.map(candleOf);
      const volumes = candles.filter((c) => c.volume !== undefined)
        .map((c) => volumeBar(c.start / 1000, c, c.volume));
      precision = precisionFor(newest.price);
      candleSeries.applyOptions({ priceFormat: { type: "price", precision, minMove: 10 ** -precision } });
      candleSeries.setData(data);
      volumeSeries.setData(volumes);
      if (candles.length) {
        const c = candles[candles.length - 1];
        last = { time: c.start / 1000, open: c.open, high: c.high, low: c.low, close: c.close, volume: c.volume };
      }
      seeded = true;
      showMessage(data.length ? "" : `No stored prices for ${symbol} in this range yet.`);
      for (const update of pending) apply(update);
      pending = [];
      renderLegend();
      chart.timeScale().scrollToRealTime();
    }

    function apply(update) {
      if (cut !== null && update.timestamp <= cut) return;  // already in the seed
      const intervalMs = INTERVALS_MS[interval];
      const time = bucketStart(update.timestamp, intervalMs) / 1000;
      const price = update.price;
      const volume = typeof update.volume === "number" && Number.isFinite(update.volume) && update.volume >= 0
        ? update.volume : undefined;
      if (last === null || time > last.time) {
        last = { time, open: price, high: price, low: price, close: price, volume };
      } else if (time === last.time) {
        last.high = Math.max(last.high, price);
        last.low = Math.min(last.low, price);
        last.close = price;
        if (volume !== undefined) last.volume = (last.volume || 0) + volume;
      } else {
        return;  // stamped in an older bucket than the newest candle: the chart only moves forward
      }
      candleSeries.update({ time: last.time, open: last.open, high: last.high, low: last.low, close: last.close });
      if (last.volume !== undefined) volumeSeries.update(volumeBar(last.time, last, last.volume));
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
      seed();
    }

    function close() {
      if (symbol === null) return;
      const closed = symbol;
      symbol = null;
      generation += 1;
      elements.panel.hidden = true;
      onClose(closed);
    }

    function chooseInterval(name) {
      if (!(name in INTERVALS_MS) || name === interval) return;
      interval = name;
      if (symbol !== null) open(symbol);
    }

    function onUpdate(update) {
      if (symbol === null || update.symbol !== symbol) return;
      if (stale) seed();  // the page holds this update now: the seed reaches up to it
      else if (seeded) apply(update);
      else if (cut !== null) pending.push(update);
      else seed();  // the first price of a symbol that had none: start from it
    }

    // The page learnt a price of `name` from elsewhere than the stream (its history).
    function priced(name) {
      if (name === symbol && !seeded && cut === null) seed();
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
      onUpdate,
      priced,
      // After a reconnect the stream has a gap: the chart keeps what it shows and
      // is seeded again from the server's candles when the new stream's first
      // update (the subscribe snapshot) arrives, up to that update.
      reseed() { if (symbol !== null) stale = true; },
      get symbol() { return symbol; },
      get interval() { return interval; },
      setQuote(text, className) {
        elements.quote.textContent = text;
        elements.quote.className = "chart-quote" + (className ? " " + className : "");
      },
      // What the chart itself holds, read back through its series (for tests and the console).
      state() {
        return {
          symbol, interval, seeded,
          candles: candleSeries ? candleSeries.data() : [],
          volume: volumeSeries ? volumeSeries.data() : [],
        };
      },
    };
  }

  return { create, INTERVALS_MS, DEFAULT_INTERVAL };
})();
