//! The parse_time kernel against SEMANTICS.md ("parse_time"): every encoding of the same instants,
//! DST days, neighbouring days, the out-of-session policies, error texts, and the `HHMMSSmmm` fast
//! path against a plain oracle on random times.

use std::sync::Arc;

use arrow::array::*;
use arrow::datatypes::DataType;
use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use proptest::prelude::*;
use vizflow_operators::clock::{Session, TradingClock, format_ms_of_day};
use vizflow_operators::parse_time::{ElapsedTimes, OutOfSession, TimestampFormat, elapsed_ms};

const H: i64 = 3_600_000;
const M: i64 = 60_000;

fn clock(zone: Tz, sessions: &[(i64, i64)]) -> TradingClock {
    let sessions = sessions
        .iter()
        .map(|&(start_ms, end_ms)| Session { start_ms, end_ms });
    TradingClock::new(zone, sessions.collect()).unwrap()
}

fn cn() -> TradingClock {
    clock(
        chrono_tz::Asia::Shanghai,
        &[(9 * H + 30 * M, 11 * H + 30 * M), (13 * H, 15 * H)],
    )
}

fn day(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

fn clamp(
    column: &dyn Array,
    format: TimestampFormat,
    clock: &TradingClock,
    date: NaiveDate,
) -> ElapsedTimes {
    elapsed_ms(column, format, clock, date, OutOfSession::Clamp).unwrap()
}

fn error(column: &dyn Array, format: TimestampFormat, policy: OutOfSession) -> String {
    elapsed_ms(column, format, &cn(), day(2024, 1, 2), policy)
        .unwrap_err()
        .to_string()
}

/// Local wall-clock times of 2024-01-02 in Shanghai as naive date-times.
fn local_times(times: &[(u32, u32, u32, u32)]) -> Vec<NaiveDateTime> {
    let date = day(2024, 1, 2);
    times
        .iter()
        .map(|&(h, m, s, ms)| date.and_hms_milli_opt(h, m, s, ms).unwrap())
        .collect()
}

#[test]
fn every_encoding_gives_the_same_elapsed_ms() {
    use TimestampFormat::*;
    let times = [
        (9, 29, 59, 0),
        (9, 30, 0, 0),
        (10, 15, 30, 0),
        (11, 30, 0, 0),
        (12, 10, 0, 0),
        (13, 0, 0, 0),
        (14, 59, 59, 0),
        (15, 0, 0, 0),
        (15, 0, 1, 0),
    ];
    let expected = [
        0, 0, 2_730_000, 7_200_000, 7_200_000, 7_200_000, 14_399_000, 14_400_000, 14_400_000,
    ];
    let local = local_times(&times);
    let naive_ms: Vec<i64> = local
        .iter()
        .map(|t| t.and_utc().timestamp_millis())
        .collect();
    let utc_ms: Vec<i64> = local
        .iter()
        .map(|t| {
            chrono_tz::Asia::Shanghai
                .from_local_datetime(t)
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    let scaled =
        |values: &[i64], factor: i64| values.iter().map(|v| v * factor).collect::<Vec<_>>();
    let seconds: Vec<i64> = utc_ms.iter().map(|v| v / 1000).collect();
    let hhmmssmmm: Vec<i64> = times
        .iter()
        .map(|&(h, m, s, ms)| (h * 10_000_000 + m * 100_000 + s * 1000 + ms) as i64)
        .collect();
    let hhmmss: Vec<i32> = times
        .iter()
        .map(|&(h, m, s, _)| (h * 10_000 + m * 100 + s) as i32)
        .collect();
    let texts: Vec<String> = local
        .iter()
        .map(|t| t.format("%H:%M:%S").to_string())
        .collect();
    let naive_seconds: Vec<i64> = naive_ms.iter().map(|v| v / 1000).collect();

    let columns: Vec<(&str, ArrayRef, TimestampFormat)> = vec![
        (
            "HHMMSSmmm i64",
            Arc::new(Int64Array::from(hhmmssmmm.clone())),
            Auto,
        ),
        (
            "HHMMSSmmm explicit",
            Arc::new(Int64Array::from(hhmmssmmm.clone())),
            Hhmmssmmm,
        ),
        (
            "HHMMSSmmm u32",
            Arc::new(UInt32Array::from_iter_values(
                hhmmssmmm.iter().map(|&v| v as u32),
            )),
            Auto,
        ),
        (
            "HHMMSSmmm f64",
            Arc::new(Float64Array::from_iter_values(
                hhmmssmmm.iter().map(|&v| v as f64),
            )),
            Auto,
        ),
        (
            "HHMMSS i32",
            Arc::new(Int32Array::from(hhmmss.clone())),
            Auto,
        ),
        (
            "HHMMSS explicit",
            Arc::new(Int32Array::from(hhmmss)),
            Hhmmss,
        ),
        ("epoch s", Arc::new(Int64Array::from(seconds.clone())), Auto),
        (
            "epoch s explicit",
            Arc::new(Int64Array::from(seconds.clone())),
            EpochSeconds,
        ),
        (
            "epoch s f64",
            Arc::new(Float64Array::from_iter_values(
                seconds.iter().map(|&v| v as f64),
            )),
            Auto,
        ),
        ("epoch ms", Arc::new(Int64Array::from(utc_ms.clone())), Auto),
        (
            "epoch ms explicit",
            Arc::new(Int64Array::from(utc_ms.clone())),
            EpochMillis,
        ),
        (
            "epoch us",
            Arc::new(Int64Array::from(scaled(&utc_ms, 1000))),
            Auto,
        ),
        (
            "epoch us explicit",
            Arc::new(Int64Array::from(scaled(&utc_ms, 1000))),
            EpochMicros,
        ),
        (
            "epoch ns",
            Arc::new(Int64Array::from(scaled(&utc_ms, 1_000_000))),
            Auto,
        ),
        (
            "epoch ns explicit",
            Arc::new(UInt64Array::from_iter_values(
                scaled(&utc_ms, 1_000_000).iter().map(|&v| v as u64),
            )),
            EpochNanos,
        ),
        (
            "timestamp s naive",
            Arc::new(TimestampSecondArray::from(naive_seconds)),
            Auto,
        ),
        (
            "timestamp ms naive",
            Arc::new(TimestampMillisecondArray::from(naive_ms.clone())),
            Auto,
        ),
        (
            "timestamp us naive",
            Arc::new(TimestampMicrosecondArray::from(scaled(&naive_ms, 1000))),
            Auto,
        ),
        (
            "timestamp ns naive",
            Arc::new(TimestampNanosecondArray::from(scaled(&naive_ms, 1_000_000))),
            Hhmmss,
        ),
        (
            "timestamp s UTC",
            Arc::new(TimestampSecondArray::from(seconds).with_timezone("UTC")),
            Auto,
        ),
        (
            "timestamp ms +08:00",
            Arc::new(TimestampMillisecondArray::from(utc_ms.clone()).with_timezone("+08:00")),
            Auto,
        ),
        (
            "timestamp us New York",
            Arc::new(
                TimestampMicrosecondArray::from(scaled(&utc_ms, 1000))
                    .with_timezone("America/New_York"),
            ),
            Auto,
        ),
        (
            "timestamp ns UTC",
            Arc::new(
                TimestampNanosecondArray::from(scaled(&utc_ms, 1_000_000)).with_timezone("UTC"),
            ),
            Auto,
        ),
        ("utf8", Arc::new(StringArray::from(texts.clone())), Auto),
        (
            "large utf8",
            Arc::new(LargeStringArray::from(texts.clone())),
            Auto,
        ),
        ("utf8 view", Arc::new(StringViewArray::from(texts)), Auto),
    ];
    for (name, column, format) in columns {
        let result = clamp(&column, format, &cn(), day(2024, 1, 2));
        assert_eq!(result.elapsed_ms.values(), &expected, "{name}");
        assert_eq!(
            (result.clamped, result.dropped, result.keep.is_none()),
            (3, 0, true),
            "{name}"
        );
    }
}

#[test]
fn milliseconds_are_kept_and_finer_units_truncated() {
    let expected = [2_730_250, 2_730_999];
    let local = local_times(&[(10, 15, 30, 250), (10, 15, 30, 999)]);
    let utc_ns: Vec<i64> = local
        .iter()
        .map(|t| {
            chrono_tz::Asia::Shanghai
                .from_local_datetime(t)
                .unwrap()
                .timestamp_millis()
                * 1_000_000
                + 999_999
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![101_530_250, 101_530_999])),
        Arc::new(StringArray::from(vec!["10:15:30.25", "10:15:30.999999999"])),
        Arc::new(Int64Array::from(utc_ns.clone())),
        Arc::new(TimestampNanosecondArray::from(utc_ns).with_timezone("UTC")),
    ];
    for column in columns {
        let result = clamp(&column, TimestampFormat::Auto, &cn(), day(2024, 1, 2));
        assert_eq!(
            result.elapsed_ms.values(),
            &expected,
            "{:?}",
            column.data_type()
        );
    }
}

#[test]
fn auto_detection_thresholds() {
    let crypto = clock(chrono_tz::UTC, &[(0, 24 * H)]);
    let instant = day(2024, 1, 2)
        .and_hms_opt(3, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    let cases: [(i64, NaiveDate, i64); 8] = [
        (235_959, day(2024, 1, 2), 24 * H - 1000),
        (236_000, day(2024, 1, 2), 2 * M + 36_000), // HHMMSSmmm 00:02:36.000
        (235_959_999, day(2024, 1, 2), 24 * H - 1),
        (instant, day(2024, 1, 2), 3 * H),
        (99_999_999_999, day(5138, 11, 16), 9 * H + 46 * M + 39_000),
        (instant * 1000, day(2024, 1, 2), 3 * H),
        (instant * 1_000_000, day(2024, 1, 2), 3 * H),
        (instant * 1_000_000_000, day(2024, 1, 2), 3 * H),
    ];
    for (value, date, expected) in cases {
        let result = clamp(
            &Int64Array::from(vec![value]),
            TimestampFormat::Auto,
            &crypto,
            date,
        );
        assert_eq!(result.elapsed_ms.values(), &[expected], "{value}");
    }
}

#[test]
fn us_dst_days_use_the_local_wall_clock() {
    let us = clock(chrono_tz::America::New_York, &[(9 * H + 30 * M, 16 * H)]);
    // 2024-03-10 springs forward (EST -> EDT), 2024-11-03 falls back: per-row offsets around
    // them (03-09 to 03-11), one fixed offset far from them (01-08, 06-03).
    for (date, utc_offset_hours) in [
        (day(2024, 3, 9), 5),
        (day(2024, 3, 10), 4),
        (day(2024, 3, 11), 4),
        (day(2024, 6, 3), 4),
        (day(2024, 11, 3), 5),
    ] {
        let open = date
            .and_hms_opt(9 + utc_offset_hours, 30, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let instants = vec![
            open - 1,
            open,
            open + 90 * M,
            open + 390 * M,
            open + 390 * M + 1,
        ];
        let expected = [0, 0, 90 * M, 390 * M, 390 * M];
        let epoch = clamp(
            &Int64Array::from(instants.clone()),
            TimestampFormat::EpochMillis,
            &us,
            date,
        );
        assert_eq!(epoch.elapsed_ms.values(), &expected, "{date}");
        assert_eq!(epoch.clamped, 2, "{date}");
        let zoned = TimestampMillisecondArray::from(instants).with_timezone("UTC");
        assert_eq!(
            clamp(&zoned, TimestampFormat::Auto, &us, date)
                .elapsed_ms
                .values(),
            &expected
        );
        let naive_open = date
            .and_hms_opt(9, 30, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let naive = TimestampMillisecondArray::from(vec![naive_open, naive_open + 390 * M]);
        let wall = clamp(&naive, TimestampFormat::Auto, &us, date);
        assert_eq!(wall.elapsed_ms.values(), &[0, 390 * M], "{date}");
    }
}

#[test]
fn epoch_instants_on_neighbouring_days() {
    let utc = |y, mo, d, h, mi| {
        day(y, mo, d)
            .and_hms_opt(h, mi, 0)
            .unwrap()
            .and_utc()
            .timestamp()
    };
    let instants = Int64Array::from(vec![
        utc(2024, 1, 1, 6, 0), // 2024-01-01 14:00 Shanghai: the previous day's afternoon
        utc(2024, 1, 2, 2, 0), // 2024-01-02 10:00 Shanghai, although 2024-01-02 02:00 UTC
        utc(2024, 1, 2, 17, 0), // 2024-01-03 01:00 Shanghai
        utc(2024, 1, 3, 1, 30), // 2024-01-03 09:30 Shanghai: the next day's open
    ]);
    let result = clamp(
        &instants,
        TimestampFormat::EpochSeconds,
        &cn(),
        day(2024, 1, 2),
    );
    assert_eq!(
        result.elapsed_ms.values(),
        &[0, 30 * M, 14_400_000, 14_400_000]
    );
    assert_eq!(result.clamped, 3);
    assert_eq!(
        error(
            &instants,
            TimestampFormat::EpochSeconds,
            OutOfSession::Error
        ),
        "row 0 (value 1704088800) at -10:00:00.000 is outside the sessions \
         09:30-11:30, 13:00-15:00 (Asia/Shanghai); use out_of_session = \"clamp\" or \"drop\""
    );
}

#[test]
fn out_of_session_policies() {
    let ticks = Int64Array::from(vec![
        91_500_000,
        93_000_000,
        121_000_000,
        130_000_000,
        150_000_001,
    ]);
    let date = day(2024, 1, 2);
    let clamped = clamp(&ticks, TimestampFormat::Hhmmssmmm, &cn(), date);
    assert_eq!(
        clamped.elapsed_ms.values(),
        &[0, 0, 7_200_000, 7_200_000, 14_400_000]
    );
    assert_eq!(
        (clamped.clamped, clamped.dropped, clamped.keep),
        (3, 0, None)
    );

    let dropped = elapsed_ms(
        &ticks,
        TimestampFormat::Hhmmssmmm,
        &cn(),
        date,
        OutOfSession::Drop,
    )
    .unwrap();
    assert_eq!(dropped.elapsed_ms.values(), &[0, 0, 0, 7_200_000, 0]);
    assert_eq!((dropped.clamped, dropped.dropped), (0, 3));
    assert_eq!(
        dropped.keep,
        Some(BooleanArray::from(vec![false, true, false, true, false]))
    );
    let in_session = Int64Array::from(vec![93_000_000, 150_000_000]);
    let kept = elapsed_ms(
        &in_session,
        TimestampFormat::Auto,
        &cn(),
        date,
        OutOfSession::Drop,
    )
    .unwrap();
    assert_eq!((kept.dropped, kept.keep), (0, None));

    assert_eq!(
        error(
            &ticks.slice(1, 4),
            TimestampFormat::Auto,
            OutOfSession::Error
        ),
        "row 1 (value 121000000) at 12:10:00.000 is outside the sessions \
         09:30-11:30, 13:00-15:00 (Asia/Shanghai); use out_of_session = \"clamp\" or \"drop\""
    );
    assert!(
        elapsed_ms(
            &in_session,
            TimestampFormat::Auto,
            &cn(),
            date,
            OutOfSession::Error
        )
        .is_ok()
    );
}

#[test]
fn error_texts() {
    use TimestampFormat::*;
    let error = |column: &dyn Array, format| error(column, format, OutOfSession::Clamp);
    let ints = |values: Vec<i64>| Int64Array::from(values);
    assert_eq!(
        error(&ints(vec![93_000_000, 1, 2, 106_199_999]), Hhmmssmmm),
        "invalid HHMMSSmmm timestamp 106199999 at row 3: minute 61 is out of range (expected 0-59); \
         check [time] format"
    );
    assert_eq!(
        error(&ints(vec![256_199_999]), Hhmmssmmm),
        "invalid HHMMSSmmm timestamp 256199999 at row 0: hour 25 is out of range (expected 0-23); \
         check [time] format"
    );
    assert_eq!(
        error(&ints(vec![93_000, 96_100]), Auto),
        "invalid HHMMSS (auto-detected) timestamp 96100 at row 1: minute 61 is out of range \
         (expected 0-59); check [time] format"
    );
    assert_eq!(
        error(&ints(vec![93_060_000]), Auto),
        "invalid HHMMSSmmm (auto-detected) timestamp 93060000 at row 0: second 60 is out of range \
         (expected 0-59); check [time] format"
    );
    assert_eq!(
        error(&ints(vec![93_000_000, -5]), Hhmmssmmm),
        "invalid HHMMSSmmm timestamp -5 at row 1: negative value; check [time] format"
    );
    assert_eq!(
        error(&ints(vec![-5]), EpochSeconds),
        "invalid epoch seconds timestamp -5 at row 0: negative value; check [time] format"
    );
    assert_eq!(
        error(&ints(vec![i64::MAX]), EpochSeconds),
        "invalid epoch seconds timestamp 9223372036854775807 at row 0: too large for a timestamp; \
         check [time] format"
    );
    assert_eq!(
        error(&Float64Array::from(vec![93_000_000.0, f64::NAN]), Auto),
        "invalid HHMMSSmmm (auto-detected) timestamp NaN at row 1: NaN is not a time; \
         fill or filter out such rows first"
    );
    assert_eq!(
        error(&Float64Array::from(vec![93_000_000.5]), Auto),
        "invalid HHMMSSmmm (auto-detected) timestamp 93000000.5 at row 0: not a whole number; \
         check [time] format"
    );
    assert_eq!(
        error(&Int64Array::from(vec![Some(93_000_000), None]), Auto),
        "null timestamp at row 1; fill or filter out rows without a timestamp first"
    );
    assert_eq!(
        error(&StringArray::from(vec![None, Some("09:30:00")]), Auto),
        "null timestamp at row 0; fill or filter out rows without a timestamp first"
    );
    assert_eq!(
        error(&UInt64Array::from(vec![u64::MAX]), Auto),
        "cannot read the UInt64 timestamp column as Int64: Cast error: Can't cast value \
         18446744073709551615 to type Int64"
    );
    let supported = "supported: integers (HHMMSSmmm, HHMMSS, epoch s/ms/us/ns), Float64 holding \
                     integral values, Timestamp of any unit with or without a time zone, \
                     Utf8/LargeUtf8/Utf8View \"HH:MM:SS[.fff]\"";
    assert_eq!(
        error(&BooleanArray::from(vec![true]), Auto),
        format!("unsupported timestamp column type Boolean; {supported}")
    );
    assert_eq!(
        error(&Float32Array::from(vec![93_000_000.0]), Auto),
        format!("unsupported timestamp column type Float32; {supported}")
    );
    for (text, reason) in [
        ("09:3O:00", "input contains invalid characters"),
        ("12:61:00", "input is out of range"),
        ("12:30", "premature end of input"),
        ("12:30:00 ", "trailing input"),
    ] {
        assert_eq!(
            error(&StringArray::from(vec!["09:30:00", text]), Auto),
            format!(
                "invalid time string {text:?} at row 1: {reason}; expected HH:MM:SS or HH:MM:SS.fff"
            )
        );
    }
}

#[test]
fn empty_column_and_data_type_of_result() {
    let result = clamp(
        &Int64Array::from(Vec::<i64>::new()),
        TimestampFormat::Auto,
        &cn(),
        day(2024, 1, 2),
    );
    assert_eq!((result.elapsed_ms.len(), result.clamped), (0, 0));
    assert_eq!(result.elapsed_ms.data_type(), &DataType::Int64);
}

#[test]
fn formats_ms_of_day() {
    assert_eq!(format_ms_of_day(34_200_500), "09:30:00.500");
    assert_eq!(format_ms_of_day(0), "00:00:00.000");
    assert_eq!(format_ms_of_day(25 * H + 1), "25:00:00.001");
    assert_eq!(format_ms_of_day(-H), "-01:00:00.000");
}

/// SEMANTICS.md read literally: the digits of `HHMMSSmmm`, and inside session i,
/// `offset_i + (t - start_i)`; before the first start 0, in a break the previous session's end,
/// after the last end the day's total.
fn oracle(value: i64, sessions: &[(i64, i64)]) -> (i64, bool) {
    let digits = format!("{value:09}");
    let field = |range: std::ops::Range<usize>| digits[range].parse::<i64>().unwrap();
    let t = field(0..2) * H + field(2..4) * M + field(4..6) * 1000 + field(6..9);
    let elapsed = sessions
        .iter()
        .map(|&(start, end)| (t - start).clamp(0, end - start))
        .sum();
    let inside = sessions.iter().any(|&(start, end)| start <= t && t <= end);
    (elapsed, !inside)
}

fn time_value() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0..24i64, 0..60i64, 0..60i64, 0..1000i64)
            .prop_map(|(h, m, s, ms)| h * 10_000_000 + m * 100_000 + s * 1000 + ms),
        prop::sample::select(vec![
            0,
            92_959_999,
            93_000_000,
            113_000_000,
            113_000_001,
            125_959_999,
            130_000_000,
            150_000_000,
            150_000_001,
            235_959_999
        ]),
    ]
}

proptest! {
    #[test]
    fn hhmmssmmm_fast_path_matches_the_oracle(values in prop::collection::vec(time_value(), 0..300), jp in any::<bool>()) {
        let sessions = if jp {
            vec![(9 * H, 11 * H + 30 * M), (12 * H + 30 * M, 15 * H + 30 * M)]
        } else {
            vec![(9 * H + 30 * M, 11 * H + 30 * M), (13 * H, 15 * H)]
        };
        let clock = clock(chrono_tz::Asia::Tokyo, &sessions);
        let column = Int64Array::from(values.clone());
        let result = elapsed_ms(&column, TimestampFormat::Hhmmssmmm, &clock, day(2024, 1, 2), OutOfSession::Drop).unwrap();
        let expected: Vec<(i64, bool)> = values.iter().map(|&v| oracle(v, &sessions)).collect();
        let keep: Vec<bool> = (0..values.len()).map(|i| result.keep.as_ref().is_none_or(|k| k.value(i))).collect();
        for (row, &(elapsed, outside)) in expected.iter().enumerate() {
            prop_assert_eq!(keep[row], !outside, "row {}", row);
            if !outside {
                prop_assert_eq!(result.elapsed_ms.value(row), elapsed, "row {}", row);
            }
        }
        let clamped = clamp(&column, TimestampFormat::Hhmmssmmm, &clock, day(2024, 1, 2));
        let oracle_elapsed: Vec<i64> = expected.iter().map(|e| e.0).collect();
        prop_assert_eq!(clamped.elapsed_ms.values().to_vec(), oracle_elapsed);
        prop_assert_eq!(clamped.clamped, expected.iter().filter(|e| e.1).count() as u64);
        prop_assert_eq!(result.dropped, clamped.clamped);
    }
}
