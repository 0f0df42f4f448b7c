//! The enrich stage through the engine, against a plain sequential oracle written from
//! SEMANTICS.md and the rules' documented decisions, on seeded random days (three dates
//! with the same symbols, so per-date resets matter) with ties in time, lunch-break and
//! out-of-hours rows, float noise in quantities, zero and null quantities, null and
//! other sides, null and NaN prices; for 1, 2 and 4 workers, serialized exchange (2 and
//! 4 workers), rows pushed in small shuffled batches, and rows read from files. By topic:
//! - `markout`: the alpha markout reference pipeline of SEMANTICS.md, partial by partial;
//! - `rows`: FIFOMatch, TagCondition, TagRunning and a custom rule added with
//!   `Pipeline::with_rule` (it drops and splits rows), checked row by row: the aggregate
//!   groups by `(ukey, row_id, matched_entry_id, part)`, one group per enriched row;
//! - `errors`: a running value's integer overflow fails its date only.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::{Datelike, NaiveDate};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vizflow::config::Pipeline;
use vizflow::engine::{DateResult, Engine, Feeding, Workers};
use vizflow::io::{DateFile, FileFormat, write_batches};
use vizflow::operators::batch::Partition;
use vizflow_operators::enrich::{Emit, Event, TagRule};
use vizflow_testing::fifo::{FifoRow, fifo};

mod common;

/// The sections every test pipeline shares: where (unused) files would be, the column
/// mapping, the `qty` cast, `mid`, the trading clock.
macro_rules! common_sections {
    () => {
        r#"
[input]
dir = "unused"
pattern = "x_{date}.feather"

[output]
dir = "unused"

[columns]
timestamp = "ticktime"
symbol = "ukey"

[[cast]]
column = "qty"
to = "int64"

[time]
market = "CN"
format = "hhmmssmmm"
"#
    };
}

/// SEMANTICS.md, "Worked reference pipeline: alpha markout".
const MARKOUT: &str = concat!(
    common_sections!(),
    r#"
[derive]
mid = "(AskPrice1 + BidPrice1) / 2"
notional = "matched_qty * fillPrice"

[forward_return]
price = "mid"
horizons = [60, 300, 600]

[[enrich]]
rule = "FIFOMatch"
side = "orderSide"
qty = "qty"
price = "fillPrice"

[bin]
alpha1 = 1e-4

[aggregate]
group_by = ["alpha1_bin", "orderSide"]

[aggregate.metrics]
count = "count()"
total_qty = "sum(matched_qty)"
total_notional = "sum(notional)"
vwap = "sum(notional) / sum(matched_qty)"
mean_return_60 = "mean(return_60)"
mean_return_300 = "mean(return_300)"
mean_holding_period = "mean(holding_period)"
closed_count = "sum(is_closed)"
"#
);

/// Every rule kind, and one group per enriched row (plus [`Lots`], added from Rust).
const ROWS: &str = concat!(
    common_sections!(),
    r#"
[derive]
mid = "(AskPrice1 + BidPrice1) / 2"
notional = "matched_qty * fillPrice"

[forward_return]
price = "mid"
horizons = [60, 300]

[[enrich]]
rule = "TagRunning"
name = "position"
update = "prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END"

[[enrich]]
rule = "FIFOMatch"
side = "orderSide"
qty = "qty"
price = "fillPrice"

[[enrich]]
rule = "TagCondition"
name = "big"
condition = "matched_qty >= 1000"

[[enrich]]
rule = "TagRunning"
name = "closed_run"
update = "prev + coalesce(matched_qty, 0)"

[[enrich]]
rule = "TagRunning"
name = "exposure"
update = "prev + coalesce(matched_qty * fillPrice, 0.0)"
initial = 0.0

[aggregate]
group_by = ["ukey", "row_id", "matched_entry_id", "part"]

[aggregate.metrics]
rows = "count()"
max_elapsed = "max(elapsed_ms)"
max_position = "max(position)"
max_matched_qty = "max(matched_qty)"
max_holding = "max(holding_period)"
max_entry_price = "max(matched_entry_price)"
closed = "sum(is_closed)"
closed_known = "count(is_closed)"
big = "sum(big)"
big_known = "count(big)"
max_closed_run = "max(closed_run)"
max_exposure = "max(exposure)"
max_return_60 = "max(return_60)"
max_return_300 = "max(return_300)"
max_notional = "max(notional)"
max_seq = "max(seq)"
max_open_qty = "max(open_qty)"
max_event_ms = "max(event_ms)"
"#
);

/// After the other rules: drops rows with a null side, splits rows left open
/// (`is_closed` false) with a positive `matched_qty` into `part` 0 and 1. `seq` numbers
/// the rows it saw per symbol and date (dropped ones included); `open_qty` is the running
/// sum of the open rows' `matched_qty`; `event_ms` echoes the event's `elapsed_ms`.
#[derive(Debug)]
struct Lots;

impl TagRule for Lots {
    type State = (i64, i64);
    type Input<'a> = (Option<&'a str>, Option<i64>, Option<bool>);
    type Output = (u64, i64, i64, i64);

    fn name(&self) -> String {
        "lots".into()
    }
    fn inputs(&self) -> Vec<String> {
        ["orderSide", "matched_qty", "is_closed"]
            .map(String::from)
            .to_vec()
    }
    fn outputs(&self) -> Vec<String> {
        ["part", "seq", "open_qty", "event_ms"]
            .map(String::from)
            .to_vec()
    }
    fn process(
        &self,
        (side, matched_qty, is_closed): Self::Input<'_>,
        event: Event,
        (seen, open): &mut (i64, i64),
        emit: &mut Emit<'_, Self::Output>,
    ) {
        *seen += 1;
        if side.is_none() {
            return;
        }
        let left_open = is_closed == Some(false) && matched_qty.is_some_and(|q| q > 0);
        if left_open {
            *open += matched_qty.unwrap_or(0);
        }
        emit.push((0, *seen, *open, event.elapsed_ms));
        if left_open {
            emit.push((1, *seen, *open, event.elapsed_ms));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Random days.

const SYMBOLS: i64 = 15;
/// The CN trading day in ms (09:30-11:30 and 13:00-15:00).
const DAY_MS: i64 = 14_400_000;

/// A date's input, column by column; row `i` has `row_id` `i`.
#[derive(Clone, Debug, Default)]
struct Day {
    ticktime: Vec<i64>,
    symbol: Vec<i64>,
    side: Vec<Option<&'static str>>,
    qty: Vec<Option<f64>>,
    fill_price: Vec<Option<f64>>,
    bid: Vec<Option<f64>>,
    ask: Vec<Option<f64>>,
    alpha1: Vec<Option<f64>>,
}

/// A random day: symbols of skewed activity, times at 2 s resolution over the whole
/// day (ties), with session edges, lunch-break and out-of-hours rows.
fn random_day(seed: u64, rows: usize) -> Day {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut day = Day::default();
    for _ in 0..rows {
        let edges = [
            91_500_000,
            93_000_000,
            113_000_000,
            120_000_000,
            130_000_000,
            150_000_000,
            153_000_000,
        ];
        let ticktime = if rng.random_bool(0.03) {
            edges[rng.random_range(0..edges.len())]
        } else {
            // 8% of rows outside 09:30-11:30 and 13:00-15:00.
            let ms_of_day: i64 = if rng.random_bool(0.08) {
                rng.random_range(8 * 3_600_000..16 * 3_600_000)
            } else if rng.random_bool(0.5) {
                rng.random_range(34_200_000..=41_400_000)
            } else {
                rng.random_range(46_800_000..=54_000_000)
            } / 2_000
                * 2_000;
            let (h, m, s, ms) = (
                ms_of_day / 3_600_000,
                ms_of_day / 60_000 % 60,
                ms_of_day / 1000 % 60,
                ms_of_day % 1000,
            );
            h * 10_000_000 + m * 100_000 + s * 1000 + ms
        };
        day.ticktime.push(ticktime);
        let symbol = (rng.random_range(0.0f64..1.0).powi(2) * SYMBOLS as f64) as i64;
        day.symbol.push(symbol);
        day.side.push(match rng.random_range(0..100) {
            0..=1 => None,
            2..=3 => Some("X"),
            k if k % 2 == 0 => Some("B"),
            _ => Some("S"),
        });
        let noise = match rng.random_range(0..10) {
            0 => 1e-8,
            1 => -1e-8,
            _ => 0.0,
        };
        day.qty.push(match rng.random_range(0..1000) {
            0..=2 => None,
            3..=12 => Some(0.0),
            _ => Some(rng.random_range(1..20) as f64 * 100.0 + noise),
        });
        let mid = 10.0 + symbol as f64 + rng.random_range(-0.5..0.5);
        day.fill_price.push(if rng.random_bool(0.02) {
            None
        } else {
            Some((mid * 100.0).round() / 100.0)
        });
        day.bid.push(if rng.random_bool(0.02) {
            None
        } else {
            Some(mid - 0.01)
        });
        day.ask.push(if rng.random_bool(0.01) {
            Some(f64::NAN)
        } else {
            Some(mid + 0.01)
        });
        day.alpha1.push(match rng.random_range(0..100) {
            0..=2 => None,
            3 => Some(f64::NAN),
            // Multiples of half a bin width land on rounding ties.
            4..=10 => Some(rng.random_range(-10..10) as f64 * 0.5e-4),
            _ => Some(rng.random_range(-1e-3..1e-3)),
        });
    }
    day
}

impl Day {
    fn len(&self) -> usize {
        self.ticktime.len()
    }

    fn symbol_name(&self, row: usize) -> String {
        format!("SH{}", 600_000 + self.symbol[row])
    }

    /// The day as a file would hold it; `ukey` as integers or as strings.
    fn batch(&self, string_symbols: bool) -> RecordBatch {
        let ukey: ArrayRef = if string_symbols {
            Arc::new(StringArray::from_iter_values(
                (0..self.len()).map(|i| self.symbol_name(i)),
            ))
        } else {
            Arc::new(Int64Array::from_iter_values(
                self.symbol.iter().map(|s| 600_000 + s),
            ))
        };
        let floats = |values: &[Option<f64>]| Arc::new(Float64Array::from(values.to_vec())) as _;
        RecordBatch::try_from_iter(vec![
            (
                "ticktime",
                Arc::new(Int64Array::from(self.ticktime.clone())) as ArrayRef,
            ),
            ("ukey", ukey),
            ("orderSide", Arc::new(StringArray::from(self.side.clone()))),
            ("qty", floats(&self.qty)),
            ("fillPrice", floats(&self.fill_price)),
            ("BidPrice1", floats(&self.bid)),
            ("AskPrice1", floats(&self.ask)),
            ("alpha1", floats(&self.alpha1)),
            (
                "alpha2",
                Arc::new(Float64Array::from_iter_values(
                    self.alpha1.iter().map(|a| a.unwrap_or(0.0) * 2.0),
                )),
            ),
        ])
        .unwrap()
    }
}

fn dates() -> Vec<NaiveDate> {
    (2..5)
        .map(|d| NaiveDate::from_ymd_opt(2024, 1, d).unwrap())
        .collect()
}

fn days() -> Vec<Day> {
    vec![
        random_day(31, 3_000),
        random_day(32, 2_000),
        random_day(33, 2_500),
    ]
}

// ---------------------------------------------------------------------------------------
// The oracle: SEMANTICS.md row by row.

/// One row after the FIFO match (and the rules of [`ROWS`] before the custom one).
#[derive(Clone, Debug, Default)]
struct Enriched {
    source: usize,
    /// `position`, from the original rows (it runs before FIFO).
    position: Option<i64>,
    matched_entry_id: Option<usize>,
    matched_qty: Option<i64>,
    holding_period: Option<f64>,
    matched_entry_price: Option<f64>,
    is_closed: Option<bool>,
}

/// The oracle's view of a day: `elapsed_ms` and the forward returns of the original
/// rows, and each symbol's rows after FIFO.
struct OracleDay {
    elapsed_ms: Vec<i64>,
    /// `return_60`, `return_300`, `return_600` of each original row.
    returns: Vec<[Option<f64>; 3]>,
    /// Per symbol, the rows after FIFO in event order (an exit's rows in the order its
    /// lots were taken, then the remainder).
    symbols: Vec<Vec<Enriched>>,
}

fn oracle_day(day: &Day) -> OracleDay {
    let n = day.len();
    // The cast keeps the nearest integer (the noise is within the 1e-6 tolerance).
    let qty: Vec<Option<i64>> = day
        .qty
        .iter()
        .map(|q| q.map(|q| q.round() as i64))
        .collect();
    let elapsed_ms: Vec<i64> = day
        .ticktime
        .iter()
        .map(|t| common::oracle_elapsed_ms(*t))
        .collect();
    let mid: Vec<Option<f64>> = (0..n)
        .map(|i| Some((day.ask[i]? + day.bid[i]?) / 2.0))
        .collect();
    let mut by_symbol: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        by_symbol.entry(day.symbol[i]).or_default().push(i);
    }
    let mut returns = vec![[None; 3]; n];
    let mut symbols = Vec::new();
    for (_, mut ids) in by_symbol {
        ids.sort_by_key(|i| (elapsed_ms[*i], *i));
        for &i in &ids {
            for (h, horizon) in [60, 300, 600].iter().enumerate() {
                let target = elapsed_ms[i] + 1000 * horizon;
                if target > DAY_MS {
                    continue;
                }
                // The last row of the symbol with elapsed_ms <= target, in event order.
                let last = ids.partition_point(|j| elapsed_ms[*j] <= target) - 1;
                returns[i][h] = mid[ids[last]].zip(mid[i]).map(|(f, c)| f / c - 1.0);
            }
        }
        symbols.push(oracle_fifo(day, &qty, &elapsed_ms, &ids));
    }
    OracleDay {
        elapsed_ms,
        returns,
        symbols,
    }
}

/// `position` over the symbol's original rows, then SEMANTICS.md "FIFO matching" (the
/// shared oracle, see [`vizflow_testing::fifo`], with `rules/fifo`'s decisions: zero
/// quantities, null quantities invalid, null sides as other sides).
fn oracle_fifo(day: &Day, qty: &[Option<i64>], elapsed_ms: &[i64], ids: &[usize]) -> Vec<Enriched> {
    let mut position = Some(0i64);
    let positions: Vec<Option<i64>> = ids
        .iter()
        .map(|&i| {
            // prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END; a null side takes
            // the ELSE branch, a null operand makes this and every later value null.
            let delta = if day.side[i] == Some("B") {
                qty[i]
            } else {
                qty[i].map(|q| -q)
            };
            position = position.zip(delta).map(|(p, d)| p + d);
            position
        })
        .collect();
    let rows: Vec<FifoRow> = ids
        .iter()
        .map(|&i| FifoRow {
            side: day.side[i],
            qty: qty[i],
            elapsed_ms: elapsed_ms[i],
        })
        .collect();
    let (matched, _counts) = fifo(&rows);
    matched
        .into_iter()
        .map(|m| {
            let entry = m.matched_entry.map(|e| ids[e]);
            Enriched {
                source: ids[m.input],
                position: positions[m.input],
                matched_entry_id: entry,
                matched_qty: m.matched_qty,
                holding_period: m.holding_period,
                matched_entry_price: entry.and_then(|e| day.fill_price[e]),
                is_closed: m.is_closed,
            }
        })
        .collect()
}

/// `matched_qty * fillPrice`, as the late derived column computes it.
fn notional(row: &Enriched, day: &Day) -> Option<f64> {
    row.matched_qty
        .zip(day.fill_price[row.source])
        .map(|(q, p)| q as f64 * p)
}

/// Aggregates skip nulls and non-finite floats.
fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite())
}

/// A float sum with what bounds its rounding error: the sum of the absolute values.
#[derive(Clone, Copy, Debug, Default)]
struct Sum {
    sum: f64,
    abs: f64,
    count: i64,
}

impl Sum {
    fn add(&mut self, x: Option<f64>) {
        if let Some(x) = finite(x) {
            self.sum += x;
            self.abs += x.abs();
            self.count += 1;
        }
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

type MarkoutKey = (Option<i64>, Option<String>);

#[derive(Clone, Debug, Default)]
struct MarkoutGroup {
    count: i64,
    total_qty: i64,
    notional: Sum,
    returns: [Sum; 2],
    holding: Sum,
    closed_count: i64,
}

/// Steps 5 and 6 of the alpha markout pipeline over the FIFO rows.
fn markout_oracle(day: &Day) -> BTreeMap<MarkoutKey, MarkoutGroup> {
    let oracle = oracle_day(day);
    let mut groups: BTreeMap<MarkoutKey, MarkoutGroup> = BTreeMap::new();
    for row in oracle.symbols.iter().flatten() {
        let i = row.source;
        // Round half away from zero, as f64::round does.
        let bin = finite(day.alpha1[i]).map(|a| (a / 1e-4).round() as i64);
        let group = groups
            .entry((bin, day.side[i].map(str::to_owned)))
            .or_default();
        group.count += 1;
        group.total_qty += row.matched_qty.unwrap_or(0);
        group.notional.add(notional(row, day));
        // Expanded rows carry their source row's returns.
        group.returns[0].add(oracle.returns[i][0]);
        group.returns[1].add(oracle.returns[i][1]);
        group.holding.add(row.holding_period);
        group.closed_count += i64::from(row.is_closed == Some(true));
    }
    groups
}

/// Integers exactly. Floats: the engine's sums are exact (correctly rounded), the oracle's
/// are plain left-to-right sums, so they agree to within 1e-9 of the sum of the absolute
/// values (scaled like the value: divided by the count for a mean).
fn assert_close(got: Option<f64>, expected: Option<f64>, scale: f64, what: &str) {
    match (got, expected) {
        (None, None) => {}
        (Some(g), Some(e)) => assert!(
            (g - e).abs() <= 1e-9 * scale,
            "{what}: got {g}, expected {e} (scale {scale})"
        ),
        _ => panic!("{what}: got {got:?}, expected {expected:?}"),
    }
}

/// A column's value at `row`, as i64 or f64 whatever the integer or float type.
fn int_at(batch: &RecordBatch, name: &str, row: usize) -> Option<i64> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("partial lacks {name}"));
    let column = arrow::compute::cast(column, &DataType::Int64).unwrap();
    let column = column.as_primitive::<Int64Type>();
    column.is_valid(row).then(|| column.value(row))
}

fn float_at(batch: &RecordBatch, name: &str, row: usize) -> Option<f64> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("partial lacks {name}"));
    assert_eq!(column.data_type(), &DataType::Float64, "{name}");
    let column = column.as_primitive::<Float64Type>();
    column.is_valid(row).then(|| column.value(row))
}

fn string_at(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let column = batch.column_by_name(name).unwrap();
    let column = arrow::compute::cast(column, &DataType::Utf8).unwrap();
    let column = column.as_string::<i32>();
    column.is_valid(row).then(|| column.value(row).to_owned())
}

fn assert_markout_matches(partial: &RecordBatch, day: &Day, what: &str) {
    let expected = markout_oracle(day);
    // The day exercises null vwaps (no matched quantity) and holding periods.
    let groups = || expected.values();
    assert!(expected.len() > 50);
    assert!(groups().any(|g| g.total_qty == 0));
    assert!(groups().filter(|g| g.holding.count > 0).count() > 20);
    assert_eq!(
        partial.num_rows(),
        expected.len(),
        "{what}: number of groups"
    );
    for row in 0..partial.num_rows() {
        let key: MarkoutKey = (
            int_at(partial, "alpha1_bin", row),
            string_at(partial, "orderSide", row),
        );
        let what = format!("{what}, group {key:?}");
        let g = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{what}: unexpected group"));
        assert_eq!(
            int_at(partial, "count", row),
            Some(g.count),
            "{what}: count"
        );
        assert_eq!(
            int_at(partial, "total_qty", row),
            Some(g.total_qty),
            "{what}: total_qty"
        );
        assert_eq!(
            int_at(partial, "closed_count", row),
            Some(g.closed_count),
            "{what}: closed_count"
        );
        let total_notional = float_at(partial, "total_notional", row);
        assert_close(
            total_notional,
            Some(g.notional.sum),
            g.notional.abs,
            &format!("{what}: total_notional"),
        );
        // Division by zero is null.
        let vwap = (g.total_qty != 0).then(|| g.notional.sum / g.total_qty as f64);
        let vwap_scale = g.notional.abs / (g.total_qty as f64).abs().max(1.0);
        assert_close(
            float_at(partial, "vwap", row),
            vwap,
            vwap_scale,
            &format!("{what}: vwap"),
        );
        for (h, name) in ["mean_return_60", "mean_return_300"].iter().enumerate() {
            let sum = &g.returns[h];
            let scale = sum.abs / sum.count.max(1) as f64;
            assert_close(
                float_at(partial, name, row),
                sum.mean(),
                scale,
                &format!("{what}: {name}"),
            );
        }
        let scale = g.holding.abs / g.holding.count.max(1) as f64;
        assert_close(
            float_at(partial, "mean_holding_period", row),
            g.holding.mean(),
            scale,
            &format!("{what}: mean_holding_period"),
        );
    }
}

/// One enriched row of [`ROWS`] as the aggregate exposes it (floats as the aggregate
/// sees them: non-finite values are missing).
#[derive(Clone, Debug, Default, PartialEq)]
struct RowValues {
    rows: i64,
    elapsed_ms: i64,
    position: Option<i64>,
    matched_qty: Option<i64>,
    holding_period: Option<f64>,
    matched_entry_price: Option<f64>,
    closed: i64,
    closed_known: i64,
    big: i64,
    big_known: i64,
    closed_run: i64,
    exposure: Option<f64>,
    return_60: Option<f64>,
    return_300: Option<f64>,
    notional: Option<f64>,
    seq: i64,
    open_qty: i64,
    event_ms: i64,
}

/// `(ukey, row_id, matched_entry_id, part)`.
type RowKey = (String, i64, Option<i64>, i64);

/// Every rule of [`ROWS`] and [`Lots`], in order, one symbol at a time. Float values
/// are computed with the same operations in the same order as the engine, so they are
/// compared exactly.
fn rows_oracle(day: &Day) -> BTreeMap<RowKey, RowValues> {
    let oracle = oracle_day(day);
    let mut rows = BTreeMap::new();
    for symbol in &oracle.symbols {
        let (mut closed_run, mut exposure) = (0i64, 0.0f64);
        let (mut seen, mut open) = (0i64, 0i64);
        for row in symbol {
            let i = row.source;
            closed_run += row.matched_qty.unwrap_or(0);
            exposure += notional(row, day).unwrap_or(0.0);
            // Lots.
            seen += 1;
            if day.side[i].is_none() {
                continue;
            }
            let left_open = row.is_closed == Some(false) && row.matched_qty.is_some_and(|q| q > 0);
            if left_open {
                open += row.matched_qty.unwrap_or(0);
            }
            // big = matched_qty >= 1000: null when matched_qty is.
            let big = row.matched_qty.map(|q| q >= 1000);
            let values = RowValues {
                rows: 1,
                elapsed_ms: oracle.elapsed_ms[i],
                position: row.position,
                matched_qty: row.matched_qty,
                holding_period: row.holding_period,
                matched_entry_price: finite(row.matched_entry_price),
                closed: i64::from(row.is_closed == Some(true)),
                closed_known: i64::from(row.is_closed.is_some()),
                big: i64::from(big == Some(true)),
                big_known: i64::from(big.is_some()),
                closed_run,
                exposure: finite(Some(exposure)),
                return_60: finite(oracle.returns[i][0]),
                return_300: finite(oracle.returns[i][1]),
                notional: finite(notional(row, day)),
                seq: seen,
                open_qty: open,
                event_ms: oracle.elapsed_ms[i],
            };
            let entry = row.matched_entry_id.map(|e| e as i64);
            for part in 0..if left_open { 2 } else { 1 } {
                let key = (day.symbol_name(i), i as i64, entry, part);
                let previous = rows.insert(key.clone(), values.clone());
                assert!(previous.is_none(), "the oracle made two rows {key:?}");
            }
        }
    }
    rows
}

/// The day exercises what the rows test is about: exits split over several lots,
/// remainders, rows dropped and split by [`Lots`], null and non-null positions, both
/// values of `big`.
fn assert_rows_coverage(expected: &BTreeMap<RowKey, RowValues>) {
    let mut lots_per_exit: BTreeMap<i64, usize> = BTreeMap::new();
    for (key, _) in expected.iter().filter(|(k, _)| k.2.is_some() && k.3 == 0) {
        *lots_per_exit.entry(key.1).or_default() += 1;
    }
    let rows = || expected.iter();
    let coverage = [
        (
            "exits over several lots",
            lots_per_exit.values().filter(|n| **n > 1).count(),
        ),
        ("split rows", rows().filter(|(k, _)| k.3 == 1).count()),
        (
            "null positions",
            rows().filter(|(_, v)| v.position.is_none()).count(),
        ),
        (
            "positions",
            rows().filter(|(_, v)| v.position.is_some()).count(),
        ),
        ("big", rows().filter(|(_, v)| v.big == 1).count()),
        (
            "not big",
            rows()
                .filter(|(_, v)| v.big_known == 1 && v.big == 0)
                .count(),
        ),
        ("null big", rows().filter(|(_, v)| v.big_known == 0).count()),
        (
            "null returns",
            rows().filter(|(_, v)| v.return_300.is_none()).count(),
        ),
        (
            "clamped rows",
            rows().filter(|(_, v)| v.elapsed_ms == 7_200_000).count(),
        ),
    ];
    for (what, count) in coverage {
        assert!(count >= 5, "only {count} rows with {what}");
    }
}

fn assert_rows_match(partial: &RecordBatch, day: &Day, what: &str) {
    let expected = rows_oracle(day);
    assert_rows_coverage(&expected);
    let dropped = (0..day.len()).filter(|i| day.side[*i].is_none()).count();
    assert!(
        dropped > 5 && expected.len() > day.len(),
        "{dropped} rows dropped, {} rows",
        expected.len()
    );
    let mut got = BTreeMap::new();
    for row in 0..partial.num_rows() {
        let key: RowKey = (
            string_at(partial, "ukey", row).unwrap(),
            int_at(partial, "row_id", row).unwrap(),
            int_at(partial, "matched_entry_id", row),
            int_at(partial, "part", row).unwrap(),
        );
        let int = |name: &str| int_at(partial, name, row);
        let float = |name: &str| float_at(partial, name, row);
        let values = RowValues {
            rows: int("rows").unwrap(),
            elapsed_ms: int("max_elapsed").unwrap(),
            position: int("max_position"),
            matched_qty: int("max_matched_qty"),
            holding_period: float("max_holding"),
            matched_entry_price: float("max_entry_price"),
            closed: int("closed").unwrap(),
            closed_known: int("closed_known").unwrap(),
            big: int("big").unwrap(),
            big_known: int("big_known").unwrap(),
            closed_run: int("max_closed_run").unwrap(),
            exposure: float("max_exposure"),
            return_60: float("max_return_60"),
            return_300: float("max_return_300"),
            notional: float("max_notional"),
            seq: int("max_seq").unwrap(),
            open_qty: int("max_open_qty").unwrap(),
            event_ms: int("max_event_ms").unwrap(),
        };
        assert!(got.insert(key, values).is_none());
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: rows missing {missing:?}, unexpected {extra:?}"
    );
    for (key, values) in &expected {
        assert_eq!(&got[key], values, "{what}: row {key:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Running the engine.

/// How rows reach the engine.
#[derive(Clone, Copy, Debug)]
enum Feed {
    /// Each date's rows shuffled and pushed in batches of 1 to 199 rows (each row with
    /// its `row_id`).
    Pushed(u64),
    /// Each date written to a Feather file of several parts, read with `push_file_part`.
    Files,
}

fn serialized(workers: usize) -> timely::Config {
    timely::Config {
        communication: timely::CommunicationConfig::ProcessBinary(workers),
        worker: Default::default(),
    }
}

/// Every engine setup the results must not depend on.
fn setups() -> Vec<(&'static str, timely::Config, Partition, Feed)> {
    use Partition::{Date, Symbol};
    vec![
        (
            "1 worker, pushed",
            timely::Config::thread(),
            Symbol,
            Feed::Pushed(1),
        ),
        (
            "2 workers, pushed",
            common::process(2),
            Symbol,
            Feed::Pushed(2),
        ),
        (
            "4 workers, pushed",
            common::process(4),
            Symbol,
            Feed::Pushed(3),
        ),
        (
            "2 workers, serialized, pushed",
            serialized(2),
            Symbol,
            Feed::Pushed(4),
        ),
        (
            "4 workers, serialized, pushed",
            serialized(4),
            Symbol,
            Feed::Pushed(7),
        ),
        ("2 workers, files", common::process(2), Symbol, Feed::Files),
        (
            "2 workers by date, pushed",
            common::process(2),
            Date,
            Feed::Pushed(8),
        ),
        (
            "4 workers by date, serialized, files",
            serialized(4),
            Date,
            Feed::Files,
        ),
    ]
}

/// Runs `pipeline` over the days (dates in order) and returns each date's result.
fn run_engine(
    pipeline: &Pipeline,
    days: &[RecordBatch],
    config: timely::Config,
    partition: Partition,
    feed: Feed,
) -> Vec<DateResult> {
    let bound = pipeline.bind(&days[0].schema()).unwrap();
    let mut engine =
        Engine::launch(bound, Workers::Local(config), partition, Feeding::Shared).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for (date, day) in dates().into_iter().zip(days) {
        engine.begin_date(date).unwrap();
        match feed {
            Feed::Pushed(seed) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed * 100 + u64::from(date.day()));
                let mut order: Vec<u32> = (0..day.num_rows() as u32).collect();
                order.shuffle(&mut rng);
                let mut start = 0;
                while start < order.len() {
                    let size = rng.random_range(1..200).min(order.len() - start);
                    engine
                        .push(common::rows_with_ids(day, &order[start..start + size]))
                        .unwrap();
                    start += size;
                }
            }
            Feed::Files => {
                let path = dir
                    .path()
                    .join(format!("x_{}.feather", date.format("%Y%m%d")));
                let parts: Vec<RecordBatch> = (0..day.num_rows())
                    .step_by(300)
                    .map(|start| day.slice(start, 300.min(day.num_rows() - start)))
                    .collect();
                write_batches(&path, FileFormat::IpcFile, day.schema(), &parts, None).unwrap();
                let file = Arc::new(DateFile::open(&path).unwrap());
                assert!(file.num_parts() > 1);
                for part in 0..file.num_parts() {
                    engine.push_file_part(file.clone(), part, 97).unwrap();
                }
            }
        }
        while let Some(result) = engine.next_result().unwrap() {
            results.push(result);
        }
    }
    results.extend(engine.finish().unwrap());
    assert_eq!(results.len(), days.len());
    results
}

fn partial(result: DateResult, what: &str) -> RecordBatch {
    match result.partial {
        Ok(partial) => partial,
        Err(errors) => panic!("{what}: date {} failed: {errors:?}", result.date),
    }
}

// ---------------------------------------------------------------------------------------
// markout

#[test]
fn alpha_markout_matches_the_oracle_for_any_workers_batches_serialization_and_files() {
    let days = days();
    let batches: Vec<RecordBatch> = days.iter().map(|d| d.batch(false)).collect();
    let pipeline = Pipeline::from_toml(MARKOUT).unwrap();
    let mut reference: Option<Vec<RecordBatch>> = None;
    for (name, config, partition, feed) in setups() {
        let partials: Vec<RecordBatch> = run_engine(&pipeline, &batches, config, partition, feed)
            .into_iter()
            .map(|r| partial(r, name))
            .collect();
        for ((day, partial), date) in days.iter().zip(&partials).zip(dates()) {
            assert_markout_matches(partial, day, &format!("{name}, {date}"));
        }
        // Exact sums make every partial bit-identical, not merely close.
        match &reference {
            None => reference = Some(partials),
            Some(reference) => assert_eq!(&partials, reference, "{name}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// rows

#[test]
fn every_rule_matches_the_oracle_row_by_row_for_any_workers_batches_serialization_and_files() {
    let days = days();
    let batches: Vec<RecordBatch> = days.iter().map(|d| d.batch(true)).collect();
    let pipeline = Pipeline::from_toml(ROWS).unwrap().with_rule(Lots);
    let mut reference: Option<Vec<RecordBatch>> = None;
    for (name, config, partition, feed) in setups() {
        let partials: Vec<RecordBatch> = run_engine(&pipeline, &batches, config, partition, feed)
            .into_iter()
            .map(|r| partial(r, name))
            .collect();
        for ((day, partial), date) in days.iter().zip(&partials).zip(dates()) {
            assert_rows_match(partial, day, &format!("{name}, {date}"));
        }
        match &reference {
            None => reference = Some(partials),
            Some(reference) => assert_eq!(&partials, reference, "{name}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// errors

#[test]
fn an_overflowing_running_value_fails_its_date_only() {
    // The second date gets a symbol of its own with two buys of 9e18 at the same time:
    // in event order (row_id breaks the tie) the second overflows the position.
    let mut days = days();
    days.truncate(2);
    let second = &mut days[1];
    let n = second.len();
    for _ in 0..2 {
        second.ticktime.push(100_000_000);
        second.symbol.push(SYMBOLS + 1);
        second.side.push(Some("B"));
        second.qty.push(Some(9e18));
        second.fill_price.push(Some(1.0));
        second.bid.push(Some(1.0));
        second.ask.push(Some(1.0));
        second.alpha1.push(None);
    }
    let batches: Vec<RecordBatch> = days.iter().map(|d| d.batch(true)).collect();
    let pipeline = Pipeline::from_toml(ROWS).unwrap().with_rule(Lots);
    for (name, config, feed) in [
        ("1 worker", timely::Config::thread(), Feed::Pushed(5)),
        ("2 workers", common::process(2), Feed::Pushed(6)),
    ] {
        let mut results = run_engine(&pipeline, &batches, config, Partition::Symbol, feed);
        let failed = results.pop().unwrap();
        assert_rows_match(&partial(results.pop().unwrap(), name), &days[0], name);
        assert_eq!(
            failed.partial.unwrap_err(),
            [format!(
                "TagRunning(position): row_id {} (prev = 9000000000000000000): cannot evaluate \
                 expression 'prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END': \
                 Arithmetic overflow: Overflow happened on: 9000000000000000000 + \
                 9000000000000000000",
                n + 1
            )],
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// float noise

/// FIFO matches the quantities after the `[[cast]]`: noise within 1e-6 of an integer
/// (B 100.00000001, S 59.9999999999, S 40.0000000001) matches exactly, closing the lot.
#[test]
fn float_noise_quantities_match_as_integers() {
    const NOISE: &str = concat!(
        common_sections!(),
        r#"
[[enrich]]
rule = "FIFOMatch"
side = "orderSide"
qty = "qty"

[aggregate]
group_by = ["row_id", "matched_entry_id"]

[aggregate.metrics]
matched = "sum(matched_qty)"
closed = "sum(is_closed)"
"#
    );
    let batch = RecordBatch::try_from_iter([
        (
            "ticktime",
            Arc::new(Int64Array::from(vec![93000000, 93100000, 93200000])) as ArrayRef,
        ),
        ("ukey", Arc::new(Int64Array::from(vec![600000; 3])) as _),
        (
            "orderSide",
            Arc::new(StringArray::from(vec!["B", "S", "S"])) as _,
        ),
        (
            "qty",
            Arc::new(Float64Array::from(vec![
                100.00000001,
                59.9999999999,
                40.0000000001,
            ])) as _,
        ),
    ])
    .unwrap();
    let pipeline = Pipeline::from_toml(NOISE).unwrap();
    let mut engine = Engine::start(pipeline.bind(&batch.schema()).unwrap(), 1).unwrap();
    engine.begin_date(dates()[0]).unwrap();
    engine.push(batch).unwrap();
    let mut results = engine.finish().unwrap();
    let partial = partial(results.remove(0), "float noise");
    let mut groups = Vec::new();
    for row in 0..partial.num_rows() {
        groups.push((
            int_at(&partial, "row_id", row),
            int_at(&partial, "matched_entry_id", row),
            int_at(&partial, "matched", row),
            int_at(&partial, "closed", row),
        ));
    }
    groups.sort();
    assert_eq!(
        groups,
        [
            (Some(0), None, Some(100), Some(1)),
            (Some(1), Some(0), Some(60), Some(1)),
            (Some(2), Some(0), Some(40), Some(1)),
        ]
    );
}
