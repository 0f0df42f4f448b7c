//! `bin` and `aggregate` over one generated date of 1M rows and 3,000 symbols, as the
//! reference pipelines run them: the rows come out of the keyed stage (and, for alpha
//! markout, its FIFO expansion and the `notional` column), in batches of at most
//! 65,536 rows.
//!
//! Cases:
//! * `bin`: `alpha1_bin = round(alpha1 / 1e-4)` through [`bin_batch`], the kernel the
//!   operator calls per batch;
//! * `aggregate ... markout`: `count`, `sum(qty)` and 3 mean returns by `alpha1_bin` x
//!   `orderSide` (`examples/markout.toml`);
//! * `aggregate ... alpha_markout`: 8 metrics over the FIFO-expanded rows (1.44M) by the
//!   same key (`examples/alpha_markout.toml`); its throughput counts the expanded rows.
//!
//! The per-batch pre-aggregation is private to the operator, so the aggregate cases run
//! the narrowest public entry point: a one-worker dataflow (`timely::execute_directly`)
//! that feeds the date's batches through [`Aggregate::aggregate`] and waits for the
//! partial. That includes the pre-aggregation (the bulk), differential's consolidation
//! of one update per group (58 groups) and building the partial, and a dataflow's
//! set-up (well under a millisecond).
//!
//! Run: `cargo bench --bench aggregate`. Set `VIZFLOW_BENCH_ROWS` to change the size.
//! Reports time per date; rows/s = rows / time.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use vizflow::operators::aggregate::{Aggregate, AggregatePlan};
use vizflow::operators::batch::Batch;
use vizflow::operators::bin::bin_batch;
use vizflow::operators::report::Diagnostics;
use vizflow::operators::time::{self, DateOwners, Time};

/// The same allocator as the `vizflow` binary, so the figures match the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Aggregates one date's batches in a one-worker dataflow; returns the partial's groups.
fn aggregate_date(batches: Vec<RecordBatch>, plan: AggregatePlan) -> usize {
    timely::execute_directly(move |worker| {
        let key = time::date_key(common::date());
        let diagnostics = Diagnostics::default();
        let mut input = InputHandle::<Time, CapacityContainerBuilder<Batch>>::new();
        let probe = ProbeHandle::new();
        let groups = Rc::new(Cell::new(0));
        let partial_groups = groups.clone();
        worker.dataflow::<Time, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .aggregate(plan, diagnostics.clone(), DateOwners::default())
                .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    Pipeline,
                    "Partial",
                    move |_, _| {
                        move |input, _output| {
                            input.for_each_time(|_time, data| {
                                for partial in data {
                                    partial_groups.set(partial_groups.get() + partial.len());
                                }
                            })
                        }
                    },
                )
                .probe_with(&probe);
        });
        input.advance_to(time::date_start(key));
        for batch in batches {
            input.send_batch(&mut Batch::new(batch));
        }
        drop(input);
        worker.step_while(|| !probe.done());
        let errors = diagnostics.get(key).errors;
        assert!(errors.is_empty(), "aggregate failed: {errors:?}");
        groups.get()
    })
}

fn bench_aggregate(c: &mut Criterion) {
    vizflow::allocator::keep_freed_memory();
    let rows = common::rows();
    let label = common::rows_label(rows);
    let markout = common::stages(vizflow::demo::MARKOUT_TOML, rows);
    let alpha_markout = common::stages(vizflow::demo::ALPHA_MARKOUT_TOML, rows);
    let mut group = c.benchmark_group("aggregate");

    group.throughput(Throughput::Elements(rows as u64));
    let bins = &markout.pipeline.pipeline.bins;
    group.bench_function(format!("bin {label} rows, alpha1 width 1e-4"), |b| {
        b.iter(|| {
            let out: Vec<RecordBatch> = markout
                .enriched
                .iter()
                .map(|batch| bin_batch(batch, bins).expect("bin").0)
                .collect();
            assert_eq!(common::total_rows(&out), rows);
        })
    });

    for (name, stages) in [("markout", &markout), ("alpha_markout", &alpha_markout)] {
        let input_rows = common::total_rows(&stages.binned);
        let metrics = stages.pipeline.pipeline.aggregate.metrics.len();
        group.throughput(Throughput::Elements(input_rows as u64));
        group.bench_function(
            format!(
                "aggregate {label} rows by alpha1_bin x orderSide, {metrics} metrics, {name}{}",
                match input_rows == rows {
                    true => String::new(),
                    false => format!(" ({:.2}M rows after FIFO)", input_rows as f64 / 1e6),
                }
            ),
            |b| {
                b.iter(|| {
                    let plan = stages.pipeline.plan.clone();
                    assert!(aggregate_date(stages.binned.clone(), plan) > 0);
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_aggregate
}
criterion_main!(benches);
