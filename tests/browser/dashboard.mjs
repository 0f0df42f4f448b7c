// The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
// playwright-core. Loads the page of `vizflow serve`, chooses dates and a metric in
// its controls, and checks that the heatmap's data is what `vizflow reduce` gives for
// that selection, cell by cell; then that a provisional date (a `.live.parquet`)
// appears and refreshes the figure without a reload; that the tooltip shows a cell's
// value and count; that nothing is fetched from anywhere but the server. Saves a
// screenshot.
//
//   node tests/browser/dashboard.mjs VIZFLOW_BINARY PARTIALS_DIR SCREENSHOT.png
import { spawn, execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [binary, source, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node dashboard.mjs VIZFLOW_BINARY PARTIALS_DIR SCREENSHOT.png");
  process.exit(2);
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// A copy of the partials, so that the test can add a provisional date to it.
const dir = join(mkdtempSync(join(tmpdir(), "vizflow-dashboard-")), basename(source));
mkdirSync(dir);
const partials = readdirSync(source).filter((f) => /^\d{8}\.parquet$/.test(f)).sort();
check(partials.length >= 3, `at least 3 partials in ${source}, found ${partials.length}`);
for (const f of partials) copyFileSync(join(source, f), join(dir, f));
const dates = partials.map((f) => f.slice(0, 8));

function reduceCli(args) {
  const out = join(dirname(dir), "reduce.json");
  execFileSync(binary, ["reduce", dir, ...args, "--progress", "quiet", "-o", out], { stdio: ["ignore", "ignore", "inherit"] });
  const rows = JSON.parse(readFileSync(out, "utf8")).rows;
  rmSync(out);
  return rows;
}

const server = spawn(binary, ["serve", dir, "--bind", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"] });
const lines = createInterface({ input: server.stdout });
const url = await new Promise((resolve, reject) => {
  lines.on("line", (line) => {
    const m = line.match(/at (http:\/\/127\.0\.0\.1:\d+\/)/);
    if (m) resolve(m[1]);
  });
  server.on("exit", (code) => reject(new Error(`vizflow serve exited with ${code}`)));
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const foreign = [];
  const errors = [];
  page.on("request", (r) => { if (!r.url().startsWith(url)) foreign.push(r.url()); });
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  await page.goto(url);
  await page.waitForFunction(() => window.vizflow && window.vizflow.renders >= 1);
  const meta = await page.evaluate(() => window.vizflow.meta);
  check(JSON.stringify(meta.dates) === JSON.stringify(dates), `the page lists the dates ${dates}`);

  // Choose dates (all but the first) and a metric other than the default.
  const metrics = meta.metrics.map((m) => m.name);
  const metric = metrics.find((m) => m.includes("return")) || metrics[metrics.length - 1];
  const from = dates[1];
  const to = dates[dates.length - 1];
  await page.selectOption("#metric", metric);
  await page.selectOption("#from", from);
  await page.selectOption("#to", to);
  await page.waitForFunction(
    ([metric, from, to]) => {
      const v = window.vizflow;
      return v.metric === metric && v.dates && v.dates[0] === from && v.dates[v.dates.length - 1] === to;
    },
    [metric, from, to],
  );

  // The chart's data against `vizflow reduce` for the same selection.
  async function compare(cliArgs, what) {
    const drawn = await page.evaluate(() => {
      const v = window.vizflow;
      const o = echarts.getInstanceByDom(document.getElementById("heatmap")).getOption();
      return {
        x: v.x, y: v.y, metric: v.metric, scale: v.scale,
        xs: o.xAxis[0].data, ys: o.yAxis[0].data,
        cells: o.series[0].data.concat(o.series[1].data),
        tableRows: document.querySelectorAll("#table tbody tr").length,
      };
    });
    check(drawn.x && drawn.y, `${what}: a heatmap (x ${drawn.x}, y ${drawn.y})`);
    const rows = reduceCli(["--by", `${drawn.x},${drawn.y}`, ...cliArgs]);
    check(rows.length > 0, `${what}: reduce gives rows`);
    check(drawn.cells.length === rows.length, `${what}: ${drawn.cells.length} cells drawn, ${rows.length} groups from reduce`);
    check(drawn.tableRows === Math.min(rows.length, 1000), `${what}: the table shows ${drawn.tableRows} rows`);
    for (const row of rows) {
      const i = drawn.xs.indexOf(row[drawn.x]);
      const j = drawn.ys.indexOf(row[drawn.y]);
      check(i >= 0 && j >= 0, `${what}: the cell of ${JSON.stringify(row[drawn.x])}, ${JSON.stringify(row[drawn.y])} is on the axes`);
      const cell = drawn.cells.find((c) => c.value[0] === i && c.value[1] === j);
      check(cell, `${what}: a cell at ${i}, ${j}`);
      const expected = row[drawn.metric] === null ? null : row[drawn.metric] * drawn.scale;
      check(cell.value[2] === expected, `${what}: cell ${i}, ${j} is ${cell.value[2]}, reduce says ${expected}`);
      check(cell.count === row["count()"], `${what}: cell ${i}, ${j} counts ${cell.count}, reduce ${row["count()"]}`);
    }
    return rows.length;
  }
  const groups = await compare(["--dates", `${from}..${to}`], "the chosen dates");

  // A date still open in `vizflow live`: its provisional partial appears and the page
  // refreshes to include it (its last date was the last, so it follows).
  const next = String(Number(dates[dates.length - 1]) + 1);
  copyFileSync(join(dir, partials[0]), join(dir, `${next}.live.parquet`));
  await page.waitForFunction((next) => (window.vizflow.provisional || []).includes(next), next);
  const status = await page.locator("#status").textContent();
  check(status.includes("provisional"), `the status says provisional: ${status}`);
  await compare(["--dates", `${from}..${next}`, "--live"], "with the provisional date");

  // Groups under a minimum count are drawn grey, apart from the colour scale.
  const minCount = 50;
  await page.fill("#mincount", String(minCount));
  await page.dispatchEvent("#mincount", "change");
  await page.waitForFunction((minCount) => {
    const o = echarts.getInstanceByDom(document.getElementById("heatmap")).getOption();
    return o.series[1].data.length > 0 && o.series[1].data.every((c) => c.count < minCount)
      && o.series[0].data.every((c) => c.count >= minCount);
  }, minCount);

  // Under the cursor: a cell's value and count in the tooltip, and the lines through
  // its row and its column.
  const box = await page.locator("#heatmap").boundingBox();
  // The middle column of the first row.
  const [column, px, py] = await page.evaluate(() => {
    const c = echarts.getInstanceByDom(document.getElementById("heatmap"));
    const i = Math.floor(c.getOption().xAxis[0].data.length / 2);
    return [i, ...c.convertToPixel({ seriesIndex: 0 }, [i, 0])];
  });
  await page.mouse.move(box.x + 5, box.y + 5);
  await page.mouse.move(box.x + px, box.y + py, { steps: 5 });
  await page.waitForFunction(() => [...document.querySelectorAll("#heatmap div")].some((d) => d.textContent.includes("count:")));
  const expected = await page.evaluate((column) => {
    const v = window.vizflow;
    const o = echarts.getInstanceByDom(document.getElementById("heatmap")).getOption();
    const xs = o.xAxis[0].data;
    const ys = o.yAxis[0].data;
    return [`at ${v.y} = ${keyLabel(v.y, ys[0])}`, `at ${v.x} = ${keyLabel(v.x, xs[column])}`];
  }, column);
  await page.waitForFunction((expected) => {
    const subtext = (id) => echarts.getInstanceByDom(document.getElementById(id)).getOption().title[0].subtext;
    return subtext("row-line") === expected[0] && subtext("column-line") === expected[1];
  }, expected);
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });

  check(foreign.length === 0, `requests only to the server, not ${foreign}`);
  check(errors.length === 0, `no errors in the page: ${errors}`);
  console.log(`dashboard: ${groups} groups of ${metric} over ${from}..${to} equal vizflow reduce; the provisional ${next} refreshed the page; screenshot ${screenshot}`);
} catch (error) {
  failed = true;
  console.error(error);
} finally {
  await browser.close();
  server.kill("SIGTERM");
  rmSync(dirname(dir), { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
