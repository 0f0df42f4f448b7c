//! The by-symbol exchange in front of the keyed stage, over one generated date of 1M
//! rows and 3,000 symbols as it reaches that stage in `examples/markout.toml` (after
//! `derive` and `parse_time`: `ukey`, `orderSide`, `qty` (Int64), `alpha1`, `mid`,
//! `elapsed_ms`, `row_id`, in batches of 65,536 rows).
//!
//! Cases:
//! * `symbol_destinations`: each row's worker from its Int64 symbol, 2 workers;
//! * `by_symbol split`: [`BySymbol`] (the distributor of the [`by_symbol`] pact) routes
//!   every batch to 2 workers: each gets the batch, shared, with a selection of its
//!   rows (nothing is copied); the pushers only collect the parts;
//! * `by_symbol split + take`: the same, then every part's rows copied out
//!   ([`Batch::take`], Arrow's `take`), as an operator that cannot read through a
//!   selection does (the keyed stage reads through it);
//! * `ipc encode` / `ipc decode`: a batch to and from the bytes timely sends between
//!   processes (and between workers in `ProcessBinary` mode), through the
//!   [`ContainerBytes`] implementation of [`Batch`] (one Arrow IPC stream message per
//!   batch).
//!
//! Run: `cargo bench --bench exchange`. Set `VIZFLOW_BENCH_ROWS` to change the size.
//! Reports time per date; rows/s = rows / time.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use timely::bytes::arc::{Bytes, BytesMut};
use timely::communication::Push;
use timely::dataflow::channels::pushers::exchange::Distributor;
use timely::dataflow::channels::{ContainerBytes, Message};
use vizflow::operators::batch::{Batch, BySymbol, by_symbol, symbol_destinations};
use vizflow::operators::time::{self, Time};

/// The same allocator as the `vizflow` binary, so the figures match the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKERS: usize = 2;

/// A pusher that keeps what it is given, in place of a channel to a worker.
#[derive(Default)]
struct Collect(Vec<Batch>);

impl Push<Message<Time, Batch>> for Collect {
    fn push(&mut self, element: &mut Option<Message<Time, Batch>>) {
        if let Some(message) = element.take() {
            self.0.push(message.data);
        }
    }
}

/// A batch as timely sends it: its `ContainerBytes` encoding.
fn encode(batch: &Batch) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(batch.length_in_bytes());
    batch.into_bytes(&mut bytes);
    bytes
}

fn bench_exchange(c: &mut Criterion) {
    vizflow::allocator::keep_freed_memory();
    let rows = common::rows();
    let stages = common::stages(vizflow::demo::MARKOUT_TOML, rows);
    let batches = &stages.timed;
    let columns = batches[0].num_columns();
    let shape = format!(
        "{} rows x {} symbols",
        common::rows_label(rows),
        common::SYMBOLS
    );
    let start = time::date_start(time::date_key(common::date()));
    let mut group = c.benchmark_group("exchange");
    group.throughput(Throughput::Elements(rows as u64));

    group.bench_function(
        format!("symbol_destinations {shape}, Int64, {WORKERS} workers"),
        |b| {
            b.iter(|| {
                let routed: usize = batches
                    .iter()
                    .map(|batch| {
                        let ukey = batch.column_by_name("ukey").expect("ukey");
                        symbol_destinations(ukey.as_ref(), WORKERS).len()
                    })
                    .sum();
                assert_eq!(routed, rows);
            })
        },
    );

    group.bench_function(format!("by_symbol split {shape}, {WORKERS} workers"), |b| {
        let mut split: BySymbol = (by_symbol("ukey").0)(WORKERS);
        b.iter(|| {
            let mut pushers: Vec<Collect> = (0..WORKERS).map(|_| Collect::default()).collect();
            for batch in batches {
                split.partition(&mut Batch::new(batch.clone()), &start, &mut pushers);
            }
            let parts = pushers.iter().flat_map(|p| &p.0);
            assert_eq!(parts.map(Batch::len).sum::<usize>(), rows);
        })
    });

    group.bench_function(
        format!("by_symbol split + take {shape}, {WORKERS} workers"),
        |b| {
            let mut split: BySymbol = (by_symbol("ukey").0)(WORKERS);
            b.iter(|| {
                let mut pushers: Vec<Collect> = (0..WORKERS).map(|_| Collect::default()).collect();
                for batch in batches {
                    split.partition(&mut Batch::new(batch.clone()), &start, &mut pushers);
                }
                let parts = pushers.iter_mut().flat_map(|p| &mut p.0);
                let taken = parts.filter_map(Batch::take).map(|b| b.num_rows());
                assert_eq!(taken.sum::<usize>(), rows);
            })
        },
    );

    group.bench_function(format!("ipc encode {shape}, {columns} columns"), |b| {
        b.iter(|| {
            let bytes: usize = batches
                .iter()
                .map(|batch| encode(&Batch::new(batch.clone())).len())
                .sum();
            assert!(bytes > 0);
        })
    });

    let encoded: Vec<Bytes> = batches
        .iter()
        .map(|batch| BytesMut::from(encode(&Batch::new(batch.clone()))).freeze())
        .collect();
    group.bench_function(format!("ipc decode {shape}, {columns} columns"), |b| {
        b.iter(|| {
            let decoded: usize = encoded
                .iter()
                .map(|bytes| Batch::from_bytes(bytes.clone()).len())
                .sum();
            assert_eq!(decoded, rows);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_exchange
}
criterion_main!(benches);
