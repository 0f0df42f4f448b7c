//! `vizflow reduce` over many dates (issue 17): 250 partials of 10,000 groups each
//! (`alpha1_bin` x `orderSide`, the alpha markout's keys, with counts, float sums kept
//! exactly, a min and a max), merged by every key. Target: under 1 s on 2 cores.
//!
//! Run: `cargo bench --bench reduce`. The partials are written once into
//! `target/bench-data/reduce-250x10000/`. Reports time per reduce of the 250 dates.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BinaryArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vizflow::io::write_parquet_atomic;
use vizflow::operators::exact_sum::ExactSum;
use vizflow::partials::{Bin, Layout};
use vizflow::reduce::{ReduceOptions, reduce};

const DATES: usize = 250;
const BINS: i64 = 5_000;

/// Date `d`'s partial: every bin of both sides, values varying with the date.
fn partial(day: i32, d: usize) -> RecordBatch {
    let groups = (2 * BINS) as usize;
    let bins = Int64Array::from_iter_values((0..groups).map(|g| g as i64 / 2 - BINS / 2));
    let sides =
        StringArray::from_iter_values((0..groups).map(|g| if g % 2 == 0 { "B" } else { "S" }));
    let value = |g: usize| ((g * 7919 + d * 104_729) % 10_007) as f64 * 1e-3 - 5.0;
    let sums: Vec<ExactSum> = (0..groups)
        .map(|g| {
            let mut sum = ExactSum::new();
            sum.add(value(g));
            sum.add(value(g + 1) * 1e-9);
            sum
        })
        .collect();
    let counts = Int64Array::from_iter_values((0..groups).map(|g| 1 + (g + d) as i64 % 50));
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("date", Arc::new(Date32Array::from(vec![day; groups]))),
        ("alpha1_bin", Arc::new(bins)),
        ("orderSide", Arc::new(sides)),
        ("count", Arc::new(counts.clone())),
        (
            "flow",
            Arc::new(Float64Array::from_iter_values(
                sums.iter().map(ExactSum::value),
            )),
        ),
        ("count()", Arc::new(counts)),
        (
            "sum(signed)",
            Arc::new(Float64Array::from_iter_values(
                sums.iter().map(ExactSum::value),
            )),
        ),
        (
            "sum(signed).exact",
            Arc::new(BinaryArray::from_iter_values(
                sums.iter().map(ExactSum::to_bytes),
            )),
        ),
        (
            "min(fillPrice)",
            Arc::new(Float64Array::from_iter_values((0..groups).map(value))),
        ),
        (
            "max(fillPrice)",
            Arc::new(Float64Array::from_iter_values(
                (0..groups).map(|g| value(g) + 1.0),
            )),
        ),
    ];
    let fields: Vec<Field> = (columns.iter())
        .map(|(name, array)| {
            Field::new(
                *name,
                array.data_type().clone(),
                *name != "date" && array.data_type() != &DataType::Binary,
            )
        })
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("columns of one length")
}

fn write_partials(dir: &Path) {
    let layout = Layout {
        config_hash: "bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        group_by: vec!["alpha1_bin".into(), "orderSide".into()],
        metrics: vec![
            ("count".into(), "count()".into()),
            ("flow".into(), "sum(signed)".into()),
            ("range".into(), "max(fillPrice) - min(fillPrice)".into()),
        ],
        bins: vec![Bin {
            column: "alpha1_bin".into(),
            source: "alpha1".into(),
            width: 1e-4,
        }],
        pipeline: String::new(),
    };
    let first = NaiveDate::from_ymd_opt(2023, 1, 2).expect("a date");
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    for d in 0..DATES {
        let date = first + chrono::Duration::days(d as i64);
        let path = dir.join(format!("{}.parquet", date.format("%Y%m%d")));
        let day = (date - epoch).num_days() as i32;
        write_parquet_atomic(&path, &partial(day, d), &layout.metadata()).expect("write a partial");
    }
}

fn bench_reduce(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench-data/reduce-{DATES}x{}", 2 * BINS));
    if !dir.join("done").exists() {
        std::fs::create_dir_all(&dir).expect("bench directory");
        write_partials(&dir);
        std::fs::write(dir.join("done"), "").expect("mark");
    }
    let mut group = c.benchmark_group("reduce");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((DATES as i64 * 2 * BINS) as u64));
    group.bench_function("250 dates x 10,000 groups, by every key", |b| {
        b.iter(|| {
            let reduced = reduce(&dir, &ReduceOptions::default()).expect("reduce");
            assert_eq!(reduced.table.num_rows(), (2 * BINS) as usize);
        })
    });
    let by_side = ReduceOptions {
        by: Some(vec!["orderSide".into()]),
        ..ReduceOptions::default()
    };
    group.bench_function("250 dates x 10,000 groups, by orderSide", |b| {
        b.iter(|| reduce(&dir, &by_side).expect("reduce"))
    });
    group.finish();
}

criterion_group!(benches, bench_reduce);
criterion_main!(benches);
