//! Forward returns: as-of returns of the mid price per symbol at 60, 300 and 600 s of
//! trading time (`examples/markout.toml`), over one generated date of 1M rows and 3,000
//! symbols after `derive` and `parse_time`, in the engine's batches of 65,536 rows.
//!
//! The kernel is a rule of the keyed stage, so each case runs
//! [`forward_returns`]: the keyed stage's kernel (group the date's rows by symbol in
//! event order, run the rule, put the returns back in input order and build the output
//! batches) with the one rule. Cases: the three horizons, and one horizon (60 s), which
//! separates the per-horizon scan from the shared grouping.
//!
//! Run: `cargo bench --bench forward_return`. Set `VIZFLOW_BENCH_ROWS` to change the
//! size. Reports time per date; rows/s = rows / time.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vizflow::operators::forward_return::{ForwardReturnSpec, Horizon, forward_returns};

/// The same allocator as the `vizflow` binary, so the figures match the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_forward_return(c: &mut Criterion) {
    vizflow::allocator::keep_freed_memory();
    let rows = common::rows();
    let stages = common::stages(vizflow::demo::MARKOUT_TOML, rows);
    let day_ms = stages.pipeline.parse_time().clock.total_ms();
    let mut group = c.benchmark_group("forward_return");
    group.throughput(Throughput::Elements(rows as u64));
    let label = common::rows_label(rows);
    for horizons_s in [vec![60, 300, 600], vec![60]] {
        let spec = ForwardReturnSpec {
            symbol: "ukey".into(),
            price: "mid".into(),
            horizons: horizons_s.iter().map(|h| Horizon::Seconds(*h)).collect(),
            day_ms,
        };
        let name = match horizons_s.len() {
            1 => "1 horizon".to_owned(),
            n => format!("{n} horizons"),
        };
        group.bench_function(
            format!("{label} rows x {} symbols, {name}", common::SYMBOLS),
            |b| {
                b.iter(|| {
                    let out = forward_returns(stages.timed.clone(), &spec).expect("returns");
                    assert_eq!(common::total_rows(&out), rows);
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_forward_return
}
criterion_main!(benches);
