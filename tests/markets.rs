//! Markets other than CN, end to end (issue 13): `vizflow run`, the binary, over small
//! files each test writes, every date's partial against an oracle that computes
//! `elapsed_ms`, its bin and the group sums in plain Rust from the test's own rows. The
//! oracle converts instants with chrono-tz and knows each market's hours as the literal
//! facts below ([`US`], [`HK`], ...), never through `src/market.rs` or the operators'
//! clock and time parser.
//!
//! | test | market | timestamps | file | out_of_session |
//! |---|---|---|---|---|
//! | `us_timestamp_ns_utc_across_the_dst_change` | `US`, Fri 2024-03-08 (EST) and Mon 2024-03-11 (EDT) | `timestamp[ns, UTC]` | feather | clamp |
//! | `us_epoch_millis_across_the_dst_change` | the same | Int64 epoch ms, `epoch_millis` | feather | drop |
//! | `hk_lunch_break_and_time_strings_dropped` | `HK` | `"HH:MM:SS.fff"` strings | CSV | drop |
//! | `jp_wall_clock_timestamps` | `JP` | `timestamp[ms]` without a zone | feather | clamp |
//! | `jp_sessions_overridden_before_the_close_moved` | `JP` with its 2024-10 sessions, `[time.market]` | HHMMSS integers, `auto` | CSV | drop |
//! | `kr_zoned_timestamps` | `KR` | `timestamp[us, Asia/Seoul]` | Parquet | drop |
//! | `crypto_one_utc_day` | `crypto`, a Saturday | Int64 epoch us, `epoch_micros` | feather | clamp |
//! | `custom_market_with_a_session_past_midnight` | an inline table: Europe/London in BST, three sessions, the last to 25:00 | Int64 epoch s, `epoch_seconds` | Parquet | clamp |
//! | `out_of_session_error_*` | `HK`, `US` | strings, epoch ms | CSV, feather | error |
//!
//! Every date has seeded random rows of several symbols (and a null symbol), with ties,
//! local disorder, null quantities and prices, rows on the session bounds, in breaks,
//! before the open, after the close and (for instants) on the neighbouring days. The
//! pipeline bins `elapsed_seconds`, and sums `elapsed_ms` and quantities and takes a
//! 60 s forward return per symbol and bin, so a wrong `elapsed_ms` for any row changes
//! the partial. Each case runs with `--workers 1` and `--workers 2` (and, with two dates,
//! `--workers 2 --partition date`); the partials and reports must be identical and equal
//! to the oracle's, the reports counting the rows the oracle clamps or drops.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
};
use arrow::datatypes::{Date32Type, Float64Type, Int64Type};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

const EXE: &str = env!("CARGO_BIN_EXE_vizflow");

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;
const SECOND: i64 = 1000;

/// A market as this file knows it, independently of the engine: a time zone and the
/// sessions as local wall-clock ms after midnight, ends inclusive.
#[derive(Clone, Copy, Debug)]
struct Hours {
    zone: Tz,
    sessions: &'static [(i64, i64)],
}

impl Hours {
    fn total_ms(&self) -> i64 {
        self.sessions.iter().map(|(start, end)| end - start).sum()
    }
}

/// NYSE/Nasdaq regular hours: 09:30-16:00 New York time, 6.5 h.
const US: Hours = Hours {
    zone: chrono_tz::America::New_York,
    sessions: &[(9 * HOUR + 30 * MINUTE, 16 * HOUR)],
};

/// HKEX: 09:30-12:00 and 13:00-16:00 Hong Kong time, 5.5 h.
const HK: Hours = Hours {
    zone: chrono_tz::Asia::Hong_Kong,
    sessions: &[(9 * HOUR + 30 * MINUTE, 12 * HOUR), (13 * HOUR, 16 * HOUR)],
};

/// TSE since 2024-11-05: 09:00-11:30 and 12:30-15:30 Tokyo time, 5.5 h.
const JP: Hours = Hours {
    zone: chrono_tz::Asia::Tokyo,
    sessions: &[
        (9 * HOUR, 11 * HOUR + 30 * MINUTE),
        (12 * HOUR + 30 * MINUTE, 15 * HOUR + 30 * MINUTE),
    ],
};

/// TSE before 2024-11-05 (the close at 15:00), as the test's `[time.market]` gives it.
const JP_BEFORE_2024_11_05: Hours = Hours {
    zone: chrono_tz::Asia::Tokyo,
    sessions: &[
        (9 * HOUR, 11 * HOUR + 30 * MINUTE),
        (12 * HOUR + 30 * MINUTE, 15 * HOUR),
    ],
};

/// KRX regular session: 09:00-15:30 Seoul time, 6.5 h.
const KR: Hours = Hours {
    zone: chrono_tz::Asia::Seoul,
    sessions: &[(9 * HOUR, 15 * HOUR + 30 * MINUTE)],
};

/// Round the clock: one UTC day, 00:00-24:00, both ends inclusive.
const CRYPTO: Hours = Hours {
    zone: chrono_tz::UTC,
    sessions: &[(0, 24 * HOUR)],
};

/// The custom market of [`custom_market_with_a_session_past_midnight`], as its TOML
/// table says: London time, 08:00-12:00, 12:02-16:30:30 and 22:00-01:00 the next day.
const LONDON_DESK: Hours = Hours {
    zone: chrono_tz::Europe::London,
    sessions: &[
        (8 * HOUR, 12 * HOUR),
        (
            12 * HOUR + 2 * MINUTE,
            16 * HOUR + 30 * MINUTE + 30 * SECOND,
        ),
        (22 * HOUR, 25 * HOUR),
    ],
};

/// How a test stores its timestamps.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stamp {
    /// `timestamp[ns, UTC]`: instants, with sub-ms digits.
    NanosUtc,
    /// `timestamp[us, zone]`: instants, with sub-ms digits.
    MicrosZoned(&'static str),
    /// `timestamp[ms]` without a zone: local wall-clock date and time.
    MillisWallClock,
    /// Int64 seconds since the epoch.
    EpochSeconds,
    /// Int64 ms since the epoch.
    EpochMillis,
    /// Int64 us since the epoch, with sub-ms digits.
    EpochMicros,
    /// Int64 `HHMMSS` local wall-clock time.
    Hhmmss,
    /// `HH:MM:SS.fff` strings (some without the fraction, some with 6 digits).
    Text,
}

impl Stamp {
    /// Whether the encoding can hold a time on another local day than the date's.
    fn spans_days(self) -> bool {
        !matches!(self, Stamp::Hhmmss | Stamp::Text)
    }

    fn whole_seconds(self) -> bool {
        matches!(self, Stamp::EpochSeconds | Stamp::Hhmmss)
    }
}

/// A stored timestamp value.
#[derive(Clone, Debug)]
enum Stamped {
    Int(i64),
    Text(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FileKind {
    Feather,
    Parquet,
    Csv,
}

impl FileKind {
    fn extension(self) -> &'static str {
        match self {
            FileKind::Feather => "feather",
            FileKind::Parquet => "parquet",
            FileKind::Csv => "csv",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Policy {
    Clamp,
    Drop,
    /// Dates that should succeed hold no row outside the sessions.
    Error,
}

impl Policy {
    fn toml(self) -> &'static str {
        match self {
            Policy::Clamp => "clamp",
            Policy::Drop => "drop",
            Policy::Error => "error",
        }
    }
}

/// One market case: what the pipeline says and what the oracle knows.
#[derive(Clone, Debug)]
struct Case {
    name: &'static str,
    /// The end of the `[time]` section: `market = ...` or a `[time.market]` table.
    market_toml: &'static str,
    /// `[time] format`, when not left to `auto`.
    format: Option<&'static str>,
    hours: Hours,
    stamp: Stamp,
    file: FileKind,
    policy: Policy,
    dates: Vec<NaiveDate>,
    symbols: &'static [&'static str],
    bin_seconds: i64,
    seed: u64,
}

/// One input row, in file order (its index is its `row_id`).
#[derive(Clone, Debug)]
struct Row {
    ts: Stamped,
    sym: Option<String>,
    qty: Option<i64>,
    price: Option<f64>,
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

fn yyyymmdd(date: NaiveDate) -> String {
    date.format("%Y%m%d").to_string()
}

fn local_midnight(date: NaiveDate) -> NaiveDateTime {
    date.and_hms_opt(0, 0, 0).unwrap()
}

// ---- rows ----

/// A local wall-clock time of `date`, in ms after its midnight (negative: the day
/// before; past 24 h: the day after), drawn to hit every case of the clock.
fn random_local_ms(rng: &mut ChaCha8Rng, case: &Case) -> i64 {
    let sessions = case.hours.sessions;
    let (first, last) = (sessions[0].0, sessions[sessions.len() - 1].1);
    let ms = match rng.random_range(0..100) {
        // The bounds of a session, and a ms either side.
        0..=7 => {
            let (start, end) = sessions[rng.random_range(0..sessions.len())];
            [start, end, start - 1, start + 1, end - 1, end + 1][rng.random_range(0..6)]
        }
        // Around the day: pre-market, breaks, post-market.
        8..=19 => rng.random_range(first - 90 * MINUTE..=last + 90 * MINUTE),
        // In a break, when there is one.
        20..=24 if sessions.len() > 1 => {
            let i = rng.random_range(1..sessions.len());
            rng.random_range(sessions[i - 1].1 + 1..sessions[i].0)
        }
        // On the neighbouring local days.
        25..=27 if rng.random_bool(0.5) => -rng.random_range(1..4 * HOUR),
        25..=27 => 24 * HOUR + rng.random_range(0..4 * HOUR),
        // Within a second of a bin's rounding tie (elapsed seconds = (k + 1/2) bins).
        28..=33 => {
            let half_bins = case.hours.total_ms() / (case.bin_seconds * 500);
            let half_bin = 2 * rng.random_range(0..(half_bins + 1) / 2) + 1;
            let elapsed = (half_bin * case.bin_seconds * 500 + rng.random_range(0..SECOND))
                .min(case.hours.total_ms());
            wall_clock_of_elapsed(case.hours, elapsed)
        }
        // In a session, on whole seconds (many ties) or to the ms.
        _ => {
            let (start, end) = sessions[rng.random_range(0..sessions.len())];
            let ms = rng.random_range(start..=end);
            if rng.random_bool(0.5) {
                ms / SECOND * SECOND
            } else {
                ms
            }
        }
    };
    let ms = if case.stamp.spans_days() {
        ms
    } else {
        ms.clamp(0, 24 * HOUR - 1)
    };
    if case.stamp.whole_seconds() {
        ms.div_euclid(SECOND) * SECOND
    } else {
        ms
    }
}

/// The inverse of the trading clock, for drawing times near bin edges.
fn wall_clock_of_elapsed(hours: Hours, elapsed_ms: i64) -> i64 {
    let mut before = 0;
    for &(start, end) in hours.sessions {
        if elapsed_ms <= before + end - start {
            return start + elapsed_ms - before;
        }
        before += end - start;
    }
    unreachable!("{elapsed_ms} is past the day's total {before}")
}

/// Stores local wall-clock `ms` after the midnight of `date` in the case's encoding;
/// None for a local time that does not exist (a DST gap).
fn stamp(rng: &mut ChaCha8Rng, case: &Case, date: NaiveDate, ms: i64) -> Option<Stamped> {
    let local = local_midnight(date) + chrono::Duration::milliseconds(ms);
    let instant_ms = || {
        let instant = case.hours.zone.from_local_datetime(&local).single()?;
        Some(instant.timestamp_millis())
    };
    let (h, m, s, f) = (ms / HOUR, ms / MINUTE % 60, ms / SECOND % 60, ms % SECOND);
    Some(match case.stamp {
        Stamp::NanosUtc => Stamped::Int(instant_ms()? * 1_000_000 + rng.random_range(0..1_000_000)),
        Stamp::MicrosZoned(_) | Stamp::EpochMicros => {
            Stamped::Int(instant_ms()? * 1000 + rng.random_range(0..1000))
        }
        Stamp::EpochMillis => Stamped::Int(instant_ms()?),
        Stamp::EpochSeconds => Stamped::Int(instant_ms()? / 1000),
        Stamp::MillisWallClock => Stamped::Int(local.and_utc().timestamp_millis()),
        Stamp::Hhmmss => Stamped::Int(h * 10_000 + m * 100 + s),
        Stamp::Text => Stamped::Text(match rng.random_range(0..10) {
            0 if f == 0 => format!("{h:02}:{m:02}:{s:02}"),
            1 => format!(
                "{h:02}:{m:02}:{s:02}.{f:03}{:03}",
                rng.random_range(0..1000)
            ),
            _ => format!("{h:02}:{m:02}:{s:02}.{f:03}"),
        }),
    })
}

/// A date's rows: mostly in time order with local disorder, several symbols of skewed
/// activity and a null one, duplicated times, null quantities and prices.
fn random_rows(case: &Case, date: NaiveDate, seed: u64) -> Vec<Row> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let count = rng.random_range(500..700);
    let base: Vec<f64> = case
        .symbols
        .iter()
        .map(|_| rng.random_range(5.0..500.0))
        .collect();
    let mut timed: Vec<(i64, Row)> = Vec::with_capacity(count);
    while timed.len() < count {
        if !timed.is_empty() && rng.random_bool(0.04) {
            // Another trade of the same symbol at the same time.
            let (ms, row) = timed[rng.random_range(0..timed.len())].clone();
            timed.push((ms, row));
            continue;
        }
        let ms = random_local_ms(&mut rng, case);
        let Some(ts) = stamp(&mut rng, case, date, ms) else {
            continue;
        };
        let symbol = (rng.random_range(0.0f64..1.0).powi(2) * case.symbols.len() as f64) as usize;
        let sym = (!rng.random_bool(0.02)).then(|| case.symbols[symbol].to_owned());
        let qty = (!rng.random_bool(0.05)).then(|| rng.random_range(1..50) * 100);
        let raw = base[symbol] * rng.random_range(0.98..1.02);
        // Four decimals, so that a CSV holds exactly the value the oracle uses.
        let price = (!rng.random_bool(0.02)).then(|| format!("{raw:.4}").parse().unwrap());
        timed.push((
            ms,
            Row {
                ts,
                sym,
                qty,
                price,
            },
        ));
    }
    timed.sort_by_key(|(ms, _)| *ms);
    for i in 0..timed.len() {
        if rng.random_bool(0.2) {
            let j = (i + rng.random_range(0..10)).min(timed.len() - 1);
            timed.swap(i, j);
        }
    }
    timed.into_iter().map(|(_, row)| row).collect()
}

// ---- files ----

/// Rows per record batch (feather) or row group (Parquet): several per date, so that
/// two workers each read a share.
const ROWS_PER_PART: usize = 64;

fn input_name(case: &Case, date: NaiveDate) -> String {
    format!("{}_{}.{}", case.name, yyyymmdd(date), case.file.extension())
}

fn to_batch(case: &Case, rows: &[Row]) -> RecordBatch {
    let ints = || -> Vec<i64> {
        rows.iter()
            .map(|r| match &r.ts {
                Stamped::Int(v) => *v,
                Stamped::Text(t) => panic!("{t} is not an integer timestamp"),
            })
            .collect()
    };
    let ts: ArrayRef = match case.stamp {
        Stamp::NanosUtc => Arc::new(TimestampNanosecondArray::from(ints()).with_timezone("UTC")),
        Stamp::MicrosZoned(zone) => {
            Arc::new(TimestampMicrosecondArray::from(ints()).with_timezone(zone))
        }
        Stamp::MillisWallClock => Arc::new(TimestampMillisecondArray::from(ints())),
        Stamp::Text => Arc::new(StringArray::from_iter(rows.iter().map(|r| match &r.ts {
            Stamped::Text(t) => Some(t.clone()),
            Stamped::Int(v) => panic!("{v} is not a time string"),
        }))),
        _ => Arc::new(Int64Array::from(ints())),
    };
    RecordBatch::try_from_iter([
        ("ts", ts),
        (
            "sym",
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.sym.clone()))) as ArrayRef,
        ),
        (
            "qty",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.qty))),
        ),
        (
            "price",
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.price))),
        ),
    ])
    .unwrap()
}

fn write_input(case: &Case, dir: &Path, date: NaiveDate, rows: &[Row]) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(input_name(case, date));
    match case.file {
        FileKind::Feather => {
            let batch = to_batch(case, rows);
            let file = std::fs::File::create(&path).unwrap();
            let mut writer =
                arrow::ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
            for offset in (0..rows.len()).step_by(ROWS_PER_PART) {
                let length = ROWS_PER_PART.min(rows.len() - offset);
                writer.write(&batch.slice(offset, length)).unwrap();
            }
            writer.finish().unwrap();
        }
        FileKind::Parquet => {
            let batch = to_batch(case, rows);
            let file = std::fs::File::create(&path).unwrap();
            let properties = parquet::file::properties::WriterProperties::builder()
                .set_max_row_group_row_count(Some(ROWS_PER_PART))
                .build();
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(properties))
                    .unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
        FileKind::Csv => {
            let mut text = String::from("ts,sym,qty,price\n");
            for row in rows {
                let ts = match &row.ts {
                    Stamped::Int(v) => v.to_string(),
                    Stamped::Text(t) => t.clone(),
                };
                let sym = row.sym.clone().unwrap_or_default();
                let qty = row.qty.map(|q| q.to_string()).unwrap_or_default();
                // `{:?}` keeps a decimal point, so the column is read as floats.
                let price = row.price.map(|p| format!("{p:?}")).unwrap_or_default();
                writeln!(text, "{ts},{sym},{qty},{price}").unwrap();
            }
            std::fs::write(&path, text).unwrap();
        }
    }
}

fn pipeline_toml(case: &Case, data: &Path, policy: Policy) -> String {
    let format = case
        .format
        .map(|f| format!("format = \"{f}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[input]
dir = "{data}"
pattern = "{name}_{{date}}.{extension}"
batch_rows = 50

[output]
dir = "unused"

[columns]
timestamp = "ts"
symbol = "sym"

[forward_return]
price = "price"
horizons = [60]

[bin]
elapsed_seconds = {bin_seconds}

[aggregate]
group_by = ["sym", "elapsed_seconds_bin"]

[aggregate.metrics]
rows = "count()"
priced = "count(price)"
traded = "count(qty)"
total_qty = "sum(qty)"
first_ms = "min(elapsed_ms)"
last_ms = "max(elapsed_ms)"
sum_ms = "sum(elapsed_ms)"
returns = "count(return_60)"
mean_return_60 = "mean(return_60)"

[time]
{format}out_of_session = "{policy}"
{market}
"#,
        data = data.display(),
        name = case.name,
        extension = case.file.extension(),
        bin_seconds = case.bin_seconds,
        policy = policy.toml(),
        market = case.market_toml,
    )
}

// ---- the oracle ----

/// The local wall-clock time of a stored timestamp, in ms after the midnight starting
/// `date` (wall-clock hours past 24 on the next day, negative on the day before).
fn wall_clock_ms(stamp: Stamp, value: &Stamped, date: NaiveDate, zone: Tz) -> i64 {
    let midnight = local_midnight(date);
    let since_midnight = |local: NaiveDateTime| (local - midnight).num_milliseconds();
    let instant = |utc: DateTime<Utc>| since_midnight(utc.with_timezone(&zone).naive_local());
    // Instants are whole ms toward the past: 16:00:00.000999 is 16:00:00.000.
    let from_ms = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
    match (stamp, value) {
        (Stamp::NanosUtc, Stamped::Int(ns)) => instant(from_ms(ns.div_euclid(1_000_000))),
        (Stamp::MicrosZoned(_) | Stamp::EpochMicros, Stamped::Int(us)) => {
            instant(from_ms(us.div_euclid(1000)))
        }
        (Stamp::EpochMillis, Stamped::Int(ms)) => instant(from_ms(*ms)),
        (Stamp::EpochSeconds, Stamped::Int(s)) => instant(DateTime::from_timestamp(*s, 0).unwrap()),
        (Stamp::MillisWallClock, Stamped::Int(ms)) => since_midnight(from_ms(*ms).naive_utc()),
        (Stamp::Hhmmss, Stamped::Int(v)) => {
            (v / 10_000 * 3600 + v / 100 % 100 * 60 + v % 100) * SECOND
        }
        (Stamp::Text, Stamped::Text(text)) => {
            let (clock, fraction) = text.split_once('.').unwrap_or((text, ""));
            let fields: Vec<i64> = clock.split(':').map(|f| f.parse().unwrap()).collect();
            let millis: i64 = format!("{fraction:0<3}")[..3].parse().unwrap();
            fields[0] * HOUR + fields[1] * MINUTE + fields[2] * SECOND + millis
        }
        (stamp, value) => panic!("{value:?} is not a {stamp:?} timestamp"),
    }
}

/// SEMANTICS.md, parse_time: trading ms since the first open, and whether the time is
/// outside the sessions (then clamped: 0 before the open, the end of the previous
/// session in a break, the day's total after the close).
fn trading_ms(hours: Hours, wall_clock_ms: i64) -> (i64, bool) {
    let mut before = 0;
    for &(start, end) in hours.sessions {
        if wall_clock_ms < start {
            return (before, true);
        }
        if wall_clock_ms <= end {
            return (before + wall_clock_ms - start, false);
        }
        before += end - start;
    }
    (before, true)
}

/// A group of the partial: the symbol and the bin of `elapsed_seconds`.
type Key = (Option<String>, i64);

/// The integer metrics of a group.
#[derive(Clone, Debug, Default, PartialEq)]
struct Group {
    rows: i64,
    priced: i64,
    traded: i64,
    total_qty: i64,
    first_ms: i64,
    last_ms: i64,
    sum_ms: i64,
    returns: i64,
}

#[derive(Debug, Default)]
struct Expected {
    groups: BTreeMap<Key, Group>,
    /// `mean(return_60)` of each group, None when it has no return.
    mean_returns: BTreeMap<Key, Option<f64>>,
    clamped: u64,
    dropped: u64,
    /// Rows outside the sessions, by `row_id`.
    outside: Vec<usize>,
}

/// The pipeline of [`pipeline_toml`] over one date's rows, from SEMANTICS.md.
fn oracle(case: &Case, date: NaiveDate, rows: &[Row], policy: Policy) -> Expected {
    let hours = case.hours;
    let total = hours.total_ms();
    let mut expected = Expected::default();
    // (row_id, elapsed_ms) of the rows that go on after parse_time.
    let mut kept: Vec<(usize, i64)> = Vec::new();
    for (row_id, row) in rows.iter().enumerate() {
        let wall_clock = wall_clock_ms(case.stamp, &row.ts, date, hours.zone);
        let (elapsed, outside) = trading_ms(hours, wall_clock);
        if outside {
            expected.outside.push(row_id);
            match policy {
                Policy::Clamp => expected.clamped += 1,
                Policy::Drop => {
                    expected.dropped += 1;
                    continue;
                }
                Policy::Error => {}
            }
        }
        kept.push((row_id, elapsed));
    }
    // Forward returns: per symbol in event order (elapsed_ms, then row_id), the price of
    // the last row at or before the target, null past the day's total.
    let mut events: BTreeMap<Option<&str>, Vec<(i64, usize)>> = BTreeMap::new();
    for &(row_id, elapsed) in &kept {
        let symbol = rows[row_id].sym.as_deref();
        events.entry(symbol).or_default().push((elapsed, row_id));
    }
    let mut return_60: BTreeMap<usize, Option<f64>> = BTreeMap::new();
    for symbol_events in events.values_mut() {
        symbol_events.sort();
        for &(elapsed, row_id) in symbol_events.iter() {
            let target = elapsed + 60 * SECOND;
            let value = (target <= total)
                .then(|| {
                    let last = symbol_events.partition_point(|(e, _)| *e <= target) - 1;
                    let future = rows[symbol_events[last].1].price?;
                    Some(future / rows[row_id].price? - 1.0)
                })
                .flatten();
            return_60.insert(row_id, value);
        }
    }
    let mut return_sums: BTreeMap<Key, f64> = BTreeMap::new();
    for &(row_id, elapsed) in &kept {
        let row = &rows[row_id];
        let seconds = elapsed.div_euclid(SECOND);
        // Round half away from zero of seconds / width, for seconds >= 0.
        let bin = (2 * seconds + case.bin_seconds).div_euclid(2 * case.bin_seconds);
        let key = (row.sym.clone(), bin);
        let group = expected.groups.entry(key.clone()).or_insert(Group {
            first_ms: elapsed,
            last_ms: elapsed,
            ..Group::default()
        });
        group.rows += 1;
        group.priced += i64::from(row.price.is_some());
        group.traded += i64::from(row.qty.is_some());
        group.total_qty += row.qty.unwrap_or(0);
        group.first_ms = group.first_ms.min(elapsed);
        group.last_ms = group.last_ms.max(elapsed);
        group.sum_ms += elapsed;
        if let Some(r) = return_60[&row_id] {
            group.returns += 1;
            *return_sums.entry(key).or_default() += r;
        }
    }
    for (key, group) in &expected.groups {
        let mean = (group.returns > 0).then(|| return_sums[key] / group.returns as f64);
        expected.mean_returns.insert(key.clone(), mean);
    }
    expected
}

// ---- checks ----

/// The groups of a partial, as the oracle writes them.
fn actual_groups(
    partial: &RecordBatch,
    date: NaiveDate,
) -> (BTreeMap<Key, Group>, BTreeMap<Key, Option<f64>>) {
    let column = |name: &str| {
        partial
            .column_by_name(name)
            .unwrap_or_else(|| panic!("the partial has no column {name}"))
            .clone()
    };
    let dates = column("date");
    let days = (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32;
    assert!(
        dates
            .as_primitive::<Date32Type>()
            .iter()
            .all(|d| d == Some(days)),
        "date column of {date}"
    );
    let symbols = column("sym");
    let symbols = symbols.as_string::<i32>();
    let bins = column("elapsed_seconds_bin");
    let bins = bins.as_primitive::<Int64Type>();
    let ints: BTreeMap<&str, ArrayRef> = [
        "rows",
        "priced",
        "traded",
        "total_qty",
        "first_ms",
        "last_ms",
        "sum_ms",
        "returns",
    ]
    .into_iter()
    .map(|name| (name, column(name)))
    .collect();
    let int = |name: &str, i: usize| {
        let values = ints[name].as_primitive::<Int64Type>();
        assert!(values.is_valid(i), "{name} is null in group {i}");
        values.value(i)
    };
    let means = column("mean_return_60");
    let means = means.as_primitive::<Float64Type>();
    let (mut groups, mut mean_returns) = (BTreeMap::new(), BTreeMap::new());
    for i in 0..partial.num_rows() {
        assert!(bins.is_valid(i), "null elapsed_seconds_bin in group {i}");
        let key = (
            symbols.is_valid(i).then(|| symbols.value(i).to_owned()),
            bins.value(i),
        );
        let group = Group {
            rows: int("rows", i),
            priced: int("priced", i),
            traded: int("traded", i),
            total_qty: int("total_qty", i),
            first_ms: int("first_ms", i),
            last_ms: int("last_ms", i),
            sum_ms: int("sum_ms", i),
            returns: int("returns", i),
        };
        assert!(groups.insert(key.clone(), group).is_none(), "{key:?} twice");
        mean_returns.insert(key, means.is_valid(i).then(|| means.value(i)));
    }
    (groups, mean_returns)
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The partial against the oracle; on a difference, the first groups that differ.
fn assert_partial_matches(partial: &RecordBatch, expected: &Expected, date: NaiveDate, what: &str) {
    let (groups, means) = actual_groups(partial, date);
    if groups != expected.groups {
        let mut diff = String::new();
        let keys: std::collections::BTreeSet<&Key> =
            groups.keys().chain(expected.groups.keys()).collect();
        let differing = keys
            .into_iter()
            .filter(|k| groups.get(*k) != expected.groups.get(*k));
        for key in differing.take(6) {
            writeln!(
                diff,
                "  {key:?}:\n    partial {:?}\n    oracle  {:?}",
                groups.get(key),
                expected.groups.get(key)
            )
            .unwrap();
        }
        panic!(
            "{what}: the partial of {date} differs from the oracle ({} groups against {}); \
             first differences:\n{diff}",
            groups.len(),
            expected.groups.len()
        );
    }
    for (key, expected_mean) in &expected.mean_returns {
        match (means[key], expected_mean) {
            (None, None) => {}
            (Some(actual), Some(wanted)) if close(actual, *wanted) => {}
            (actual, wanted) => {
                panic!("{what}: {date} {key:?}: mean_return_60 {actual:?}, oracle {wanted:?}")
            }
        }
    }
}

fn count(report: &serde_json::Value, name: &str) -> u64 {
    report["counts"][name].as_u64().unwrap_or(0)
}

fn assert_report_matches(report: &serde_json::Value, rows: usize, expected: &Expected, what: &str) {
    let kept: i64 = expected.groups.values().map(|g| g.rows).sum();
    assert_eq!(report["errors"], serde_json::json!([]), "{what}");
    assert_eq!(count(report, "rows_read"), rows as u64, "{what}: rows_read");
    assert_eq!(
        count(report, "parse_time.clamped"),
        expected.clamped,
        "{what}: parse_time.clamped"
    );
    assert_eq!(
        count(report, "parse_time.dropped"),
        expected.dropped,
        "{what}: parse_time.dropped"
    );
    assert_eq!(
        count(report, "aggregate.rows_in"),
        kept as u64,
        "{what}: aggregate.rows_in (the rows that reached the partial)"
    );
    assert_eq!(rows as u64, kept as u64 + expected.dropped, "{what}");
}

fn run_vizflow(pipeline: &Path, output_dir: &Path, args: &[&str]) -> Output {
    Command::new(EXE)
        .arg("run")
        .arg(pipeline)
        .arg("--output-dir")
        .arg(output_dir)
        .args(["--progress", "quiet"])
        .args(args)
        .output()
        .unwrap()
}

/// The ways every case is run; the partials and reports must not depend on them.
fn runs(case: &Case) -> Vec<Vec<&'static str>> {
    let mut runs = vec![vec!["--workers", "1"], vec!["--workers", "2"]];
    if case.dates.len() > 1 {
        runs.push(vec!["--workers", "2", "--partition", "date"]);
    }
    runs
}

/// Writes the case's dates, runs the pipeline each way of [`runs`] and checks every
/// date's partial and report against the oracle.
fn check_market(case: &Case) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let days: Vec<(NaiveDate, Vec<Row>)> = case
        .dates
        .iter()
        .enumerate()
        .map(|(i, &date)| (date, random_rows(case, date, case.seed + i as u64)))
        .collect();
    for (date, rows) in &days {
        write_input(case, &data, *date, rows);
    }
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml(case, &data, case.policy)).unwrap();
    let mut first: Option<(String, BTreeMap<String, common::Outputs>)> = None;
    for (i, args) in runs(case).into_iter().enumerate() {
        let what = format!("{} {}", case.name, args.join(" "));
        let out = dir.path().join(format!("out{i}"));
        let output = run_vizflow(&pipeline, &out, &args);
        let stderr = common::stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{what}: {stderr}");
        let dates = days.len();
        assert!(
            stderr.contains(&format!(
                "{dates} dates: {dates} written, 0 skipped, 0 failed"
            )),
            "{what}: {stderr}"
        );
        let outputs = common::outputs(&out);
        let written: Vec<&String> = outputs.keys().collect();
        let wanted: Vec<String> = days.iter().map(|(d, _)| yyyymmdd(*d)).collect();
        assert_eq!(written, wanted.iter().collect::<Vec<_>>(), "{what}");
        for (date, rows) in &days {
            let expected = oracle(case, *date, rows, case.policy);
            assert!(
                !expected.outside.is_empty(),
                "{what}: {date} has no row outside the sessions to test the policy on"
            );
            let date_outputs = &outputs[&yyyymmdd(*date)];
            let what = format!("{what}, {date}");
            assert_partial_matches(&date_outputs.partial.0, &expected, *date, &what);
            assert_report_matches(&date_outputs.report, rows.len(), &expected, &what);
        }
        match &first {
            None => first = Some((what, outputs)),
            Some((first_what, reference)) => {
                for (date, reference) in reference {
                    let this = &outputs[date];
                    assert_eq!(
                        this.partial, reference.partial,
                        "{date}: the partial of `{what}` differs from `{first_what}`"
                    );
                    assert_eq!(
                        this.report, reference.report,
                        "{date}: the report of `{what}` differs from `{first_what}`"
                    );
                }
            }
        }
    }
}

// ---- the markets ----

fn us_case(name: &'static str, stamp: Stamp, format: Option<&'static str>, policy: Policy) -> Case {
    Case {
        name,
        market_toml: "market = \"US\"",
        format,
        hours: US,
        stamp,
        file: FileKind::Feather,
        policy,
        // The Friday before the change to daylight saving time (EST, UTC-5) on Sunday
        // 2024-03-10, and the Monday after it (EDT, UTC-4).
        dates: vec![date(2024, 3, 8), date(2024, 3, 11)],
        symbols: &["AAPL", "MSFT", "SPY", "BRK.B", "TSLA"],
        bin_seconds: 900,
        seed: 1,
    }
}

#[test]
fn us_timestamp_ns_utc_across_the_dst_change() {
    check_market(&us_case("us_ns", Stamp::NanosUtc, None, Policy::Clamp));
}

#[test]
fn us_epoch_millis_across_the_dst_change() {
    check_market(&us_case(
        "us_ms",
        Stamp::EpochMillis,
        Some("epoch_millis"),
        Policy::Drop,
    ));
}

fn hk_case() -> Case {
    Case {
        name: "hk",
        market_toml: "market = \"HK\"",
        format: None,
        hours: HK,
        stamp: Stamp::Text,
        file: FileKind::Csv,
        policy: Policy::Drop,
        dates: vec![date(2024, 3, 7), date(2024, 3, 8)],
        symbols: &["00700.HK", "00005.HK", "09988.HK", "00388.HK"],
        bin_seconds: 900,
        seed: 11,
    }
}

/// HK's lunch break (12:00-13:00 exclusive) and the hours before 09:30 and after 16:00
/// are dropped under `drop`: counted in the report, absent from the partial.
#[test]
fn hk_lunch_break_and_time_strings_dropped() {
    let case = hk_case();
    // The rows of the first date include lunch-break rows, which the oracle drops.
    let rows = random_rows(&case, case.dates[0], case.seed);
    let lunch = rows
        .iter()
        .filter(|r| {
            let t = wall_clock_ms(case.stamp, &r.ts, case.dates[0], case.hours.zone);
            12 * HOUR < t && t < 13 * HOUR
        })
        .count();
    assert!(lunch > 0, "no row in the lunch break");
    check_market(&case);
}

#[test]
fn jp_wall_clock_timestamps() {
    check_market(&Case {
        name: "jp",
        market_toml: "market = \"JP\"",
        format: None,
        hours: JP,
        stamp: Stamp::MillisWallClock,
        file: FileKind::Feather,
        policy: Policy::Clamp,
        // After the close moved to 15:30 on 2024-11-05.
        dates: vec![date(2024, 11, 15), date(2024, 11, 18)],
        symbols: &["7203.T", "6758.T", "9984.T"],
        bin_seconds: 600,
        seed: 21,
    });
}

/// The README's way to run JP dates before 2024-11-05: the preset with its sessions
/// overridden, as a `[time.market]` table; HHMMSS integers left to `auto`.
#[test]
fn jp_sessions_overridden_before_the_close_moved() {
    check_market(&Case {
        name: "jp_old",
        market_toml: "[time.market]\nname = \"JP\"\n\
                      sessions = [[\"09:00\", \"11:30\"], [\"12:30\", \"15:00\"]]",
        format: None,
        hours: JP_BEFORE_2024_11_05,
        stamp: Stamp::Hhmmss,
        file: FileKind::Csv,
        policy: Policy::Drop,
        dates: vec![date(2024, 10, 31)],
        symbols: &["7203.T", "6758.T", "9984.T", "8306.T"],
        bin_seconds: 600,
        seed: 31,
    });
}

#[test]
fn kr_zoned_timestamps() {
    check_market(&Case {
        name: "kr",
        market_toml: "market = \"KR\"",
        format: None,
        hours: KR,
        stamp: Stamp::MicrosZoned("Asia/Seoul"),
        file: FileKind::Parquet,
        policy: Policy::Drop,
        dates: vec![date(2024, 5, 17)],
        symbols: &["005930.KS", "000660.KS", "035420.KS"],
        bin_seconds: 900,
        seed: 41,
    });
}

/// One UTC day, a Saturday: instants of the previous day clamp to 0, those of the next
/// day to 86,400,000, and the next midnight itself is the inclusive end of the session.
#[test]
fn crypto_one_utc_day() {
    check_market(&Case {
        name: "crypto",
        market_toml: "market = \"crypto\"",
        format: Some("epoch_micros"),
        hours: CRYPTO,
        stamp: Stamp::EpochMicros,
        file: FileKind::Feather,
        policy: Policy::Clamp,
        dates: vec![date(2024, 3, 9)],
        symbols: &["BTC-USD", "ETH-USD", "SOL-USD"],
        bin_seconds: 3600,
        seed: 51,
    });
}

/// A market of the pipeline's own, as an inline table: London time in summer (BST,
/// UTC+1), sessions with seconds, the last running past midnight into the next day.
#[test]
fn custom_market_with_a_session_past_midnight() {
    check_market(&Case {
        name: "london",
        market_toml: "market = { name = \"london_desk\", time_zone = \"Europe/London\", \
                      sessions = [[\"08:00\", \"12:00\"], [\"12:02\", \"16:30:30\"], \
                      [\"22:00\", \"25:00\"]] }",
        format: Some("epoch_seconds"),
        hours: LONDON_DESK,
        stamp: Stamp::EpochSeconds,
        file: FileKind::Parquet,
        policy: Policy::Clamp,
        dates: vec![date(2024, 6, 14)],
        symbols: &["FGBL", "FDAX", "Z", "R"],
        bin_seconds: 900,
        seed: 61,
    });
}

/// The facts the oracle takes from chrono-tz, checked against literal UTC times: the
/// opens of the test dates.
#[test]
fn the_oracle_time_zones_give_the_known_utc_opens() {
    let utc_open = |zone: Tz, date: NaiveDate, open_ms: i64| {
        let local = local_midnight(date) + chrono::Duration::milliseconds(open_ms);
        let instant = zone.from_local_datetime(&local).single().unwrap();
        instant
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let open = |hours: Hours| hours.sessions[0].0;
    let cases = [
        (US, date(2024, 3, 8), "2024-03-08 14:30"),
        (US, date(2024, 3, 11), "2024-03-11 13:30"),
        (HK, date(2024, 3, 7), "2024-03-07 01:30"),
        (JP, date(2024, 11, 15), "2024-11-15 00:00"),
        (KR, date(2024, 5, 17), "2024-05-17 00:00"),
        (CRYPTO, date(2024, 3, 9), "2024-03-09 00:00"),
        (LONDON_DESK, date(2024, 6, 14), "2024-06-14 07:00"),
    ];
    for (hours, date, utc) in cases {
        assert_eq!(
            utc_open(hours.zone, date, open(hours)),
            utc,
            "{:?} {date}",
            hours.zone
        );
    }
    // The last London session ends at 01:00 BST on the next day, 00:00 UTC.
    let end = LONDON_DESK.sessions[2].1;
    assert_eq!(
        utc_open(LONDON_DESK.zone, date(2024, 6, 14), end),
        "2024-06-15 00:00"
    );
}

// ---- out_of_session = "error" ----

/// `rows` with every time moved into the sessions (a lunch-break, pre-open or
/// post-close time becomes the open's).
fn in_session_only(case: &Case, date: NaiveDate, rows: Vec<Row>) -> Vec<Row> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    rows.into_iter()
        .map(|mut row| {
            let t = wall_clock_ms(case.stamp, &row.ts, date, case.hours.zone);
            if trading_ms(case.hours, t).1 {
                row.ts = stamp(&mut rng, case, date, case.hours.sessions[0].0).unwrap();
            }
            row
        })
        .collect()
}

/// The line of `vizflow run`'s summary for a failed date.
fn failed_line(stderr: &str, date: NaiveDate) -> String {
    let prefix = format!("  FAILED {}: ", yyyymmdd(date));
    let mut lines = stderr.lines().filter(|l| l.starts_with(&prefix));
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no FAILED line for {date}: {stderr}"));
    assert!(lines.next().is_none(), "{stderr}");
    line.to_owned()
}

/// Under `out_of_session = "error"`, a date with one row in HK's lunch break fails with
/// an error naming that row, its value and the sessions; nothing is written for it, and
/// the other date, all in session, is written and right.
#[test]
fn out_of_session_error_fails_the_date_naming_the_row() {
    let case = Case {
        name: "hk_error",
        policy: Policy::Error,
        ..hk_case()
    };
    let (bad_date, good_date) = (case.dates[0], case.dates[1]);
    let mut bad = in_session_only(&case, bad_date, random_rows(&case, bad_date, 71));
    let bad_row = 137;
    bad[bad_row].ts = Stamped::Text("12:30:15.250".into());
    let good = in_session_only(&case, good_date, random_rows(&case, good_date, 72));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_input(&case, &data, bad_date, &bad);
    write_input(&case, &data, good_date, &good);
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml(&case, &data, Policy::Error)).unwrap();
    let input = data.join(input_name(&case, bad_date));
    let message = format!(
        "  FAILED 20240307: {}: parse_time: column 'ts' (HK market): row {bad_row} (value \
         12:30:15.250) at 12:30:15.250 is outside the sessions 09:30-12:00, 13:00-16:00 \
         (Asia/Hong_Kong); use out_of_session = \"clamp\" or \"drop\"",
        input.display()
    );
    for workers in ["1", "2"] {
        let what = format!("{} --workers {workers}", case.name);
        let out = dir.path().join(format!("out{workers}"));
        let output = run_vizflow(&pipeline, &out, &["--workers", workers]);
        let stderr = common::stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains("2 dates: 1 written, 0 skipped, 1 failed"),
            "{what}: {stderr}"
        );
        assert_eq!(failed_line(&stderr, bad_date), message, "{what}");
        for name in ["20240307.parquet", "20240307.report.json"] {
            assert!(!out.join(name).exists(), "{what}: {name} was written");
        }
        let outputs = common::outputs(&out);
        assert_eq!(outputs.keys().collect::<Vec<_>>(), ["20240308"], "{what}");
        let expected = oracle(&case, good_date, &good, Policy::Error);
        assert!(expected.outside.is_empty());
        let written = &outputs["20240308"];
        assert_partial_matches(&written.partial.0, &expected, good_date, &what);
        assert_report_matches(&written.report, good.len(), &expected, &what);
    }
}

/// Several rows outside the US session, in different parts of a feather file (a
/// post-close one on the EDT date, one on the next day, pre-open ones): the date fails
/// naming the first of them, with the same message for 1 and 2 workers.
#[test]
fn out_of_session_error_names_the_first_row_whatever_the_workers() {
    let case = us_case(
        "us_error",
        Stamp::EpochMillis,
        Some("epoch_millis"),
        Policy::Error,
    );
    let bad_date = case.dates[1];
    let mut rows = in_session_only(&case, bad_date, random_rows(&case, bad_date, 81));
    let mut rng = ChaCha8Rng::seed_from_u64(82);
    // 16:00:00.001 EDT on 2024-03-11 is 20:00:00.001 UTC.
    let after_close = 1_710_187_200_001;
    assert_eq!(
        wall_clock_ms(case.stamp, &Stamped::Int(after_close), bad_date, US.zone),
        16 * HOUR + 1
    );
    let bad_rows = [
        (70, Stamped::Int(after_close)),
        (
            71,
            stamp(
                &mut rng,
                &case,
                bad_date,
                24 * HOUR + 9 * HOUR + 45 * MINUTE,
            )
            .unwrap(),
        ),
        (
            200,
            stamp(&mut rng, &case, bad_date, 9 * HOUR + 29 * MINUTE).unwrap(),
        ),
        (333, stamp(&mut rng, &case, bad_date, 4 * HOUR).unwrap()),
    ];
    for (row, value) in &bad_rows {
        rows[*row].ts = value.clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_input(&case, &data, bad_date, &rows);
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml(&case, &data, Policy::Error)).unwrap();
    let first = format!(
        "  FAILED 20240311: {}: parse_time: column 'ts' (US market): row 70 (value \
         {after_close}) at 16:00:00.001 is outside the sessions 09:30-16:00 \
         (America/New_York); use out_of_session = \"clamp\" or \"drop\"",
        data.join(input_name(&case, bad_date)).display()
    );
    let mut lines = Vec::new();
    for workers in ["1", "2"] {
        let what = format!("{} --workers {workers}", case.name);
        let out = dir.path().join(format!("out{workers}"));
        let output = run_vizflow(&pipeline, &out, &["--workers", workers]);
        let stderr = common::stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains("1 dates: 0 written, 0 skipped, 1 failed"),
            "{what}: {stderr}"
        );
        let line = failed_line(&stderr, bad_date);
        assert!(
            line.starts_with(&first),
            "{what}:\n{line}\nshould start with\n{first}"
        );
        // At most three errors, of bad rows only, the first rows of the file first.
        let named: Vec<usize> = line
            .split("): row ")
            .skip(1)
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            !named.is_empty()
                && named.len() <= 3
                && named.is_sorted()
                && named
                    .iter()
                    .all(|r| bad_rows.iter().any(|(bad, _)| bad == r)),
            "{what}: rows {named:?} in {line}"
        );
        assert!(
            common::outputs(&out).is_empty(),
            "{what}: a partial was written"
        );
        lines.push(line);
    }
    assert_eq!(lines[0], lines[1], "the message depends on the workers");
}
