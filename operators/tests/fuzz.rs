//! Property-based fuzzing of the parsers that see user data and user text: the time
//! parser (`parse_time::elapsed_ms`) on random values of every supported column type,
//! and the expression parser (`Expr`, `MetricExpr`, recurrences) on random text and
//! random token sequences, evaluated on rows of edge values. Every case must return
//! `Ok` or `Err` within a time limit: no panic (overflow checks are on in tests), no
//! hang. Results that come back are checked for the invariants callers rely on.
//!
//! The readers are fuzzed in the `vizflow` crate (`tests/fuzz_readers.rs`); the time
//! parser's results are checked against an oracle in `parse_time.rs`, the expression
//! engine's in `expr.rs`.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use arrow::array::*;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::NaiveDate;
use proptest::prelude::*;
use vizflow_operators::clock::{Session, TradingClock};
use vizflow_operators::expr::{Expr, MetricExpr, Scalar};
use vizflow_operators::parse_time::{OutOfSession, TimestampFormat, elapsed_ms};

const H: i64 = 3_600_000;
const M: i64 = 60_000;

/// Runs `f` on a thread of its own and returns its result, failing the case if it
/// panics or takes longer than `limit` (a hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    match receiver.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("no result within {limit:?}: a hang"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the case panicked"),
    }
}

const LIMIT: Duration = Duration::from_secs(10);

// ---- the time parser ----

/// CN (two sessions, a lunch break), a 24-hour market, and one whose session runs past
/// midnight (New York evening to next morning).
fn clocks() -> Vec<TradingClock> {
    let clock = |zone, sessions: &[(i64, i64)]| {
        let sessions = sessions
            .iter()
            .map(|&(start_ms, end_ms)| Session { start_ms, end_ms });
        TradingClock::new(zone, sessions.collect()).unwrap()
    };
    vec![
        clock(
            chrono_tz::Asia::Shanghai,
            &[(9 * H + 30 * M, 11 * H + 30 * M), (13 * H, 15 * H)],
        ),
        clock(chrono_tz::UTC, &[(0, 24 * H)]),
        clock(chrono_tz::America::New_York, &[(18 * H, 24 * H + 17 * H)]),
    ]
}

fn formats() -> impl Strategy<Value = TimestampFormat> {
    prop::sample::select(vec![
        TimestampFormat::Auto,
        TimestampFormat::Hhmmssmmm,
        TimestampFormat::Hhmmss,
        TimestampFormat::EpochSeconds,
        TimestampFormat::EpochMillis,
        TimestampFormat::EpochMicros,
        TimestampFormat::EpochNanos,
    ])
}

fn policies() -> impl Strategy<Value = OutOfSession> {
    prop::sample::select(vec![
        OutOfSession::Clamp,
        OutOfSession::Drop,
        OutOfSession::Error,
    ])
}

/// Dates far from today too: DST rules, leap years, the epoch.
fn dates() -> impl Strategy<Value = NaiveDate> {
    (1900i32..2200, 1u32..=12, 1u32..=28)
        .prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

/// Integers around every encoding's range and its edges.
fn integer() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![
        any::<i64>(),
        -1_000i64..300_000_000,
        Just(i64::MIN),
        Just(i64::MAX),
        Just(256_199_999),
        Just(235_959_999),
        1_600_000_000i64..2_000_000_000,
        1_600_000_000_000i64..2_000_000_000_000,
        1_600_000_000_000_000_000i64..2_000_000_000_000_000_000,
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(i64::MAX as f64),
        (0i64..300_000_000).prop_map(|v| v as f64),
    ]
}

/// Text close to `HH:MM:SS[.fff]` and anything at all.
fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{0,12})?",
        "[0-9:. +-]{0,16}",
        ".{0,16}",
    ]
}

/// A random timestamp column of any supported (or unsupported) type, with nulls.
fn column() -> impl Strategy<Value = ArrayRef> {
    let nullable = |v: Vec<(bool, i64)>| v.into_iter().map(|(null, x)| (!null).then_some(x));
    let ints = || prop::collection::vec((prop::bool::weighted(0.05), integer()), 0..40);
    prop_oneof![
        ints().prop_map(move |v| Arc::new(Int64Array::from_iter(nullable(v))) as ArrayRef),
        ints().prop_map(move |v| {
            let v = v.into_iter().map(|(n, x)| (!n).then_some(x as i32));
            Arc::new(Int32Array::from_iter(v)) as ArrayRef
        }),
        ints().prop_map(move |v| {
            let v = v.into_iter().map(|(n, x)| (!n).then_some(x as u64));
            Arc::new(UInt64Array::from_iter(v)) as ArrayRef
        }),
        prop::collection::vec(float(), 0..40)
            .prop_map(|v| Arc::new(Float64Array::from(v)) as ArrayRef),
        prop::collection::vec(any::<f32>(), 0..40)
            .prop_map(|v| Arc::new(Float32Array::from(v)) as ArrayRef),
        (
            ints(),
            0..4usize,
            prop::option::of(prop::sample::select(vec![
                "Asia/Shanghai",
                "+05:30",
                "UTC",
                "America/New_York",
            ]))
        )
            .prop_map(move |(v, unit, zone)| {
                let values = Int64Array::from_iter(nullable(v));
                let unit = [
                    TimeUnit::Second,
                    TimeUnit::Millisecond,
                    TimeUnit::Microsecond,
                    TimeUnit::Nanosecond,
                ][unit];
                let data_type = DataType::Timestamp(unit, zone.map(Arc::from));
                arrow::compute::cast(&values, &data_type).unwrap()
            }),
        prop::collection::vec(prop::option::weighted(0.95, time_text()), 0..40)
            .prop_map(|v| Arc::new(StringArray::from(v)) as ArrayRef),
        prop::collection::vec(time_text(), 0..40)
            .prop_map(|v| Arc::new(StringViewArray::from_iter_values(v)) as ArrayRef),
        prop::collection::vec(any::<bool>(), 0..40)
            .prop_map(|v| Arc::new(BooleanArray::from(v)) as ArrayRef),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn time_parser_never_panics(
        column in column(),
        format in formats(),
        policy in policies(),
        clock in 0..3usize,
        date in dates(),
    ) {
        let clock = clocks().swap_remove(clock);
        let total_ms = clock.total_ms();
        let rows = column.len();
        let result = within(LIMIT, move || {
            elapsed_ms(column.as_ref(), format, &clock, date, policy).map_err(|e| e.to_string())
        });
        if let Ok(times) = result {
            prop_assert_eq!(times.elapsed_ms.len(), rows);
            prop_assert_eq!(times.elapsed_ms.null_count(), 0);
            prop_assert!(times.elapsed_ms.values().iter().all(|ms| (0..=total_ms).contains(ms)));
            let kept = times.keep.as_ref().map_or(rows, |k| k.true_count());
            prop_assert_eq!(kept as u64 + times.dropped, rows as u64);
            if policy != OutOfSession::Clamp {
                prop_assert_eq!(times.clamped, 0);
            }
        }
    }
}

// ---- the expression parser ----

/// Words and symbols of the expression language, and some that are not.
const TOKENS: &[&str] = &[
    "a",
    "b",
    "s",
    "t",
    "prev",
    "\"a\"",
    "missing",
    "1",
    "0",
    "-1",
    "2.5",
    "1e308",
    "-0.0",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "'x'",
    "''",
    "'B'",
    "(",
    ")",
    "(",
    ")",
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "<>",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "BETWEEN",
    "IN",
    ",",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "abs",
    "sqrt",
    "ln",
    "log10",
    "exp",
    "floor",
    "ceil",
    "round",
    "least",
    "greatest",
    "coalesce",
    "CAST",
    "AS",
    "BIGINT",
    "DOUBLE",
    "VARCHAR",
    "BOOLEAN",
    "TRUE",
    "FALSE",
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "||",
    "::",
    ";",
    "SELECT",
    "[",
    "]",
    "?",
    "@",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|t| t.join(" "))
}

/// Valid expressions with one part replaced, so the parser and evaluator go deep.
fn mutated() -> impl Strategy<Value = String> {
    let bases = vec![
        "(a + b) / 2",
        "CASE WHEN s = 'B' THEN b ELSE -b END",
        "coalesce(a, 0) * greatest(b, 1) % 7",
        "CAST(b AS DOUBLE) / CAST(a AS BIGINT)",
        "a BETWEEN -1 AND 1 OR s IN ('B', 'S') AND t IS NOT NULL",
        "round(ln(abs(a)) + exp(b) - sqrt(a), 2)",
        "prev + CASE WHEN s = 'B' THEN b ELSE -b END",
        "sum(a) / sum(b) - count() + min(b) * max(a)",
    ];
    (
        prop::sample::select(bases),
        prop::sample::select(TOKENS),
        0..64usize,
        0..3usize,
    )
        .prop_map(|(base, token, at, how)| {
            let words: Vec<&str> = base.split(' ').collect();
            let at = at % words.len();
            let mut out: Vec<&str> = words.clone();
            match how {
                0 => out[at] = token,
                1 => out.insert(at, token),
                _ => {
                    out.remove(at);
                }
            }
            out.join(" ")
        })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![token_soup(), mutated(), ".{0,40}", "[(]{0,300}a[)]{0,300}"]
}

/// Rows of edge values: nulls, NaN, infinities, zeros, the i64 extremes, empty text.
fn edge_rows() -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "a",
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                None,
                Some(f64::NAN),
                Some(f64::INFINITY),
                Some(-0.0),
                Some(0.0),
                Some(-1e308),
                Some(9.3e18),
            ])) as ArrayRef,
        ),
        (
            "b",
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(0),
                None,
                Some(i64::MAX),
                Some(i64::MIN),
                Some(-1),
                Some(7),
                Some(i64::MIN + 1),
            ])),
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![
                Some("B"),
                Some("S"),
                None,
                Some(""),
                Some("x"),
                Some("B"),
                Some("1"),
                Some("ü"),
            ])),
        ),
        (
            "t",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
                None,
                Some(false),
                Some(true),
                None,
            ])),
        ),
    ])
    .unwrap()
}

/// Parses `text` every way it can be used, and evaluates what parses.
fn exercise(text: String) {
    let batch = edge_rows();
    let schema = batch.schema();
    if let Ok(expr) = Expr::parse(&text) {
        let _ = expr.columns();
        if expr.check(&schema).is_ok()
            && let Ok(values) = expr.evaluate(&batch)
        {
            assert_eq!(values.len(), batch.num_rows(), "{text}");
        }
        for var_type in [DataType::Int64, DataType::Float64, DataType::Boolean] {
            if let Ok(recurrence) = expr.recurrence("prev", &var_type, &schema)
                && let Ok(prepared) = recurrence.prepare(&batch)
            {
                // The value feeds back only when it has the variable's type (callers
                // widen the variable first, as `TagRunning` does).
                let feeds_back = recurrence.data_type() == &var_type;
                let mut prev = Scalar::Null;
                for row in 0..batch.num_rows() {
                    match prepared.step(row, prev) {
                        Ok(next) if feeds_back => prev = next,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        }
    }
    if let Ok(metric) = MetricExpr::parse(&text) {
        // Each call's values: a float column of edge values, nulls included.
        let values: Vec<ArrayRef> = metric
            .calls()
            .iter()
            .map(|_| batch.column(0).clone())
            .collect();
        if let Ok(result) = metric.evaluate(&values) {
            assert_eq!(result.len(), batch.num_rows(), "{text}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn expression_parser_never_panics(text in text()) {
        within(LIMIT, move || exercise(text));
    }
}

/// Nesting far beyond the parser's recursion limit is an error, not a stack overflow.
#[test]
fn deeply_nested_expression_is_an_error() {
    for depth in [100, 10_000] {
        let text = format!("{}a{}", "(".repeat(depth), ")".repeat(depth));
        let error = within(LIMIT, move || {
            Expr::parse(&text).map(|_| ()).unwrap_err().to_string()
        });
        assert!(
            error.ends_with("the expression is nested too deeply"),
            "{error}"
        );
        let text = format!("{}1", "-".repeat(depth));
        within(LIMIT, move || {
            let _ = Expr::parse(&text);
        });
    }
}
