//! The `parse_time` kernel: timestamps to trading time (`elapsed_ms`) on the CN clock
//! (09:30-11:30, 13:00-15:00, Asia/Shanghai), over one generated date of 1M rows in the
//! engine's batches of 65,536 rows, as the operator calls it once per batch.
//!
//! Cases, by the encoding of the timestamp column:
//! * `HHMMSSmmm CN`: the generated `ticktime` (Int64 wall-clock `HHMMSSmmm`), through
//!   [`elapsed_ms`], the kernel;
//! * `HHMMSSmmm CN, whole batch`: the same through [`parse_time_batch`], which the
//!   operator runs: the kernel, then `elapsed_seconds` and the batch's new columns;
//! * `epoch ms CN`: the same instants as Int64 ms since the epoch, converted into the
//!   clock's time zone;
//! * `HH:MM:SS.fff strings CN`: the same times as Utf8 strings.
//!
//! About 0.1% of the rows fall outside the sessions and are clamped (the reference
//! pipelines' policy).
//!
//! Run: `cargo bench --bench parse_time`. Set `VIZFLOW_BENCH_ROWS` to change the size.
//! Reports time per date; rows/s = rows / time.

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use chrono::TimeZone;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vizflow::operators::parse_time::{OutOfSession, TimestampFormat, elapsed_ms, parse_time_batch};

/// The same allocator as the `vizflow` binary, so the figures match the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `HHMMSSmmm` as ms since local midnight.
fn ms_of_day(hhmmssmmm: i64) -> i64 {
    let (h, m) = (hhmmssmmm / 10_000_000, hhmmssmmm / 100_000 % 100);
    let (s, ms) = (hhmmssmmm / 1_000 % 100, hhmmssmmm % 1_000);
    ((h * 60 + m) * 60 + s) * 1_000 + ms
}

fn bench_parse_time(c: &mut Criterion) {
    vizflow::allocator::keep_freed_memory();
    let rows = common::rows();
    let stages = common::stages(vizflow::demo::MARKOUT_TOML, rows);
    let spec = stages.pipeline.parse_time();
    let date = common::date();
    let ticktimes: Vec<ArrayRef> = stages
        .derived
        .iter()
        .map(|b| b.column_by_name(&spec.column).expect("ticktime").clone())
        .collect();
    let midnight_ms = spec
        .clock
        .time_zone()
        .from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
        .single()
        .expect("Shanghai has no DST")
        .timestamp_millis();
    let as_ms = |column: &ArrayRef| column.as_primitive::<Int64Type>().values().to_vec();
    let epoch_ms: Vec<ArrayRef> = ticktimes
        .iter()
        .map(|t| {
            let ms = as_ms(t).into_iter().map(|v| midnight_ms + ms_of_day(v));
            Arc::new(Int64Array::from_iter_values(ms)) as ArrayRef
        })
        .collect();
    let strings: Vec<ArrayRef> = ticktimes
        .iter()
        .map(|t| {
            let text = as_ms(t).into_iter().map(|v| {
                let ms = ms_of_day(v);
                let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1_000 % 60);
                format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1_000)
            });
            Arc::new(StringArray::from_iter_values(text)) as ArrayRef
        })
        .collect();

    let mut group = c.benchmark_group("parse_time");
    group.throughput(Throughput::Elements(rows as u64));
    let label = common::rows_label(rows);
    let kernel = |columns: &[ArrayRef], format| {
        columns
            .iter()
            .map(|column| {
                let times = elapsed_ms(column, format, &spec.clock, date, OutOfSession::Clamp)
                    .expect("parse_time");
                times.elapsed_ms.len()
            })
            .sum::<usize>()
    };
    let cases: [(&str, &[ArrayRef], TimestampFormat); 3] = [
        ("HHMMSSmmm CN", &ticktimes, TimestampFormat::Hhmmssmmm),
        ("epoch ms CN", &epoch_ms, TimestampFormat::EpochMillis),
        ("HH:MM:SS.fff strings CN", &strings, TimestampFormat::Auto),
    ];
    for (name, columns, format) in cases {
        group.bench_function(format!("{label} rows {name}"), |b| {
            b.iter(|| assert_eq!(kernel(columns, format), rows))
        });
    }
    group.bench_function(format!("{label} rows HHMMSSmmm CN, whole batch"), |b| {
        b.iter(|| {
            let out: Vec<RecordBatch> = stages
                .derived
                .iter()
                .map(|batch| parse_time_batch(batch, spec, date).expect("parse_time").0)
                .collect();
            assert_eq!(common::total_rows(&out), rows);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_parse_time
}
criterion_main!(benches);
