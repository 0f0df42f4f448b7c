//! A custom enrich rule written in Rust: each symbol's position through the day, and a
//! tag on the fills that leave it beyond a position limit.
//!
//! `PositionLimit` implements [`TagRule`]: per symbol and date, in event order, it adds
//! `position` (shares bought minus shares sold so far, after this fill) and `breach`
//! (`|position| > limit`). It runs after the alpha markout pipeline's FIFO match
//! (`examples/alpha_markout.toml`), so it sees an exit split over the lots it closes as
//! several rows with the same `row_id`: it counts each fill once, and every row of a
//! fill carries the position after the whole fill. The partials group the matched
//! rows by side and breach, and the example checks them against an independent
//! computation over the generated rows, so it fails if the engine gets them wrong.
//!
//! ```sh
//! cargo run --example custom_rule
//! ```

use std::collections::{BTreeMap, VecDeque};

use anyhow::{Context, ensure};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use chrono::NaiveDate;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet};
use vizflow::operators::enrich::{Emit, Event, TagRule};
use vizflow::run::{DateStatus, ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate, generate_date};

/// The absolute position (shares) beyond which a fill is tagged as a breach.
const POSITION_LIMIT: i64 = 100_000;

/// Each symbol's running position, and whether it is beyond `limit`.
#[derive(Debug)]
struct PositionLimit {
    limit: i64,
}

/// The state per symbol and date: the position, and the `row_id` of the last fill
/// counted (the rows of a fill split by the FIFO match come one after another).
#[derive(Default)]
struct Position {
    shares: i64,
    last_fill: Option<u64>,
}

impl TagRule for PositionLimit {
    type State = Position;
    type Input<'a> = (Option<&'a str>, Option<i64>);
    type Output = (i64, bool);

    fn name(&self) -> String {
        "position_limit".into()
    }

    fn inputs(&self) -> Vec<String> {
        vec!["orderSide".into(), "qty".into()]
    }

    fn outputs(&self) -> Vec<String> {
        vec!["position".into(), "breach".into()]
    }

    fn process(
        &self,
        (side, qty): Self::Input<'_>,
        event: Event,
        state: &mut Position,
        emit: &mut Emit<'_, Self::Output>,
    ) {
        if state.last_fill != Some(event.row_id) {
            state.last_fill = Some(event.row_id);
            state.shares += match (side, qty) {
                (Some("B"), Some(qty)) => qty,
                (Some("S"), Some(qty)) => -qty,
                _ => 0,
            };
        }
        emit.push((state.shares, state.shares.abs() > self.limit));
    }
}

/// The alpha markout stages (cast, mid, trading time, forward returns, FIFO match),
/// aggregated by side and the custom rule's `breach` tag.
const PIPELINE: &str = r#"
[input]
dir = "data"
pattern = "alpha_{date}.feather"

[output]
dir = "out/custom_rule"

[columns]
timestamp = "ticktime"
symbol = "ukey"

[[cast]]
column = "qty"
to = "int64"

[derive]
mid = "(AskPrice1 + BidPrice1) / 2"

[time]
market = "CN"
format = "hhmmssmmm"

[forward_return]
price = "mid"
horizons = [300]

[[enrich]]
rule = "FIFOMatch"
side = "orderSide"
qty = "qty"

[aggregate]
group_by = ["orderSide", "breach"]

[aggregate.metrics]
rows = "count()"
matched_qty = "sum(matched_qty)"
closed_rows = "sum(is_closed)"
min_position = "min(position)"
max_position = "max(position)"
mean_return_300 = "mean(return_300)"
"#;

/// What a group of matched rows holds, merged over dates; the integer part is what the
/// independent computation checks.
#[derive(Clone, Debug, Default, PartialEq)]
struct Group {
    rows: i64,
    matched_qty: i64,
    closed_rows: i64,
    min_position: i64,
    max_position: i64,
}

impl Group {
    fn add_row(&mut self, matched_qty: i64, closed: bool, position: i64) {
        if self.rows == 0 {
            (self.min_position, self.max_position) = (position, position);
        }
        self.rows += 1;
        self.matched_qty += matched_qty;
        self.closed_rows += i64::from(closed);
        self.min_position = self.min_position.min(position);
        self.max_position = self.max_position.max(position);
    }

    /// Adds another date's group: counts and sums add, the position range widens.
    fn merge(&mut self, other: &Group) {
        if self.rows == 0 {
            (self.min_position, self.max_position) = (other.min_position, other.max_position);
        }
        self.rows += other.rows;
        self.matched_qty += other.matched_qty;
        self.closed_rows += other.closed_rows;
        self.min_position = self.min_position.min(other.min_position);
        self.max_position = self.max_position.max(other.max_position);
    }
}

/// (date, side, breach)
type Key = (NaiveDate, String, bool);

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let spec = GenSpec {
        rows: 20_000,
        symbols: 40,
        seed: 11,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    };
    let dates = [
        NaiveDate::from_ymd_opt(2024, 1, 2).context("date")?,
        NaiveDate::from_ymd_opt(2024, 1, 3).context("date")?,
    ];
    generate(&spec, &dir.path().join("data"), &dates)?;

    let pipeline = Pipeline::from_toml(PIPELINE)?.with_rule(PositionLimit {
        limit: POSITION_LIMIT,
    });
    let options = RunOptions {
        input_dir: Some(dir.path().join("data")),
        output_dir: Some(dir.path().join("out")),
        workers: 2,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&pipeline, &options)?;

    let mut engine = BTreeMap::new();
    let mut returns: BTreeMap<(String, bool), (f64, i64)> = BTreeMap::new();
    for outcome in &summary.dates {
        let DateStatus::Written { path, .. } = &outcome.status else {
            anyhow::bail!("{}: {:?}", outcome.date, outcome.status);
        };
        let partial = read_parquet(path)?.0;
        read_partial(outcome.date, &partial, &mut engine, &mut returns)?;
    }

    let mut expected = BTreeMap::new();
    for date in dates {
        expected_groups(date, &generate_date(&spec, date), &mut expected)?;
    }
    let mut keys = engine.keys().chain(expected.keys());
    if let Some(key) = keys.find(|k| engine.get(k) != expected.get(k)) {
        anyhow::bail!(
            "{key:?}: the engine's partial has {:?} but an independent computation gives {:?}",
            engine.get(key),
            expected.get(key)
        );
    }
    ensure!(
        expected.keys().any(|k| k.2) && expected.keys().any(|k| !k.2),
        "the data should have fills on both sides of the limit; change POSITION_LIMIT"
    );

    print_table(dates.len(), &engine, &returns);
    println!(
        "\nChecked: every group's rows, matched qty, closed rows and position range equal an \
         independent FIFO and position computation over the generated rows."
    );
    Ok(())
}

/// Adds a partial's groups to `groups`, and the components of `mean(return_300)` (its
/// sum and count, which merge across dates) to `returns`.
fn read_partial(
    date: NaiveDate,
    partial: &RecordBatch,
    groups: &mut BTreeMap<Key, Group>,
    returns: &mut BTreeMap<(String, bool), (f64, i64)>,
) -> anyhow::Result<()> {
    let column = |name: &str| {
        partial
            .column_by_name(name)
            .with_context(|| format!("the partial has no column '{name}'"))
    };
    let side = column("orderSide")?.as_string::<i32>().clone();
    let breach = column("breach")?.as_boolean().clone();
    let int = |name: &str| anyhow::Ok(column(name)?.as_primitive::<Int64Type>().clone());
    let (rows, matched_qty, closed_rows) = (
        int("count()")?,
        int("sum(matched_qty)")?,
        int("sum(is_closed)")?,
    );
    let (min_position, max_position) = (int("min(position)")?, int("max(position)")?);
    let return_sum = column("sum(return_300)")?
        .as_primitive::<Float64Type>()
        .clone();
    let return_count = int("count(return_300)")?;
    for i in 0..partial.num_rows() {
        let key = (side.value(i).to_owned(), breach.value(i));
        let group = Group {
            rows: rows.value(i),
            matched_qty: matched_qty.value(i),
            closed_rows: closed_rows.value(i),
            min_position: min_position.value(i),
            max_position: max_position.value(i),
        };
        groups.insert((date, key.0.clone(), key.1), group);
        let merged = returns.entry(key).or_default();
        merged.0 += return_sum.value(i);
        merged.1 += return_count.value(i);
    }
    Ok(())
}

/// Merges the dates and prints one line per side and breach.
fn print_table(
    dates: usize,
    groups: &BTreeMap<Key, Group>,
    returns: &BTreeMap<(String, bool), (f64, i64)>,
) {
    let mut merged: BTreeMap<(String, bool), Group> = BTreeMap::new();
    for ((_, side, breach), group) in groups {
        merged
            .entry((side.clone(), *breach))
            .or_default()
            .merge(group);
    }
    println!(
        "Matched rows by side and position-limit breach (|position| > {POSITION_LIMIT} shares), \
         {dates} dates merged:\n"
    );
    println!(
        "{:<5} {:<7} {:>7} {:>12} {:>7} {:>13} {:>13} {:>12}",
        "side",
        "breach",
        "rows",
        "matched qty",
        "closed",
        "min position",
        "max position",
        "ret 300s bp"
    );
    for ((side, breach), group) in &merged {
        let (sum, count) = returns[&(side.clone(), *breach)];
        let mean_bp = if count > 0 {
            format!("{:.2}", sum / count as f64 * 1e4)
        } else {
            "-".to_owned()
        };
        println!(
            "{side:<5} {breach:<7} {:>7} {:>12} {:>7} {:>13} {:>13} {mean_bp:>12}",
            group.rows,
            group.matched_qty,
            group.closed_rows,
            group.min_position,
            group.max_position
        );
    }
}

/// The groups computed without the engine: trading time on the CN clock, each symbol's
/// fills in event order, FIFO lots in a queue, the position after each fill.
fn expected_groups(
    date: NaiveDate,
    day: &RecordBatch,
    groups: &mut BTreeMap<Key, Group>,
) -> anyhow::Result<()> {
    let column = |name: &str| {
        day.column_by_name(name)
            .with_context(|| format!("no column '{name}'"))
    };
    let ticktime = column("ticktime")?.as_primitive::<Int64Type>().clone();
    let ukey = column("ukey")?.as_primitive::<Int64Type>().clone();
    let side = column("orderSide")?.as_string::<i32>().clone();
    let qty = column("qty")?.as_primitive::<Float64Type>().clone();

    // Per symbol, the rows as (elapsed_ms, row_id): sorting them is event order.
    let mut symbols: BTreeMap<i64, Vec<(i64, usize)>> = BTreeMap::new();
    for row in 0..day.num_rows() {
        let elapsed = cn_elapsed_ms(ticktime.value(row));
        symbols
            .entry(ukey.value(row))
            .or_default()
            .push((elapsed, row));
    }
    for mut fills in symbols.into_values() {
        fills.sort_unstable();
        let mut position = 0;
        let mut lots: VecDeque<(usize, i64)> = VecDeque::new(); // (entry row, open qty)
        let mut entries = Vec::new(); // (entry row, qty, position after it)
        let mut closed = BTreeMap::new(); // entry row -> qty closed by exits
        for (_, row) in fills {
            let qty = qty.value(row).round() as i64;
            match side.value(row) {
                "B" => {
                    position += qty;
                    entries.push((row, qty, position));
                    if qty > 0 {
                        lots.push_back((row, qty));
                    }
                }
                "S" => {
                    position -= qty;
                    let exit = groups
                        .entry((date, "S".to_owned(), position.abs() > POSITION_LIMIT))
                        .or_default();
                    let (mut remaining, mut portions) = (qty, 0);
                    while remaining > 0 {
                        let Some((entry, open)) = lots.front_mut() else {
                            break;
                        };
                        let taken = remaining.min(*open);
                        *closed.entry(*entry).or_insert(0) += taken;
                        (*open, remaining, portions) =
                            (*open - taken, remaining - taken, portions + 1);
                        if *open == 0 {
                            lots.pop_front();
                        }
                        exit.add_row(taken, true, position);
                    }
                    if remaining > 0 || portions == 0 {
                        exit.add_row(remaining, false, position);
                    }
                }
                other => anyhow::bail!("row {row}: unexpected side '{other}'"),
            }
        }
        // An entry's row reports how much of it was closed by the end of the date.
        for (row, qty, position) in entries {
            let matched = closed.get(&row).copied().unwrap_or(0);
            let group = groups
                .entry((date, "B".to_owned(), position.abs() > POSITION_LIMIT))
                .or_default();
            group.add_row(matched, matched == qty, position);
        }
    }
    Ok(())
}

/// Milliseconds of trading time on the CN clock (09:30-11:30, 13:00-15:00) of a
/// `HHMMSSmmm` time, clamped to the sessions.
fn cn_elapsed_ms(hhmmssmmm: i64) -> i64 {
    let (hours, minutes) = (hhmmssmmm / 10_000_000, hhmmssmmm / 100_000 % 100);
    let ms_of_day = (hours * 60 + minutes) * 60_000 + hhmmssmmm % 100_000;
    let minute = |h: i64, m: i64| (h * 60 + m) * 60_000;
    let morning = (ms_of_day - minute(9, 30)).clamp(0, 7_200_000);
    let afternoon = (ms_of_day - minute(13, 0)).clamp(0, 7_200_000);
    morning + afternoon
}
