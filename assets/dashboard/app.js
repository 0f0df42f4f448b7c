// The VizFlow dashboard: controls -> GET /api/reduce (the exact merge on the server)
// -> a heatmap, the lines through the cell under the cursor, and the table. Loads
// nothing but this server's own files. `window.vizflow` exposes what is drawn (for the
// browser test and for the curious).
"use strict";

const $ = (id) => document.getElementById(id);
const TIME_KEYS = ["date", "month", "weekday", "year"];
const POLL_MS = 2000;
const TABLE_ROWS = 1000;
const DIVERGING = ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b"];
const VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
const GREY = "#d9d9d9";

const state = {
  meta: null,
  rows: [],
  renders: 0,
  query: "",
  scale: 1,
  unit: "",
  x: null,
  y: null,
  metric: null,
  sequence: 0,
  charts: {},
  error: null,
};
window.vizflow = state;

// Numbers as a person reads them: 0.0012 -> 1.2e-3, 12.3456789 -> 12.3457.
function number(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value === 0) return "0";
  const a = Math.abs(value);
  if (a < 1e-2 || a >= 1e6) {
    const [mantissa, exponent] = value.toExponential(2).split("e");
    return `${mantissa.replace(/\.?0+$/, "")}e${exponent.replace("+", "")}`;
  }
  return value.toFixed(4).replace(/\.?0+$/, "");
}

// Text from the partials (group values, column and metric names) as HTML text: the
// tooltips are HTML.
function htmlText(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function dateLabel(d) {
  return `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`;
}

function binOf(column) {
  return (state.meta.bins || []).find((b) => b.column === column);
}

// A key as a label: a bin index in its source's units.
function keyLabel(column, key) {
  const bin = binOf(column);
  if (bin && typeof key === "number") return number(key * bin.width);
  return key === null ? "null" : String(key);
}

function axisName(column) {
  const bin = binOf(column);
  return bin ? `${bin.source} (${column} × ${number(bin.width)})` : column;
}

// Returns in basis points, as `vizflow plot` draws them.
function metricUnit(name) {
  return name.includes("return") ? [1e4, " (bp)"] : [1, ""];
}

function compareKeys(a, b) {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a) < String(b) ? -1 : 1;
}

function distinct(rows, column) {
  const seen = new Map();
  for (const row of rows) seen.set(row[column], true);
  return [...seen.keys()].sort(compareKeys);
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.appendChild(o);
}

function fillDates(meta, keepTo) {
  const provisional = new Set(meta.provisional.map((p) => p.date));
  for (const id of ["from", "to"]) {
    const select = $(id);
    const previous = select.value;
    select.innerHTML = "";
    for (const d of meta.dates) {
      option(select, d, dateLabel(d) + (provisional.has(d) ? " (provisional)" : ""));
    }
    if (previous && meta.dates.includes(previous)) select.value = previous;
  }
  if (!$("from").value || !meta.dates.includes($("from").value)) $("from").value = meta.dates[0] || "";
  if (keepTo || !meta.dates.includes($("to").value)) $("to").value = meta.dates[meta.dates.length - 1] || "";
}

function fillControls(meta) {
  $("title").textContent = meta.title;
  document.title = `VizFlow: ${meta.title}`;
  fillDates(meta, true);
  const metric = $("metric");
  metric.innerHTML = "";
  for (const m of meta.metrics) option(metric, m.name, m.name);
  const columns = meta.group_by.concat(TIME_KEYS);
  const bins = meta.bins.map((b) => b.column);
  const others = meta.group_by.filter((c) => !bins.includes(c));
  const x = $("x");
  const y = $("y");
  x.innerHTML = "";
  y.innerHTML = "";
  option(y, "", "none: a line over x");
  for (const c of columns) {
    option(x, c, c);
    option(y, c, c);
  }
  x.value = bins[0] || meta.group_by[0] || "date";
  y.value = bins[1] || others[0] || "";
}

function showStatus(meta) {
  const status = $("status");
  status.innerHTML = "";
  const n = meta.dates.length;
  const text = document.createElement("span");
  text.textContent = `${n} date${n === 1 ? "" : "s"} in ${meta.dir}`;
  status.appendChild(text);
  for (const p of meta.provisional) {
    const badge = document.createElement("span");
    badge.className = "provisional";
    const watermark = p.watermark_ms === null ? "" : `, watermark ${clock(p.watermark_ms)}`;
    const rows = p.rows === null ? "" : `, ${p.rows.toLocaleString()} rows`;
    badge.textContent = ` · ${dateLabel(p.date)} provisional${watermark}${rows} (refreshing)`;
    status.appendChild(badge);
  }
}

// Trading time (ms) as h:mm:ss.
function clock(ms) {
  const s = Math.floor(ms / 1000);
  const pad = (v) => String(v).padStart(2, "0");
  return `${Math.floor(s / 3600)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)} of trading time`;
}

function message(text, info) {
  const m = $("message");
  m.hidden = !text;
  m.textContent = text || "";
  m.className = info ? "info" : "";
}

// The selection as the API's query and as the equivalent command.
function selection() {
  const x = $("x").value;
  const y = $("y").value;
  const by = y && y !== x ? [x, y] : [x];
  const params = new URLSearchParams();
  const from = $("from").value;
  const to = $("to").value;
  params.set("dates", from === to ? from : `${from}..${to}`);
  params.set("by", by.join(","));
  const where = $("where").value.trim();
  if (where) params.set("where", where);
  let metric = $("metric").value;
  const extra = $("newmetric").value.trim();
  if (extra) {
    params.append("metric", extra);
    metric = extra.split("=")[0].trim();
  }
  const quote = (s) => `'${s.replace(/'/g, "'\\''")}'`;
  let command = `vizflow reduce ${state.meta.dir} --live --dates ${params.get("dates")} --by ${by.join(",")}`;
  if (where) command += ` --where ${quote(where)}`;
  if (extra) command += ` --metric ${quote(extra)}`;
  return { params, by, x, y: by[1] || null, metric, command };
}

async function run() {
  if (!state.meta || state.meta.dates.length === 0) {
    message(state.meta ? `No partials in ${state.meta.dir} yet: waiting for them.` : "", true);
    return;
  }
  const sel = selection();
  const sequence = ++state.sequence;
  $("command").textContent = sel.command;
  let body;
  try {
    body = await getJSON(`/api/reduce?${sel.params}`);
  } catch (error) {
    if (sequence !== state.sequence) return;
    state.error = error.message;
    message(error.message);
    return;
  }
  if (sequence !== state.sequence) return;
  state.error = null;
  if (body.rows.length > 0 && !(sel.metric in body.rows[0])) {
    message(`no metric ${sel.metric} in the result`);
    return;
  }
  message(body.rows.length === 0 ? "No group matches this selection." : "", true);
  [state.scale, state.unit] = metricUnit(sel.metric);
  Object.assign(state, { x: sel.x, y: sel.y, metric: sel.metric, rows: body.rows });
  state.query = sel.params.toString();
  state.dates = body.dates;
  state.provisional = body.provisional;
  draw(body);
  state.renders += 1;
}

function chart(id) {
  if (!state.charts[id]) state.charts[id] = echarts.init($(id), null, { renderer: "canvas" });
  return state.charts[id];
}

function subtitle(body) {
  const d = body.dates;
  let text = d.length === 1 ? dateLabel(d[0]) : `${dateLabel(d[0])} to ${dateLabel(d[d.length - 1])}, ${d.length} dates`;
  if (body.provisional.length) text += ` (provisional: ${body.provisional.map(dateLabel).join(", ")})`;
  return text;
}

function value(row) {
  const v = row[state.metric];
  return v === null || v === undefined ? null : v * state.scale;
}

function count(row) {
  const c = row["count()"];
  return c === undefined ? null : c;
}

function draw(body) {
  const rows = body.rows;
  const minCount = Number($("mincount").value) || 0;
  const title = `${state.metric}${state.unit}`;
  if (!state.y) {
    $("lines").hidden = true;
    const xs = distinct(rows, state.x);
    const byKey = new Map(rows.map((r) => [r[state.x], r]));
    const points = xs.map((k) => {
      const r = byKey.get(k);
      return count(r) !== null && count(r) < minCount ? null : value(r);
    });
    const c = chart("heatmap");
    c.clear();
    c.setOption(lineOption(`${title} by ${state.x}`, subtitle(body), state.x, xs, points, title, rows.map(count)));
    drawTable(rows);
    return;
  }
  $("lines").hidden = false;
  const xs = distinct(rows, state.x);
  const ys = distinct(rows, state.y);
  const xi = new Map(xs.map((k, i) => [k, i]));
  const yi = new Map(ys.map((k, i) => [k, i]));
  const shown = [];
  const greyed = [];
  for (const r of rows) {
    const cell = { value: [xi.get(r[state.x]), yi.get(r[state.y]), value(r)], count: count(r) };
    (cell.count !== null && cell.count < minCount ? greyed : shown).push(cell);
  }
  const finite = shown.map((c) => c.value[2]).filter((v) => v !== null && Number.isFinite(v));
  let low = finite.length ? Math.min(...finite) : 0;
  let high = finite.length ? Math.max(...finite) : 1;
  const diverging = low < 0 && high > 0;
  if (diverging) {
    const limit = Math.max(-low, high);
    [low, high] = [-limit, limit];
  } else if (high === low) {
    high = low + 1;
  }
  const tooltip = (p) => {
    const [i, j, v] = p.data.value;
    return [
      `${htmlText(axisName(state.x))}: <b>${htmlText(keyLabel(state.x, xs[i]))}</b>`,
      `${htmlText(axisName(state.y))}: <b>${htmlText(keyLabel(state.y, ys[j]))}</b>`,
      `${htmlText(title)}: <b>${number(v)}</b>`,
      `count: <b>${p.data.count === null ? "–" : p.data.count.toLocaleString()}</b>` +
        (p.seriesIndex === 1 ? ` (under ${minCount})` : ""),
    ].join("<br>");
  };
  const c = chart("heatmap");
  c.clear();
  c.setOption({
    animation: false,
    title: { text: `${title} by ${state.x} and ${state.y}`, subtext: subtitle(body), left: 10 },
    tooltip: { formatter: tooltip },
    grid: { left: 90, right: 110, top: 70, bottom: 70 },
    xAxis: {
      type: "category", data: xs, name: axisName(state.x), nameLocation: "middle", nameGap: 40,
      axisLabel: { formatter: (v, i) => keyLabel(state.x, xs[i]) }, splitArea: { show: false },
    },
    yAxis: {
      type: "category", data: ys, name: axisName(state.y), nameLocation: "middle", nameGap: 70,
      axisLabel: { formatter: (v, i) => keyLabel(state.y, ys[i]) },
    },
    visualMap: {
      seriesIndex: 0, min: low, max: high, calculable: true, orient: "vertical", right: 10, top: "middle",
      formatter: number, itemHeight: 300, // the handles show the range: no end texts too
      inRange: { color: diverging ? DIVERGING : VIRIDIS },
    },
    series: [
      { name: title, type: "heatmap", data: shown, emphasis: { itemStyle: { borderColor: "#333", borderWidth: 1 } } },
      { name: "under min count", type: "heatmap", data: greyed, itemStyle: { color: GREY } },
    ],
  });
  c.off("mouseover");
  c.on("mouseover", (p) => {
    if (p.data && p.data.value) drawLines(body, xs, ys, xs[p.data.value[0]], ys[p.data.value[1]], minCount);
  });
  drawLines(body, xs, ys, xs[Math.floor(xs.length / 2)], ys[Math.floor(ys.length / 2)], minCount);
  drawTable(rows);
}

function lineOption(text, sub, column, keys, values, name, counts) {
  return {
    animation: false,
    title: { text, subtext: sub, left: 10, textStyle: { fontSize: 14 } },
    tooltip: {
      trigger: "axis",
      formatter: (ps) => {
        const p = ps[0];
        const c = counts ? counts[p.dataIndex] : null;
        return `${htmlText(axisName(column))}: <b>${htmlText(keyLabel(column, keys[p.dataIndex]))}</b>` +
          `<br>${htmlText(name)}: <b>${number(p.value)}</b>` +
          (c === null || c === undefined ? "" : `<br>count: <b>${c.toLocaleString()}</b>`);
      },
    },
    grid: { left: 70, right: 30, top: 70, bottom: 60 },
    xAxis: {
      type: "category", data: keys, name: axisName(column), nameLocation: "middle", nameGap: 35,
      axisLabel: { formatter: (v, i) => keyLabel(column, keys[i]) },
    },
    yAxis: { type: "value", name, axisLabel: { formatter: number }, scale: true },
    series: [{ type: "line", data: values, name, connectNulls: false, showSymbol: keys.length < 60, lineStyle: { color: "#2166ac" }, itemStyle: { color: "#2166ac" } }],
  };
}

// The row (y fixed) and the column (x fixed) through the cell under the cursor.
function drawLines(body, xs, ys, xKey, yKey, minCount) {
  const pick = (fixed, key, along, keys) => {
    const byKey = new Map(body.rows.filter((r) => r[fixed] === key).map((r) => [r[along], r]));
    const rows = keys.map((k) => byKey.get(k));
    const values = rows.map((r) => (!r || (count(r) !== null && count(r) < minCount) ? null : value(r)));
    return [values, rows.map((r) => (r ? count(r) : null))];
  };
  const title = `${state.metric}${state.unit}`;
  const [rowValues, rowCounts] = pick(state.y, yKey, state.x, xs);
  chart("row-line").setOption(lineOption(`${title} along ${state.x}`, `at ${state.y} = ${keyLabel(state.y, yKey)}`, state.x, xs, rowValues, title, rowCounts), true);
  const [columnValues, columnCounts] = pick(state.x, xKey, state.y, ys);
  chart("column-line").setOption(lineOption(`${title} along ${state.y}`, `at ${state.x} = ${keyLabel(state.x, xKey)}`, state.y, ys, columnValues, title, columnCounts), true);
}

function drawTable(rows) {
  const table = $("table");
  const head = table.tHead;
  const bodyEl = table.tBodies[0];
  head.innerHTML = "";
  bodyEl.innerHTML = "";
  if (rows.length === 0) return;
  const keys = [state.x, state.y].filter(Boolean);
  const metrics = state.meta.metrics.map((m) => m.name).filter((m) => m in rows[0]);
  if (!metrics.includes(state.metric)) metrics.unshift(state.metric);
  const columns = [];
  for (const k of keys) {
    columns.push({ name: k, get: (r) => (r[k] === null ? "null" : String(r[k])), muted: !!binOf(k) });
    const bin = binOf(k);
    if (bin) columns.push({ name: bin.source, get: (r) => keyLabel(k, r[k]) });
  }
  for (const m of metrics) columns.push({ name: m, get: (r) => number(r[m]) });
  if ("count()" in rows[0]) columns.push({ name: "count()", get: (r) => (r["count()"] ?? "–").toLocaleString() });
  const tr = document.createElement("tr");
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c.name;
    tr.appendChild(th);
  }
  head.appendChild(tr);
  const fragment = document.createDocumentFragment();
  for (const r of rows.slice(0, TABLE_ROWS)) {
    const row = document.createElement("tr");
    for (const c of columns) {
      const td = document.createElement("td");
      td.textContent = c.get(r);
      if (c.muted) td.className = "muted";
      row.appendChild(td);
    }
    fragment.appendChild(row);
  }
  bodyEl.appendChild(fragment);
  $("table-note").textContent =
    rows.length > TABLE_ROWS ? `The first ${TABLE_ROWS} of ${rows.length} groups.` : `${rows.length} groups.`;
}

async function refresh() {
  let meta;
  try {
    meta = await getJSON("/api/meta");
  } catch (error) {
    $("status").textContent = `the server does not answer (${error.message})`;
    return;
  }
  const first = !state.meta;
  const changed = first || meta.fingerprint !== state.meta.fingerprint;
  const toWasLast = !first && $("to").value === state.meta.dates[state.meta.dates.length - 1];
  const hadLayout = state.meta && state.meta.metrics.length > 0;
  state.meta = meta;
  showStatus(meta);
  if (first || !hadLayout) fillControls(meta);
  else if (changed) fillDates(meta, toWasLast);
  if (changed) await run();
}

function start() {
  $("controls").addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  for (const id of ["from", "to", "metric", "x", "y", "mincount"]) $(id).addEventListener("change", () => run());
  window.addEventListener("resize", () => Object.values(state.charts).forEach((c) => c.resize()));
  refresh();
  setInterval(refresh, POLL_MS);
}

start();
