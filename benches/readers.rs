//! Reading a date file: [`DateFile::read_part`] over every part of one generated date
//! of 1M rows and 3,000 symbols, with the 7 of its 9 columns that
//! `examples/markout.toml` reads, in batches of 65,536 rows (the engine's default).
//!
//! Cases, by format: feather (Arrow IPC file) uncompressed, lz4 and zstd, Parquet (zstd,
//! as `vizflow gen` writes it: row groups of 65,536 rows), and CSV. Every IPC and Parquet
//! file has 16 parts of 65,536 rows; a CSV file is one part.
//!
//! The files are generated once into `target/bench-data/readers/` (about 250 MB at 1M
//! rows) and read warm from the page cache, so this measures decoding, not the disk.
//! [`DateFile::open`] is outside the timing: for CSV it is a whole parsing pass that
//! counts the rows (and infers the schema from the first 1,000).
//!
//! Run: `cargo bench --bench readers`. Set `VIZFLOW_BENCH_ROWS` to change the size.
//! Reports time per date; rows/s = rows / time.

mod common;

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vizflow::io::{DateFile, FileFormat, IpcCompression};
use vizflow::synthetic::generate;

/// The same allocator as the `vizflow` binary, so the figures match the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH_ROWS: usize = 65_536;

fn bench_readers(c: &mut Criterion) {
    vizflow::allocator::keep_freed_memory();
    let rows = common::rows();
    let pipeline = common::bound(vizflow::demo::MARKOUT_TOML);
    let columns: Vec<&str> = pipeline.read.iter().map(String::as_str).collect();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/bench-data/readers/{rows}x{}",
        common::SYMBOLS
    ));
    let mut group = c.benchmark_group("readers");
    group.throughput(Throughput::Elements(rows as u64));
    let cases = [
        ("feather", FileFormat::IpcFile, None),
        (
            "feather lz4",
            FileFormat::IpcFile,
            Some(IpcCompression::Lz4),
        ),
        (
            "feather zstd",
            FileFormat::IpcFile,
            Some(IpcCompression::Zstd),
        ),
        ("parquet", FileFormat::Parquet, None),
        ("csv", FileFormat::Csv, None),
    ];
    for (name, format, compression) in cases {
        let spec = vizflow::synthetic::GenSpec {
            compression,
            ..common::gen_spec(rows, format)
        };
        let dir = data.join(name.replace(' ', "-"));
        let path = dir.join(format!("alpha_20240102.{}", format.extension()));
        if !path.exists() {
            generate(&spec, &dir, &[common::date()]).expect("generate bench data");
        }
        let file = DateFile::open(&path).expect("open");
        group.bench_function(
            format!(
                "{name} {} rows, {} of {} columns",
                common::rows_label(rows),
                columns.len(),
                file.schema().fields().len()
            ),
            |b| {
                b.iter(|| {
                    let read: usize = (0..file.num_parts())
                        .flat_map(|part| file.read_part(part, &columns, BATCH_ROWS).expect("read"))
                        .map(|(_, batch)| batch.num_rows())
                        .sum();
                    assert_eq!(read, rows);
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_readers
}
criterion_main!(benches);
