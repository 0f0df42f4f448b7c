//! Runs across processes against one process (issue 4): `examples/alpha_markout.toml`
//! and `examples/markout.toml` over two generated dates of 10M rows and 3,000 symbols
//! (feather), as one process of 2 workers (`vizflow run --workers 2`) and as 2 processes
//! of 1 worker on loopback (`vizflow cluster --local 2 --workers 1`), partitioned by
//! symbol and by date. Every case runs the release `vizflow` binary, so process start,
//! connection set-up and writing the partials are included.
//!
//! Target: 2 processes x 1 worker within 1.3x of the wall time of 1 process x 2 workers.
//!
//! Run: `cargo bench --bench cluster`. The input is generated once into
//! `target/bench-data/` (about 1.4 GB); `VIZFLOW_BENCH_ROWS` changes the rows per date.
//! Reports time per run of both dates.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vizflow::io::FileFormat;
use vizflow::synthetic::generate;

fn vizflow(args: &[&str], data: &Path, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_vizflow"))
        .args(args)
        .arg("--input-dir")
        .arg(data)
        .arg("--output-dir")
        .arg(out)
        .args(["--progress", "quiet", "--dates", "20240102,20240103"])
        .status()
        .expect("start vizflow");
    assert!(status.success(), "vizflow {args:?}: {status}");
}

fn bench_cluster(c: &mut Criterion) {
    let rows: usize = std::env::var("VIZFLOW_BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000_000);
    let symbols = common::SYMBOLS;
    let dates = [
        NaiveDate::from_ymd_opt(2024, 1, 2).expect("valid date"),
        NaiveDate::from_ymd_opt(2024, 1, 3).expect("valid date"),
    ];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = root.join(format!("target/bench-data/{rows}x{symbols}"));
    let spec = common::gen_spec(rows, FileFormat::IpcFile);
    if dates.iter().any(|d| {
        !data
            .join(format!("alpha_{}.feather", d.format("%Y%m%d")))
            .exists()
    }) {
        generate(&spec, &data, &dates).expect("generate bench data");
    }
    let out = tempfile::tempdir().expect("temp dir");
    for pipeline in ["examples/alpha_markout.toml", "examples/markout.toml"] {
        let pipeline = root.join(pipeline).display().to_string();
        let name = Path::new(&pipeline)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut group = c.benchmark_group(format!("cluster {name}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(60))
            .throughput(Throughput::Elements(2 * rows as u64));
        let cases: [(&str, Vec<&str>); 4] = [
            (
                "1 process x 2 workers, by symbol",
                vec!["run", &pipeline, "--workers", "2"],
            ),
            (
                "1 process x 2 workers, by date",
                vec!["run", &pipeline, "--workers", "2", "--partition", "date"],
            ),
            (
                "2 processes x 1 worker, by symbol",
                vec!["cluster", &pipeline, "--local", "2", "--workers", "1"],
            ),
            (
                "2 processes x 1 worker, by date",
                vec![
                    "cluster",
                    &pipeline,
                    "--local",
                    "2",
                    "--workers",
                    "1",
                    "--partition",
                    "date",
                ],
            ),
        ];
        for (case, args) in cases {
            group.bench_function(format!("2 dates x {rows} rows, {case}"), |b| {
                b.iter(|| vizflow(&args, &data, out.path()))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_cluster);
criterion_main!(benches);
