//! The whole markout pipeline (derive, parse_time, forward_return, bin, aggregate)
//! against a plain sequential oracle written from SEMANTICS.md, on seeded random days
//! with ties, disorder, nulls, NaNs and out-of-session rows; for 1, 2 and 4 workers,
//! with serialized exchange, and with rows pushed in shuffled batches of random sizes.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int64Type};
use chrono::NaiveDate;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vizflow::config::Pipeline;
use vizflow::engine::{Engine, Feeding, Workers};
use vizflow::operators::batch::Partition;

mod common;

/// The sections every test pipeline shares: where (unused) files would be, the
/// column mapping and the `qty` cast.
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
"#
    };
}

const PIPELINE: &str = concat!(
    common_sections!(),
    r#"
[derive]
mid = "(AskPrice1 + BidPrice1) / 2"

[time]
market = "CN"
format = "hhmmssmmm"

[forward_return]
price = "mid"
horizons = [60, 300, 600, "close"]

[bin]
alpha1 = 1e-4

[aggregate]
group_by = ["alpha1_bin", "orderSide"]

[aggregate.metrics]
count = "count()"
total_qty = "sum(qty)"
mean_return_60 = "mean(return_60)"
mean_return_300 = "mean(return_300)"
mean_return_600 = "mean(return_600)"
mean_return_close = "mean(return_close)"
"#
);

/// A random day: 20 symbols of skewed activity, times at 10 ms resolution over the
/// whole day (so ties, lunch-break and out-of-hours rows), in random order.
fn random_day(seed: u64, rows: usize) -> RecordBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ticktime = Vec::with_capacity(rows);
    let mut ukey = Vec::with_capacity(rows);
    let mut side = Vec::with_capacity(rows);
    let mut qty = Vec::with_capacity(rows);
    let (mut bid, mut ask, mut alpha) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rows {
        // 8% of rows outside 09:30-11:30 and 13:00-15:00.
        let ms_of_day: i64 = if rng.random_bool(0.08) {
            rng.random_range(8 * 3_600_000..16 * 3_600_000)
        } else if rng.random_bool(0.5) {
            rng.random_range(34_200_000..=41_400_000)
        } else {
            rng.random_range(46_800_000..=54_000_000)
        } / 2_000
            * 2_000; // 2-second resolution: many ties in time
        let (h, m, s, ms) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        );
        ticktime.push(h * 10_000_000 + m * 100_000 + s * 1000 + ms);
        let symbol = (rng.random_range(0.0f64..1.0).powi(3) * 20.0) as i64;
        ukey.push(600_000 + symbol);
        side.push(match rng.random_range(0..100) {
            0 => None,
            1 => Some("X"),
            k if k % 2 == 0 => Some("B"),
            _ => Some("S"),
        });
        let noise = if rng.random_bool(0.1) {
            rng.random_range(-1e-8..1e-8)
        } else {
            0.0
        };
        qty.push(rng.random_range(1..20) as f64 * 100.0 + noise);
        let mid = 10.0 + symbol as f64 + rng.random_range(-0.5..0.5);
        bid.push(if rng.random_bool(0.02) {
            None
        } else {
            Some(mid - 0.01)
        });
        ask.push(if rng.random_bool(0.01) {
            Some(f64::NAN)
        } else {
            Some(mid + 0.01)
        });
        alpha.push(match rng.random_range(0..100) {
            0..=2 => None,
            3 => Some(f64::NAN),
            // Multiples of half a bin width land on rounding ties.
            4..=10 => Some(rng.random_range(-10..10) as f64 * 0.5e-4),
            _ => Some(rng.random_range(-1e-3..1e-3)),
        });
    }
    RecordBatch::try_from_iter(vec![
        ("ticktime", Arc::new(Int64Array::from(ticktime)) as ArrayRef),
        ("ukey", Arc::new(Int64Array::from(ukey))),
        ("orderSide", Arc::new(StringArray::from(side))),
        ("qty", Arc::new(Float64Array::from(qty))),
        ("BidPrice1", Arc::new(Float64Array::from(bid))),
        ("AskPrice1", Arc::new(Float64Array::from(ask))),
        ("alpha1", Arc::new(Float64Array::from(alpha))),
    ])
    .unwrap()
}

type Key = (Option<i64>, Option<String>);

#[derive(Debug, Default, Clone)]
struct OracleGroup {
    count: i64,
    total_qty: i64,
    returns: [(f64, i64); 4],
}

/// The whole pipeline, row by row, straight from SEMANTICS.md.
fn oracle(day: &RecordBatch) -> BTreeMap<Key, OracleGroup> {
    oracle_cut_at(day, 14_400_000)
}

/// The pipeline on the date cut at `w` (SEMANTICS.md, *Streaming*): the rows with
/// `elapsed_ms <= w`, with `w` as the day's end (a return whose target is past it is
/// null).
fn oracle_cut_at(day: &RecordBatch, w: i64) -> BTreeMap<Key, OracleGroup> {
    let n = day.num_rows();
    let col = |name: &str| day.column_by_name(name).unwrap().clone();
    let ticktime = col("ticktime");
    let ticktime = ticktime.as_primitive::<Int64Type>();
    let ukey = col("ukey");
    let ukey = ukey.as_primitive::<Int64Type>();
    let side = col("orderSide");
    let side = side.as_string::<i32>();
    let qty = col("qty");
    let qty = qty.as_primitive::<Float64Type>();
    let (bid, ask, alpha) = (col("BidPrice1"), col("AskPrice1"), col("alpha1"));
    let (bid, ask, alpha) = (
        bid.as_primitive::<Float64Type>(),
        ask.as_primitive::<Float64Type>(),
        alpha.as_primitive::<Float64Type>(),
    );
    let get = |a: &arrow::array::Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let elapsed: Vec<i64> = (0..n)
        .map(|i| common::oracle_elapsed_ms(ticktime.value(i)))
        .collect();
    let mid: Vec<Option<f64>> = (0..n)
        .map(|i| Some((get(ask, i)? + get(bid, i)?) / 2.0))
        .collect();
    let mut groups: BTreeMap<Key, OracleGroup> = BTreeMap::new();
    for i in (0..n).filter(|i| elapsed[*i] <= w) {
        let mut returns = [None; 4];
        // The close (SEMANTICS.md, *Cross-date returns*): the symbol's last row of the
        // date, the one at or before the day's end, `w` on the date cut at `w`.
        for (h, horizon) in [Some(60i64), Some(300), Some(600), None].iter().enumerate() {
            let target = horizon.map_or(w, |horizon| elapsed[i] + 1000 * horizon);
            if target > w {
                continue;
            }
            // The last row of the symbol with elapsed <= target, in (elapsed, row_id) order.
            let future = (0..n)
                .filter(|j| ukey.value(*j) == ukey.value(i) && elapsed[*j] <= target)
                .max_by_key(|j| (elapsed[*j], *j))
                .unwrap();
            returns[h] = match (mid[future], mid[i]) {
                (Some(f), Some(c)) => Some(f / c - 1.0),
                _ => None,
            };
        }
        let bin = get(alpha, i)
            .filter(|x| x.is_finite())
            .map(|x| (x / 1e-4).round() as i64);
        let key = (bin, side.is_valid(i).then(|| side.value(i).to_owned()));
        let group = groups.entry(key).or_default();
        group.count += 1;
        group.total_qty += qty.value(i).round() as i64;
        for (h, r) in returns.iter().enumerate() {
            if let Some(r) = r.filter(|r| r.is_finite()) {
                group.returns[h].0 += r;
                group.returns[h].1 += 1;
            }
        }
    }
    groups
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-15
}

fn assert_matches_oracle(partial: &RecordBatch, expected: &BTreeMap<Key, OracleGroup>) {
    assert_eq!(partial.num_rows(), expected.len(), "number of groups");
    let col = |name: &str| {
        partial
            .column_by_name(name)
            .unwrap_or_else(|| panic!("partial lacks {name}"))
            .clone()
    };
    let bins = col("alpha1_bin");
    let sides = col("orderSide");
    let (bins, sides) = (bins.as_primitive::<Int64Type>(), sides.as_string::<i32>());
    let count = col("count");
    let total_qty = col("total_qty");
    let means: Vec<ArrayRef> = [
        "mean_return_60",
        "mean_return_300",
        "mean_return_600",
        "mean_return_close",
    ]
    .iter()
    .map(|c| col(c))
    .collect();
    let mut actual = BTreeMap::new();
    for i in 0..partial.num_rows() {
        let key: Key = (
            bins.is_valid(i).then(|| bins.value(i)),
            sides.is_valid(i).then(|| sides.value(i).to_owned()),
        );
        actual.insert(key, i);
    }
    for (key, group) in expected {
        let i = *actual
            .get(key)
            .unwrap_or_else(|| panic!("group {key:?} missing"));
        assert_eq!(
            count.as_primitive::<Int64Type>().value(i),
            group.count,
            "count of {key:?}"
        );
        assert_eq!(
            total_qty.as_primitive::<Int64Type>().value(i),
            group.total_qty,
            "total_qty of {key:?}"
        );
        for (h, (sum, n)) in group.returns.iter().enumerate() {
            let mean = means[h].as_primitive::<Float64Type>();
            if *n == 0 {
                assert!(mean.is_null(i), "mean {h} of {key:?} should be null");
            } else {
                let expected_mean = sum / *n as f64;
                assert!(
                    close(mean.value(i), expected_mean),
                    "mean {h} of {key:?}: {} vs {expected_mean}",
                    mean.value(i)
                );
            }
        }
    }
}

/// Pushes the days through an engine in batches of random sizes, in shuffled order
/// within each date (rows keep their `row_id`), and returns each date's partial.
fn run_engine(
    days: &[(NaiveDate, RecordBatch)],
    config: timely::Config,
    partition: Partition,
    seed: u64,
) -> Vec<RecordBatch> {
    let pipeline = Pipeline::from_toml(PIPELINE).unwrap();
    let bound = pipeline.bind(&days[0].1.schema()).unwrap();
    let mut engine =
        Engine::launch(bound, Workers::Local(config), partition, Feeding::Shared).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut partials = Vec::new();
    for (date, day) in days {
        engine.begin_date(*date).unwrap();
        let mut order: Vec<u32> = (0..day.num_rows() as u32).collect();
        order.shuffle(&mut rng);
        let mut start = 0;
        while start < order.len() {
            let size = rng.random_range(1..700).min(order.len() - start);
            let batch = common::rows_with_ids(day, &order[start..start + size]);
            engine.push(batch).unwrap();
            start += size;
        }
        while let Some(result) = engine.next_result().unwrap() {
            partials.push(result.partial.unwrap());
        }
    }
    for result in engine.finish().unwrap() {
        assert!(
            result.report.errors.is_empty(),
            "{:?}",
            result.report.errors
        );
        partials.push(result.partial.unwrap());
    }
    partials
}

fn days() -> Vec<(NaiveDate, RecordBatch)> {
    vec![
        (
            NaiveDate::from_ymd_opt(2024, 1, 2).unwrap(),
            random_day(1, 3_000),
        ),
        (
            NaiveDate::from_ymd_opt(2024, 1, 3).unwrap(),
            random_day(2, 2_000),
        ),
    ]
}

#[test]
fn one_worker_matches_oracle() {
    let days = days();
    let partials = run_engine(&days, timely::Config::thread(), Partition::Symbol, 1);
    assert_eq!(partials.len(), 2);
    for ((_, day), partial) in days.iter().zip(&partials) {
        assert_matches_oracle(partial, &oracle(day));
    }
}

#[test]
fn results_do_not_depend_on_workers_batches_or_serialization() {
    let days = days();
    let reference = run_engine(&days, timely::Config::thread(), Partition::Symbol, 1);
    for ((_, day), partial) in days.iter().zip(&reference) {
        assert_matches_oracle(partial, &oracle(day));
    }
    let serialized = |workers| timely::Config {
        communication: timely::CommunicationConfig::ProcessBinary(workers),
        worker: Default::default(),
    };
    let configs = [
        ("2 workers", common::process(2), Partition::Symbol),
        ("4 workers", common::process(4), Partition::Symbol),
        ("2 workers, serialized", serialized(2), Partition::Symbol),
        ("2 workers by date", common::process(2), Partition::Date),
        (
            "4 workers by date, serialized",
            serialized(4),
            Partition::Date,
        ),
    ];
    for (seed, (name, config, partition)) in configs.into_iter().enumerate() {
        let partials = run_engine(&days, config, partition, 10 + seed as u64);
        // Exact sums make every partial bit-identical, not merely close.
        assert_eq!(partials, reference, "{name}");
    }
}

/// Every aggregate function and the `drop` policy, against the oracle: group by side
/// (with nulls and other values) and the 60 s return bin.
const METRICS_PIPELINE: &str = concat!(
    common_sections!(),
    r#"
[derive]
mid = "(AskPrice1 + BidPrice1) / 2"
big = "qty >= 1000"

[time]
market = "CN"
out_of_session = "drop"

[forward_return]
price = "mid"
horizons = [60]

[bin]
return_60 = 1e-3

[aggregate]
group_by = ["orderSide", "return_60_bin"]

[aggregate.metrics]
rows = "count()"
alphas = "count(alpha1)"
min_alpha = "min(alpha1)"
max_alpha = "max(alpha1)"
qty = "sum(qty)"
min_qty = "min(qty)"
max_qty = "max(qty)"
big = "sum(big)"
alpha_per_lot = "sum(alpha1) / (count(qty) - count())"
mean_alpha_bp = "mean(alpha1) * 10000"
"#
);

#[derive(Debug, Default)]
struct MetricsGroup {
    rows: i64,
    alphas: i64,
    min_alpha: Option<f64>,
    max_alpha: Option<f64>,
    alpha_sum: f64,
    qty: i64,
    min_qty: Option<i64>,
    max_qty: Option<i64>,
    big: i64,
}

fn metrics_oracle(day: &RecordBatch) -> BTreeMap<Key, MetricsGroup> {
    let n = day.num_rows();
    let col = |name: &str| day.column_by_name(name).unwrap().clone();
    let (ticktime, ukey, side, qty) = (col("ticktime"), col("ukey"), col("orderSide"), col("qty"));
    let (ticktime, ukey, side, qty) = (
        ticktime.as_primitive::<Int64Type>(),
        ukey.as_primitive::<Int64Type>(),
        side.as_string::<i32>(),
        qty.as_primitive::<Float64Type>(),
    );
    let (bid, ask, alpha) = (col("BidPrice1"), col("AskPrice1"), col("alpha1"));
    let (bid, ask, alpha) = (
        bid.as_primitive::<Float64Type>(),
        ask.as_primitive::<Float64Type>(),
        alpha.as_primitive::<Float64Type>(),
    );
    let get = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    // drop: rows outside 09:30-11:30 and 13:00-15:00 disappear before anything else.
    let ms_of_day = |t: i64| t / 10_000_000 * 3_600_000 + t / 100_000 % 100 * 60_000 + t % 100_000;
    let kept: Vec<usize> = (0..n)
        .filter(|i| {
            let t = ms_of_day(ticktime.value(*i));
            (34_200_000..=41_400_000).contains(&t) || (46_800_000..=54_000_000).contains(&t)
        })
        .collect();
    let elapsed = |i: usize| common::oracle_elapsed_ms(ticktime.value(i));
    let mid = |i: usize| Some((get(ask, i)? + get(bid, i)?) / 2.0);
    let mut groups: BTreeMap<Key, MetricsGroup> = BTreeMap::new();
    for &i in &kept {
        let target = elapsed(i) + 60_000;
        let ret = (target <= 14_400_000)
            .then(|| {
                let future = kept
                    .iter()
                    .copied()
                    .filter(|j| ukey.value(*j) == ukey.value(i) && elapsed(*j) <= target)
                    .max_by_key(|j| (elapsed(*j), *j))
                    .unwrap();
                Some(mid(future)? / mid(i)? - 1.0)
            })
            .flatten();
        let bin = ret
            .filter(|r| r.is_finite())
            .map(|r| (r / 1e-3).round() as i64);
        let group = groups
            .entry((bin, side.is_valid(i).then(|| side.value(i).to_owned())))
            .or_default();
        group.rows += 1;
        if let Some(a) = get(alpha, i).filter(|a| a.is_finite()) {
            group.alphas += 1;
            group.alpha_sum += a;
            group.min_alpha = Some(group.min_alpha.map_or(a, |m| m.min(a)));
            group.max_alpha = Some(group.max_alpha.map_or(a, |m| m.max(a)));
        }
        let q = qty.value(i).round() as i64;
        group.qty += q;
        group.min_qty = Some(group.min_qty.map_or(q, |m| m.min(q)));
        group.max_qty = Some(group.max_qty.map_or(q, |m| m.max(q)));
        group.big += i64::from(q >= 1000);
    }
    groups
}

#[test]
fn every_aggregate_function_and_the_drop_policy_match_the_oracle() {
    let days = days();
    let pipeline = Pipeline::from_toml(METRICS_PIPELINE).unwrap();
    for config in [timely::Config::thread(), common::process(2)] {
        let mut engine =
            Engine::start_with(pipeline.bind(&days[0].1.schema()).unwrap(), config).unwrap();
        for (date, day) in &days {
            engine.begin_date(*date).unwrap();
            for offset in (0..day.num_rows()).step_by(1000) {
                engine
                    .push(day.slice(offset, 1000.min(day.num_rows() - offset)))
                    .unwrap();
            }
        }
        let results = engine.finish().unwrap();
        for ((_, day), result) in days.iter().zip(results) {
            let expected = metrics_oracle(day);
            let dropped = result.report.count("parse_time.dropped");
            assert_eq!(
                dropped as usize,
                day.num_rows() - expected.values().map(|g| g.rows as usize).sum::<usize>()
            );
            let partial = result.partial.unwrap();
            if partial.num_rows() != expected.len() {
                eprintln!(
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&[partial.slice(0, 20)]).unwrap()
                );
                eprintln!(
                    "{:?}",
                    expected
                        .iter()
                        .take(20)
                        .map(|(k, g)| (k, g.rows))
                        .collect::<Vec<_>>()
                );
            }
            assert_eq!(partial.num_rows(), expected.len());
            let col = |name: &str| partial.column_by_name(name).unwrap().clone();
            let (sides, bins) = (col("orderSide"), col("return_60_bin"));
            let (sides, bins) = (sides.as_string::<i32>(), bins.as_primitive::<Int64Type>());
            let int = |name: &str, i: usize| {
                let c = col(name);
                let c = c.as_primitive::<Int64Type>();
                c.is_valid(i).then(|| c.value(i))
            };
            let float = |name: &str, i: usize| {
                let c = col(name);
                let c = c.as_primitive::<Float64Type>();
                c.is_valid(i).then(|| c.value(i))
            };
            for i in 0..partial.num_rows() {
                let key: Key = (
                    bins.is_valid(i).then(|| bins.value(i)),
                    sides.is_valid(i).then(|| sides.value(i).to_owned()),
                );
                let g = &expected[&key];
                assert_eq!(int("rows", i), Some(g.rows), "{key:?}");
                assert_eq!(int("alphas", i), Some(g.alphas), "{key:?}");
                assert_eq!(float("min_alpha", i), g.min_alpha, "{key:?}");
                assert_eq!(float("max_alpha", i), g.max_alpha, "{key:?}");
                assert_eq!(int("qty", i), Some(g.qty), "{key:?}");
                assert_eq!(int("min_qty", i), g.min_qty, "{key:?}");
                assert_eq!(int("max_qty", i), g.max_qty, "{key:?}");
                assert_eq!(int("big", i), Some(g.big), "{key:?}");
                // count(qty) - count() is 0 (qty has no nulls): division by zero is null.
                assert_eq!(float("alpha_per_lot", i), None, "{key:?}");
                match float("mean_alpha_bp", i) {
                    None => assert_eq!(g.alphas, 0, "{key:?}"),
                    Some(mean) => assert!(
                        close(mean, g.alpha_sum / g.alphas as f64 * 10000.0),
                        "{key:?}: {mean}"
                    ),
                }
            }
        }
    }
}

/// Provisional results (`[stream] emit_every`) against the oracle: a day in event order
/// pushed in random batch sizes with 1 and 3 workers; each provisional result is the
/// oracle's date cut at its watermark, one every 20 minutes from the first row on, then
/// the final result.
#[test]
fn provisional_results_match_the_oracle_cut_at_their_watermark() {
    let day = random_day(5, 2_000);
    // In event order (the oracle's elapsed_ms, then file order).
    let ticktime = day
        .column_by_name("ticktime")
        .unwrap()
        .as_primitive::<Int64Type>();
    let mut order: Vec<u32> = (0..day.num_rows() as u32).collect();
    order.sort_by_key(|i| common::oracle_elapsed_ms(ticktime.value(*i as usize)));
    let day = common::rows_with_ids(&day, &order);
    let text = format!("{PIPELINE}\n[stream]\nlateness = \"0s\"\nemit_every = \"1200s\"\n");
    let date = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
    for workers in [1, 3] {
        let bound = Pipeline::from_toml(&text)
            .unwrap()
            .bind(&day.schema())
            .unwrap();
        let mut engine = Engine::start(bound, workers).unwrap();
        engine.begin_date(date).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(workers as u64);
        let mut start = 0;
        while start < day.num_rows() {
            let size = rng.random_range(1..300).min(day.num_rows() - start);
            engine.push(day.slice(start, size)).unwrap();
            start += size;
        }
        let mut results = engine.finish().unwrap();
        let last = results.pop().unwrap();
        assert!(last.is_final());
        assert_matches_oracle(&last.partial.unwrap(), &oracle(&day));
        assert_eq!(results.len(), 12, "{workers} workers: one every 20 minutes");
        for (k, result) in results.iter().enumerate() {
            let w = 1_200_000 * (k as i64 + 1);
            let kind = vizflow::engine::ResultKind::Provisional { watermark_ms: w };
            assert_eq!(result.kind, kind, "{workers} workers");
            assert_matches_oracle(result.partial.as_ref().unwrap(), &oracle_cut_at(&day, w));
        }
    }
}
