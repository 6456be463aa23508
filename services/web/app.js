// go-trader dashboard: follows the gateway's event stream (/api/stream: status and equity
// events) and redraws in place; polls /status and /api/equity instead while the stream is
// refused or silent, and tries the stream again a minute later.
// Hand-written, no framework and nothing fetched from elsewhere; charts are plain SVG.
"use strict";

const STATUS_MS = 2000;
const EQUITY_MS = 5000;
const STREAM_PATH = "/api/stream";
const STREAM_SILENCE_MS = 10000;  // the gateway sends status about twice a second
const STREAM_RETRY_MS = 60000;
const CATEGORY_NAMES = { spot: "Spot", deribit: "Deribit", ibkr: "IBKR", options: "Options", total: "Total" };
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#56d4dd", "#ff7b72", "#e3b341"];
const SVG_NS = "http://www.w3.org/2000/svg";

// A token given as #token=... (for a gateway exposed with allow_remote) stays in this tab only.
const token = (() => {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem("go-trader-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("go-trader-token");
})();

const state = { status: null, equity: null, sortKey: "pnl", sortAsc: false, selected: null, lastUpdate: 0 };

async function getJSON(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const resp = await fetch(path, { headers, cache: "no-store" });
  if (!resp.ok && resp.status !== 503) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

// --- formatting -----------------------------------------------------------------------------
const usd = (x) => x == null ? "—" : (x < 0 ? "-$" : "$") + Math.abs(x).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const signedUsd = (x) => x == null ? "—" : (x < 0 ? "-$" : "+$") + Math.abs(x).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const pct = (x, digits = 2) => x == null ? "—" : (x >= 0 ? "+" : "") + x.toFixed(digits) + "%";
const num = (x, digits = 6) => {
  if (x == null) return "—";
  const text = Number(x).toPrecision(digits);
  return text.includes(".") && !text.includes("e") ? text.replace(/\.?0+$/, "") : text;
};
const tone = (x) => x == null || x === 0 ? "" : (x > 0 ? "up" : "down");
const isoTime = (ms) => ms == null ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 16) + "Z";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function fillBody(table, rows, emptyText, columns) {
  const body = document.querySelector(`${table} tbody`);
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colSpan: columns }, emptyText))]));
}

// --- charts ---------------------------------------------------------------------------------
// One SVG line chart: x is market time, y is USD; a dashed line marks the starting balance.
// Drawn at the pixel width its box gets, so labels keep their size at any window width.
function lineChart(title, ts, series, baseline) {
  const box = el("div", { class: "chart" }, el("div", { class: "title" }, title));
  box.draw = () => {
    const W = Math.max(240, Math.round(box.clientWidth - 16)), H = 160, L = 62, R = 8, T = 8, B = 20;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title });
    box.append(root);
    const values = series.flatMap((s) => s.values.filter((v) => v != null));
    if (baseline != null) values.push(baseline);
    if (ts.length === 0 || values.length === 0) {
      const text = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
      text.textContent = "no equity points yet";
      root.append(text);
      return;
    }
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
    const t0 = ts[0], t1 = ts.length > 1 ? ts[ts.length - 1] : ts[0] + 1;
    const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0 || 1);
    const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    for (let i = 0; i <= 3; i++) {
      const v = lo + (hi - lo) * i / 3;
      root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      const label = svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" });
      label.textContent = usd(v).replace(/\.\d\d$/, "");
      root.append(label);
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      const label = svg("text", { x: x(t), y: H - 5, "text-anchor": anchor });
      label.textContent = isoTime(t).slice(5, 16);
      root.append(label);
    }
    if (baseline != null) root.append(svg("line", { class: "baseline", x1: L, x2: W - R, y1: y(baseline), y2: y(baseline) }));
    series.forEach((s, i) => {
      let d = "";
      s.values.forEach((v, j) => {
        if (v == null) return;
        d += `${d && s.values[j - 1] != null ? "L" : "M"}${x(ts[j]).toFixed(1)},${y(v).toFixed(1)}`;
      });
      if (d) root.append(svg("path", { class: "line", d, stroke: s.color || COLORS[i % COLORS.length], "data-series": s.name }));
    });
  };
  return box;
}

// Boxes go into the page first so that each chart can measure the width it was given.
function showCharts(container, boxes) {
  container.replaceChildren(...boxes);
  boxes.forEach((box) => box.draw());
}

function sparkline(values) {
  const W = 120, H = 26;
  const root = svg("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  const points = values.filter((v) => v != null);
  if (points.length < 2) return root;
  const lo = Math.min(...points), hi = Math.max(...points), span = hi - lo || 1;
  let d = "";
  values.forEach((v, i) => {
    if (v == null) return;
    d += `${d ? "L" : "M"}${(W * i / (values.length - 1)).toFixed(1)},${(H - 2 - (H - 4) * (v - lo) / span).toFixed(1)}`;
  });
  root.append(svg("path", { class: "line", d, stroke: points[points.length - 1] >= points[0] ? "#3fb950" : "#f85149" }));
  return root;
}

// --- sections -------------------------------------------------------------------------------
function serviceProblems(health) {
  return Object.entries(health.services || {}).flatMap(([name, s]) => (s.problems || []).map((p) => `${name}: ${p}`));
}

function renderHeader(status) {
  const health = status.health || {};
  const badge = document.getElementById("health-badge");
  const problems = serviceProblems(health);
  badge.textContent = health.ok ? "all services up"
    : problems.length ? `degraded · ${problems.length} problem${problems.length > 1 ? "s" : ""}` : "degraded";
  badge.title = problems.join("\n");
  badge.className = "badge " + (health.ok ? "ok" : "bad");
  document.getElementById("clock").textContent =
    `market ${isoTime(status.market_ts)} · cycle ${status.cycle_count} · marks ` +
    Object.entries(status.prices || {}).map(([s, p]) => `${s} ${usd(p)}`).join(" · ");
}

function renderTotals(totals) {
  const cards = ["spot", "deribit", "ibkr", "total"].filter((c) => totals[c] && totals[c].strategies).map((c) => {
    const b = totals[c];
    return el("div", { class: "card", "data-category": c },
      el("div", { class: "title" }, `${CATEGORY_NAMES[c]} · ${b.strategies} strategies`),
      el("div", { class: "value" }, `${usd(b.initial)} → ${usd(b.value)}`),
      el("div", { class: tone(b.pnl) }, `${signedUsd(b.pnl)} / ${pct(b.pnl_pct)}`));
  });
  document.getElementById("totals").replaceChildren(...cards);
}

function riskTags(risk) {
  const tags = [];
  if (!risk) return tags;
  if (risk.kill_switch) tags.push(el("span", { class: "tag kill", title: risk.kill_reason || "" }, "kill switch"));
  if (risk.circuit_breaker) tags.push(el("span", { class: "tag breaker" }, "circuit breaker"));
  if (risk.daily_loss_tripped) tags.push(el("span", { class: "tag daily" }, "daily loss"));
  return tags;
}

const sortValue = {
  open: (v) => Object.keys(v.positions || {}).length + Object.keys(v.option_positions || {}).length,
  risk: (v) => (v.risk_state && v.risk_state.kill_switch ? 2 : 0) + (v.risk_state && v.risk_state.circuit_breaker ? 1 : 0),
};

function renderStrategies(strategies) {
  const key = state.sortKey, dir = state.sortAsc ? 1 : -1;
  const get = sortValue[key] || ((v) => v[key]);
  const views = Object.values(strategies).sort((a, b) => {
    const x = get(a), y = get(b);
    if (x == null || y == null) return (x == null) - (y == null);
    return (typeof x === "string" ? x.localeCompare(y) : x - y) * dir;
  });
  const curves = (state.equity && state.equity.strategies) || {};
  const rows = views.map((v) => el("tr", { "data-strategy": v.id, class: v.id === state.selected ? "selected" : "", onclick: () => selectStrategy(v.id) },
    el("td", {}, v.id),
    el("td", {}, CATEGORY_NAMES[v.category] || v.category),
    el("td", { class: "num" }, usd(v.initial_capital)),
    el("td", { class: "num" }, usd(v.portfolio_value)),
    el("td", { class: "num " + tone(v.pnl) }, signedUsd(v.pnl)),
    el("td", { class: "num " + tone(v.pnl_pct) }, pct(v.pnl_pct)),
    el("td", { class: "num" }, v.trade_count),
    el("td", { class: "num" }, sortValue.open(v)),
    el("td", {}, ...riskTags(v.risk_state)),
    el("td", {}, sparkline(curves[v.id] || []))));
  fillBody("#strategies", rows, "no strategies yet", 10);
  document.querySelectorAll("#strategies th[data-key]").forEach((th) => {
    th.classList.toggle("sorted", th.dataset.key === key);
    th.classList.toggle("asc", th.dataset.key === key && state.sortAsc);
  });
}

function renderPositions(strategies) {
  const spot = [], options = [];
  for (const v of Object.values(strategies)) {
    for (const [symbol, p] of Object.entries(v.positions || {})) {
      spot.push(el("tr", {}, el("td", {}, v.id), el("td", {}, symbol), el("td", { class: "num" }, num(p.quantity)),
        el("td", { class: "num" }, usd(p.avg_price)), el("td", { class: "num" }, usd(p.current_price)),
        el("td", { class: "num" }, usd(p.value)), el("td", { class: "num " + tone(p.unrealized_pnl) }, signedUsd(p.unrealized_pnl))));
    }
    for (const [name, o] of Object.entries(v.option_positions || {})) {
      const g = o.current_greeks || o.greeks || {};
      options.push(el("tr", {}, el("td", {}, v.id), el("td", {}, name), el("td", { class: "num" }, num(o.quantity)),
        el("td", { class: "num" }, usd(o.current_value_usd)), el("td", { class: "num" }, num(g.delta, 3)),
        el("td", { class: "num" }, num(g.gamma, 3)), el("td", { class: "num" }, num(g.theta, 3)), el("td", { class: "num" }, num(g.vega, 3))));
    }
  }
  fillBody("#positions", spot, "no open spot positions", 7);
  fillBody("#options", options, "no open option positions", 8);
}

function renderTrades(strategies) {
  const trades = Object.values(strategies).flatMap((v) => v.recent_trades || [])
    .sort((a, b) => (b.ts_event - a.ts_event) || (b.seq - a.seq)).slice(0, 25);
  fillBody("#trades", trades.map((t) => el("tr", {},
    el("td", {}, isoTime(t.ts_event)), el("td", {}, t.strategy_id),
    el("td", { class: t.side === "buy" ? "up" : "down" }, String(t.side).toUpperCase()), el("td", {}, t.instrument),
    el("td", { class: "num" }, num(t.quantity)), el("td", { class: "num" }, usd(t.price)), el("td", { class: "num" }, usd(t.fee)))),
  "no trades yet", 7);
}

function renderRisk(strategies) {
  const items = Object.values(strategies).filter((v) => riskTags(v.risk_state).length).map((v) =>
    el("li", { "data-strategy": v.id }, ...riskTags(v.risk_state), ` ${v.id}`,
      el("span", { class: "muted" }, ` drawdown ${pct(v.risk_state.drawdown_pct, 1)}`)));
  const list = document.getElementById("risk");
  list.replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "no kill switch or circuit breaker tripped")]));
}

function renderServices(health) {
  const services = Object.entries(health.services || {}).map(([name, s]) => {
    const problems = s.problems || [];
    const stateText = !s.alive ? "lost" : problems.length ? "problem" : "alive";
    return el("tr", { "data-service": name },
      el("td", {}, name), el("td", { class: stateText === "alive" ? "up" : "down" }, stateText),
      el("td", { class: "num" }, s.last_heartbeat_age_s == null ? "—" : `${s.last_heartbeat_age_s.toFixed(1)} s`),
      el("td", { class: "num" }, s.uptime_s == null ? "—" : `${Math.round(s.uptime_s)} s`),
      el("td", { class: "num" }, s.errors == null ? "—" : s.errors),
      el("td", { class: problems.length ? "problems down" : "problems muted" }, problems.length ? problems.join("; ") : "none"));
  });
  fillBody("#services", services, "no heartbeats yet", 6);
  const feed = health.feed || {};
  document.getElementById("feed").textContent = `feed: ${feed.mode || "?"}${feed.stale ? " · STALE" : ""}` +
    `${feed.finished ? " · finished" : ""}${feed.clock_slips ? ` · clock slipped ${feed.clock_slips}× (stalls)` : ""}` +
    ` · last tick ${feed.last_tick_age_s == null ? "—" : feed.last_tick_age_s.toFixed(1) + " s ago"}`;
}

function renderCharts() {
  const eq = state.equity;
  if (!eq) return;
  const totals = (state.status && state.status.totals) || {};
  const charts = Object.entries(eq.categories).map(([c, values], i) =>
    lineChart(`${CATEGORY_NAMES[c] || c}`, eq.ts, [{ name: c, values, color: COLORS[i % COLORS.length] }], totals[c] && totals[c].initial));
  showCharts(document.getElementById("category-charts"), charts);
  const strategies = (state.status && state.status.strategies) || {};
  const chosen = state.selected && eq.strategies[state.selected] ? state.selected : bestStrategy(strategies);
  const box = document.getElementById("strategy-chart");
  if (!chosen) { box.replaceChildren(); return; }
  const view = strategies[chosen] || {};
  showCharts(box, [lineChart(`${chosen} equity`, eq.ts, [{ name: chosen, values: eq.strategies[chosen] || [] }], view.initial_capital)]);
}

function bestStrategy(strategies) {
  const views = Object.values(strategies).filter((v) => v.pnl != null);
  views.sort((a, b) => b.pnl - a.pnl);
  return views.length ? views[0].id : null;
}

function selectStrategy(id) {
  state.selected = id;
  render();
}

function render() {
  const status = state.status;
  if (!status) return;
  renderHeader(status);
  renderTotals(status.totals || {});
  renderStrategies(status.strategies || {});
  renderPositions(status.strategies || {});
  renderTrades(status.strategies || {});
  renderRisk(status.strategies || {});
  renderServices(status.health || {});
  renderCharts();
}

// --- updates: the event stream, or polling while it is unavailable ----------------------------
// Each start bumps the generation; a loop or stream of an older generation stops by itself.
const transport = { generation: 0 };

function receive(key, doc) {
  state[key] = doc;
  state.lastUpdate = Date.now();
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  render();
}

function showUnreachable(why) {
  const badge = document.getElementById("health-badge");
  badge.textContent = `gateway unreachable (${why})`;
  badge.className = "badge bad";
}

function startStream() {
  const generation = ++transport.generation;
  if (typeof EventSource !== "function") { startPolling("no EventSource"); return; }
  const source = new EventSource(token ? `${STREAM_PATH}?access_token=${encodeURIComponent(token)}` : STREAM_PATH);
  let watchdog = null;
  const fallBack = (why) => {
    clearTimeout(watchdog);
    source.close();
    if (generation === transport.generation) startPolling(why);
  };
  const arm = () => { clearTimeout(watchdog); watchdog = setTimeout(() => fallBack("stream silent"), STREAM_SILENCE_MS); };
  for (const key of ["status", "equity"]) {
    source.addEventListener(key, (event) => {
      arm();
      document.body.dataset.transport = "stream";
      receive(key, JSON.parse(event.data));
    });
  }
  // A refused stream (401, 503, not a stream) is CLOSED; a dropped one reconnects by itself.
  source.onerror = () => source.readyState === EventSource.CLOSED ? fallBack("stream refused") : showUnreachable("reconnecting");
  arm();
}

function startPolling(why) {
  const generation = ++transport.generation;
  document.body.dataset.transport = "poll";
  document.body.dataset.pollReason = why;
  const poll = async (path, key, every) => {
    if (generation !== transport.generation) return;
    try {
      receive(key, await getJSON(path));
    } catch (err) {
      showUnreachable(err.message);
    }
    setTimeout(() => poll(path, key, every), every);
  };
  poll("/status", "status", STATUS_MS);
  poll("/api/equity", "equity", EQUITY_MS);
  setTimeout(() => { if (generation === transport.generation) startStream(); }, STREAM_RETRY_MS);
}

document.querySelectorAll("#strategies th[data-key]").forEach((th) => th.addEventListener("click", () => {
  const key = th.dataset.key;
  state.sortAsc = state.sortKey === key ? !state.sortAsc : key === "id" || key === "category";
  state.sortKey = key;
  render();
}));

window.addEventListener("resize", renderCharts);
startStream();
