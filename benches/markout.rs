//! End-to-end reference pipelines on one date: `examples/markout.toml` (read a feather
//! date, derive, parse_time, forward returns at 3 horizons, bin, aggregate, write the
//! partial) and `examples/alpha_markout.toml` (the same with FIFO matching of fills per
//! symbol, which expands exits, and a derived notional after it).
//!
//! Targets (issues 2 and 3), 10M rows, 3,000 symbols, 2 workers: markout at least 10M
//! input rows/s, alpha markout at least 8M input rows/s.
//!
//! Run: `cargo bench --bench markout` (release build). The input is generated once into
//! `target/bench-data/` (10M rows, 3,000 symbols, uncompressed feather; about 700 MB).
//! Set `VIZFLOW_BENCH_ROWS` to change the size. Reports time per date; input rows/s =
//! rows / time.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vizflow::config::Pipeline;
use vizflow::io::FileFormat;
use vizflow::run::{DateSelection, ProgressStyle, RunOptions, run};
use vizflow::synthetic::generate;

/// The same allocator as the `vizflow` binary, so the figures match the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_markout(c: &mut Criterion) {
    vizflow::allocator::keep_freed_memory();
    let rows: usize = std::env::var("VIZFLOW_BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000_000);
    let symbols = common::SYMBOLS;
    let date = NaiveDate::from_ymd_opt(2024, 1, 2).expect("valid date");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench-data/{rows}x{symbols}"));
    let spec = common::gen_spec(rows, FileFormat::IpcFile);
    if !data.join("alpha_20240102.feather").exists() {
        generate(&spec, &data, &[date]).expect("generate bench data");
    }
    let out = tempfile::tempdir().expect("temp dir");
    for (name, toml) in [
        ("markout", vizflow::demo::MARKOUT_TOML),
        ("alpha_markout", vizflow::demo::ALPHA_MARKOUT_TOML),
    ] {
        let pipeline = Pipeline::from_toml(toml).expect("reference pipeline");
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .throughput(Throughput::Elements(rows as u64));
        for workers in [1, 2] {
            let options = RunOptions {
                input_dir: Some(data.clone()),
                output_dir: Some(out.path().to_owned()),
                dates: DateSelection::Spec("20240102".into()),
                workers,
                progress: ProgressStyle::Quiet,
                ..RunOptions::default()
            };
            group.bench_function(
                format!("{rows} rows x {symbols} symbols, feather, {workers} workers"),
                |b| {
                    b.iter(|| {
                        let summary = run(&pipeline, &options).expect("run");
                        assert_eq!(summary.rows, rows as u64);
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, bench_markout);
criterion_main!(benches);
