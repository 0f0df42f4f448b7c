//! Deterministic synthetic market data in the alpha schema of the design seeds.
//!
//! [`generate_date`] builds one date's rows; [`generate`] writes one file per date in any
//! [`FileFormat`]. The same `seed` and date always give identical bytes, whatever else is
//! generated.
//!
//! | column | type | content |
//! |---|---|---|
//! | `ticktime` | Int64 | time as HHMMSSmmm (93000500 = 09:30:00.500), 10 ms resolution; CN sessions 09:30-11:30 and 13:00-15:00, mostly increasing |
//! | `ukey` | Int64 | symbol id `600000 + k`, `k < symbols`; Zipf-like activity |
//! | `orderSide` | Utf8 | `"B"` (filled at the ask) or `"S"` (filled at the bid) |
//! | `qty` | Float64 | multiples of 100 in 100..=5000; ~1% carry ±1e-8 float noise |
//! | `fillPrice` | Float64 | `AskPrice1` for buys, `BidPrice1` for sells |
//! | `BidPrice1` | Float64 | per-symbol random walk in ticks of 0.01, starting in 5..100 |
//! | `AskPrice1` | Float64 | `BidPrice1` plus 1-3 ticks |
//! | `alpha1` | Float64 | ~N(0, 3e-4); biases the symbol's next price move |
//! | `alpha2` | Float64 | ~N(0, 3e-4), correlated 0.6 with `alpha1` |
//!
//! Irregularities that pipelines must handle: ~25% of rows share the previous row's time
//! (ties), ~2% have their time swapped with a row 1-4 positions later (disorder), and ~0.1%
//! fall outside the sessions (09:15-09:30, lunch, 15:00-15:05). There are no nulls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{Datelike, NaiveDate};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::io::{FileFormat, IoError, IpcCompression, write_batches};

/// Rows per record batch or row group in generated files: the parts a reader sees.
pub const GEN_BATCH_ROWS: usize = 65_536;
/// The first symbol id; symbol `k` is `FIRST_UKEY + k`.
pub const FIRST_UKEY: i64 = 600_000;

const MS_PER_HOUR: i64 = 3_600_000;
const MS_PER_MINUTE: i64 = 60_000;
const MORNING_OPEN_MS: i64 = 9 * MS_PER_HOUR + 30 * MS_PER_MINUTE;
const AFTERNOON_OPEN_MS: i64 = 13 * MS_PER_HOUR;
const SESSION_MS: i64 = 2 * MS_PER_HOUR;
const TIME_RESOLUTION_MS: i64 = 10;
const ALPHA_SD: f64 = 3e-4;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenSpec {
    /// Rows per date.
    pub rows: usize,
    /// Number of distinct symbols (at least 1 is used).
    pub symbols: usize,
    /// Random seed; with the date it determines every value.
    pub seed: u64,
    /// Output file format.
    pub format: FileFormat,
    /// Buffer compression for IPC formats.
    pub compression: Option<IpcCompression>,
    /// File name prefix, e.g. `"alpha_"`.
    pub prefix: String,
}

/// The schema of generated data (all fields nullable, as CSV schema inference makes them).
pub fn alpha_schema() -> SchemaRef {
    let field = |name, data_type| Field::new(name, data_type, true);
    Arc::new(Schema::new(vec![
        field("ticktime", DataType::Int64),
        field("ukey", DataType::Int64),
        field("orderSide", DataType::Utf8),
        field("qty", DataType::Float64),
        field("fillPrice", DataType::Float64),
        field("BidPrice1", DataType::Float64),
        field("AskPrice1", DataType::Float64),
        field("alpha1", DataType::Float64),
        field("alpha2", DataType::Float64),
    ]))
}

/// One date's rows as a single batch in [`alpha_schema`]; deterministic in `(spec.seed,
/// spec.rows, spec.symbols, date)`.
pub fn generate_date(spec: &GenSpec, date: NaiveDate) -> RecordBatch {
    let mut rng = date_rng(spec.seed, date);
    let ticktime = trade_times(&mut rng, spec.rows);
    let mut market = Market::new(&mut rng, spec.symbols.max(1));
    let mut trades = Trades::with_capacity(spec.rows);
    for _ in 0..spec.rows {
        market.trade(&mut rng, &mut trades);
    }
    trades.into_batch(ticktime)
}

/// `rows` times as HHMMSSmmm: evenly spread over the sessions in 10 ms slots, ~25% repeating
/// the previous time (an order filled at several levels), ~0.1% out of session, and ~2%
/// swapped with a time 1-4 rows later.
fn trade_times(rng: &mut ChaCha8Rng, rows: usize) -> Vec<i64> {
    let slots = (2 * SESSION_MS / TIME_RESOLUTION_MS) as f64;
    let mut session_ms = 0;
    let mut times: Vec<i64> = (0..rows)
        .map(|i| {
            if i == 0 || rng.random::<f64>() >= 0.25 {
                let slot = ((i as f64 + rng.random::<f64>()) * slots / rows as f64) as i64;
                session_ms = slot * TIME_RESOLUTION_MS;
            }
            match rng.random::<f64>() < 0.001 {
                true => out_of_session_ms(rng),
                false => session_clock_ms(session_ms),
            }
        })
        .collect();
    for i in 0..rows {
        if rng.random::<f64>() < 0.02 {
            let j = i + rng.random_range(1..=4);
            if j < rows {
                times.swap(i, j);
            }
        }
    }
    times.into_iter().map(hhmmssmmm).collect()
}

/// Per-symbol state: activity weight, bid price in ticks of 0.01, and the last alpha1.
struct Market {
    cumulative_weight: Vec<f64>,
    bid_ticks: Vec<i64>,
    last_alpha: Vec<f64>,
}

impl Market {
    fn new(rng: &mut ChaCha8Rng, symbols: usize) -> Market {
        Market {
            cumulative_weight: symbol_weights(rng, symbols),
            bid_ticks: (0..symbols)
                .map(|_| rng.random_range(500..10_000))
                .collect(),
            last_alpha: vec![0.0; symbols],
        }
    }

    /// Draws one trade: its symbol, price move, quote, side, quantity and alphas.
    fn trade(&mut self, rng: &mut ChaCha8Rng, trades: &mut Trades) {
        let total_weight = self.cumulative_weight[self.cumulative_weight.len() - 1];
        let u = rng.random::<f64>() * total_weight;
        let k = self.cumulative_weight.partition_point(|&c| c <= u);
        let k = k.min(self.bid_ticks.len() - 1);
        trades.ukey.push(FIRST_UKEY + k as i64);

        // The symbol's previous alpha1 tilts this move: alpha1 predicts the next move.
        if rng.random::<f64>() < 0.3 {
            let up = 0.5 + 0.15 * (self.last_alpha[k] / ALPHA_SD).clamp(-1.0, 1.0);
            let step = if rng.random::<f64>() < up { 1 } else { -1 };
            self.bid_ticks[k] = (self.bid_ticks[k] + step).max(1);
        }
        let (z1, z2) = standard_normal_pair(rng);
        self.last_alpha[k] = ALPHA_SD * z1;
        trades.alpha1.push(ALPHA_SD * z1);
        trades.alpha2.push(ALPHA_SD * (0.6 * z1 + 0.8 * z2));

        // Dividing integer ticks by 100 gives the double nearest the decimal price.
        let bid = self.bid_ticks[k] as f64 / 100.0;
        let ask = (self.bid_ticks[k] + rng.random_range(1..=3)) as f64 / 100.0;
        let buy = rng.random::<bool>();
        trades.is_buy.push(buy);
        trades.bid.push(bid);
        trades.ask.push(ask);
        trades.fill.push(if buy { ask } else { bid });

        let mut qty = 100.0 * rng.random_range(1..=50) as f64;
        if rng.random::<f64>() < 0.01 {
            qty += if rng.random::<bool>() { 1e-8 } else { -1e-8 };
        }
        trades.qty.push(qty);
    }
}

/// The generated columns but `ticktime`, filled one trade at a time.
struct Trades {
    ukey: Vec<i64>,
    is_buy: Vec<bool>,
    qty: Vec<f64>,
    fill: Vec<f64>,
    bid: Vec<f64>,
    ask: Vec<f64>,
    alpha1: Vec<f64>,
    alpha2: Vec<f64>,
}

impl Trades {
    fn with_capacity(rows: usize) -> Trades {
        Trades {
            ukey: Vec::with_capacity(rows),
            is_buy: Vec::with_capacity(rows),
            qty: Vec::with_capacity(rows),
            fill: Vec::with_capacity(rows),
            bid: Vec::with_capacity(rows),
            ask: Vec::with_capacity(rows),
            alpha1: Vec::with_capacity(rows),
            alpha2: Vec::with_capacity(rows),
        }
    }

    fn into_batch(self, ticktime: Vec<i64>) -> RecordBatch {
        let side = self.is_buy.iter().map(|&buy| if buy { "B" } else { "S" });
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ticktime)),
            Arc::new(Int64Array::from(self.ukey)),
            Arc::new(StringArray::from_iter_values(side)),
            Arc::new(Float64Array::from(self.qty)),
            Arc::new(Float64Array::from(self.fill)),
            Arc::new(Float64Array::from(self.bid)),
            Arc::new(Float64Array::from(self.ask)),
            Arc::new(Float64Array::from(self.alpha1)),
            Arc::new(Float64Array::from(self.alpha2)),
        ];
        RecordBatch::try_new(alpha_schema(), columns).expect("columns match alpha_schema")
    }
}

/// Writes `{dir}/{prefix}{YYYYMMDD}.{ext}` for each date (ext: feather, arrows, parquet, csv)
/// atomically, in parts of [`GEN_BATCH_ROWS`] rows, creating `dir` if needed; returns the
/// paths.
pub fn generate(spec: &GenSpec, dir: &Path, dates: &[NaiveDate]) -> Result<Vec<PathBuf>, IoError> {
    std::fs::create_dir_all(dir).map_err(|e| IoError::Write {
        path: dir.into(),
        message: e.to_string(),
    })?;
    let extension = spec.format.extension();
    dates
        .iter()
        .map(|&date| {
            let name = format!("{}{}.{extension}", spec.prefix, date.format("%Y%m%d"));
            let path = dir.join(name);
            let batch = generate_date(spec, date);
            let parts: Vec<RecordBatch> = (0..batch.num_rows())
                .step_by(GEN_BATCH_ROWS)
                .map(|start| batch.slice(start, GEN_BATCH_ROWS.min(batch.num_rows() - start)))
                .collect();
            write_batches(&path, spec.format, batch.schema(), &parts, spec.compression)?;
            Ok(path)
        })
        .collect()
}

/// A generator seeded from both the seed and the date, so dates are independent.
fn date_rng(seed: u64, date: NaiveDate) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..12].copy_from_slice(&date.num_days_from_ce().to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Cumulative activity weights by symbol: the symbol at rank `r` of a seeded shuffle gets
/// weight `1 / (r + 1)^0.8`.
fn symbol_weights(rng: &mut ChaCha8Rng, symbols: usize) -> Vec<f64> {
    let mut rank: Vec<usize> = (0..symbols).collect();
    for i in (1..symbols).rev() {
        rank.swap(i, rng.random_range(0..=i));
    }
    let mut total = 0.0;
    rank.iter()
        .map(|&r| {
            total += 1.0 / ((r + 1) as f64).powf(0.8);
            total
        })
        .collect()
}

/// Two independent N(0, 1) draws (Box-Muller).
fn standard_normal_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
    let (sin, cos) = (std::f64::consts::TAU * rng.random::<f64>()).sin_cos();
    (radius * cos, radius * sin)
}

/// Milliseconds of the day for an offset into the trading sessions (morning, then afternoon).
fn session_clock_ms(session_ms: i64) -> i64 {
    match session_ms < SESSION_MS {
        true => MORNING_OPEN_MS + session_ms,
        false => AFTERNOON_OPEN_MS + session_ms - SESSION_MS,
    }
}

/// A time strictly inside the pre-open auction, the lunch break or the 5 minutes after close.
fn out_of_session_ms(rng: &mut ChaCha8Rng) -> i64 {
    let (start, end) = match rng.random_range(0..3) {
        0 => (9 * MS_PER_HOUR + 15 * MS_PER_MINUTE, MORNING_OPEN_MS),
        1 => (MORNING_OPEN_MS + SESSION_MS, AFTERNOON_OPEN_MS),
        _ => (
            AFTERNOON_OPEN_MS + SESSION_MS,
            AFTERNOON_OPEN_MS + SESSION_MS + 5 * MS_PER_MINUTE,
        ),
    };
    let slots = (end - start) / TIME_RESOLUTION_MS;
    start + rng.random_range(1..slots) * TIME_RESOLUTION_MS
}

/// Milliseconds of the day as the integer HHMMSSmmm.
fn hhmmssmmm(ms_of_day: i64) -> i64 {
    let (hours, minutes) = (ms_of_day / MS_PER_HOUR, ms_of_day / MS_PER_MINUTE % 60);
    let (seconds, millis) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    ((hours * 100 + minutes) * 100 + seconds) * 1000 + millis
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;

    fn spec(rows: usize, seed: u64) -> GenSpec {
        GenSpec {
            rows,
            symbols: 100,
            seed,
            format: FileFormat::IpcFile,
            compression: None,
            prefix: "alpha_".into(),
        }
    }

    fn date(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 1, day).unwrap()
    }

    fn f64s<'a>(batch: &'a RecordBatch, name: &str) -> &'a [f64] {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>()
            .values()
    }

    fn i64s<'a>(batch: &'a RecordBatch, name: &str) -> &'a [i64] {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
    }

    #[test]
    fn clock_format() {
        assert_eq!(hhmmssmmm(MORNING_OPEN_MS + 500), 93000500);
        assert_eq!(hhmmssmmm(session_clock_ms(SESSION_MS)), 130000000);
        assert_eq!(
            hhmmssmmm(14 * MS_PER_HOUR + 59 * MS_PER_MINUTE + 59_990),
            145959990
        );
    }

    #[test]
    fn same_seed_and_date_give_identical_files() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for format in [FileFormat::IpcFile, FileFormat::Parquet, FileFormat::Csv] {
            let spec = GenSpec {
                format,
                ..spec(2000, 1)
            };
            let only = generate(&spec, a.path(), &[date(3)]).unwrap();
            let with_others = generate(&spec, b.path(), &[date(2), date(3)]).unwrap();
            let bytes = |p: &PathBuf| std::fs::read(p).unwrap();
            assert_eq!(bytes(&only[0]), bytes(&with_others[1]), "{format}");
            assert!(only[0].ends_with(format!("alpha_20240103.{}", format.extension())));
        }
    }

    #[test]
    fn seed_and_date_change_the_data() {
        let base = generate_date(&spec(1000, 1), date(2));
        assert_eq!(base, generate_date(&spec(1000, 1), date(2)));
        assert_ne!(base, generate_date(&spec(1000, 2), date(2)));
        assert_ne!(base, generate_date(&spec(1000, 1), date(3)));
    }

    #[test]
    fn distribution_has_the_irregularities_pipelines_must_handle() {
        let rows = 200_000;
        let batch = generate_date(&spec(rows, 5), date(2));
        let time = i64s(&batch, "ticktime");
        let fraction = |count: usize| count as f64 / rows as f64;
        let in_session =
            |t: &i64| (93000000..113000000).contains(t) || (130000000..150000000).contains(t);
        let out_of_session = fraction(time.iter().filter(|t| !in_session(t)).count());
        let ties = fraction(time.windows(2).filter(|w| w[0] == w[1]).count());
        let disorder = fraction(time.windows(2).filter(|w| w[0] > w[1]).count());
        assert!(
            (0.0005..0.002).contains(&out_of_session),
            "{out_of_session}"
        );
        assert!(
            time.iter()
                .all(|t| (91500000..150500000).contains(t) && t % 10 == 0)
        );
        assert!((0.2..0.4).contains(&ties), "{ties}");
        assert!((0.01..0.05).contains(&disorder), "{disorder}");

        let qty = f64s(&batch, "qty");
        let noisy = fraction(qty.iter().filter(|q| q.fract() != 0.0).count());
        assert!((0.007..0.013).contains(&noisy), "{noisy}");
        assert!(
            qty.iter()
                .all(|q| (q / 100.0).round() * 100.0 - q < 1e-7 && (99.0..5001.0).contains(q))
        );

        let (bid, ask, fill) = (
            f64s(&batch, "BidPrice1"),
            f64s(&batch, "AskPrice1"),
            f64s(&batch, "fillPrice"),
        );
        let side = batch
            .column_by_name("orderSide")
            .unwrap()
            .as_string::<i32>();
        for i in 0..rows {
            let spread_ticks = ((ask[i] - bid[i]) * 100.0).round();
            assert!((1.0..=3.0).contains(&spread_ticks) && bid[i] > 0.0);
            assert_eq!(fill[i], if side.value(i) == "B" { ask[i] } else { bid[i] });
        }
        let alpha = f64s(&batch, "alpha1");
        let sd = (alpha.iter().map(|a| a * a).sum::<f64>() / rows as f64).sqrt();
        assert!((sd / ALPHA_SD - 1.0).abs() < 0.02, "{sd}");
    }

    #[test]
    fn activity_is_skewed_and_alpha1_predicts_the_next_move() {
        let batch = generate_date(&spec(200_000, 9), date(2));
        let (ukey, bid, alpha) = (
            i64s(&batch, "ukey"),
            f64s(&batch, "BidPrice1"),
            f64s(&batch, "alpha1"),
        );
        let mut counts = vec![0usize; 100];
        ukey.iter()
            .for_each(|&u| counts[(u - FIRST_UKEY) as usize] += 1);
        counts.sort_unstable();
        assert!(counts[0] > 0 && counts[99] > 10 * counts[0], "{counts:?}");

        // Per symbol, sign(alpha1) against the next bid change.
        let mut last: Vec<Option<(f64, f64)>> = vec![None; 100];
        let (mut agree, mut moves) = (0i64, 0i64);
        for i in 0..ukey.len() {
            let k = (ukey[i] - FIRST_UKEY) as usize;
            if let Some((previous_alpha, previous_bid)) = last[k] {
                let change = bid[i] - previous_bid;
                if change != 0.0 {
                    moves += 1;
                    agree += i64::from(change.signum() == previous_alpha.signum());
                }
            }
            last[k] = Some((alpha[i], bid[i]));
        }
        let hit_rate = agree as f64 / moves as f64;
        assert!((0.55..0.7).contains(&hit_rate), "{hit_rate}");
    }
}
