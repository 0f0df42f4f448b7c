//! The keyed per-symbol stage (`enrich`) with each built-in rule, over one generated
//! date of 1M rows and 3,000 symbols after `derive` and `parse_time` of
//! `examples/alpha_markout.toml` (integer `qty`, `mid`, `elapsed_ms`), in the engine's
//! batches of 65,536 rows.
//!
//! Every case runs the stage's kernel, [`enrich_owned`] (or [`fifo_match`], the same
//! with the one FIFO rule): group the date's rows by symbol in event order, run the
//! rules, put the added columns back in input order and build the output batches.
//! Cases:
//! * `fifo`: FIFO matching of `orderSide`/`qty`/`fillPrice` (B opens lots, S closes the
//!   oldest first); an exit that closes several lots expands into one row per lot;
//! * `tag_condition`: `is_large = qty >= 1000`, evaluated vectorised;
//! * `tag_running`: the position, `prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty
//!   END` from 0, row by row per symbol;
//! * `alpha_markout keyed stage`: the reference pipeline's stage as it runs there,
//!   forward returns at 3 horizons and then the FIFO match.
//!
//! Run: `cargo bench --bench enrich`. Set `VIZFLOW_BENCH_ROWS` to change the size.
//! Reports time per date; rows/s = input rows / time.

mod common;

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vizflow::operators::enrich::{EnrichRule, EnrichSpec, enrich_owned};
use vizflow::operators::expr::{Expr, Scalar};
use vizflow::operators::fifo::{FifoSpec, fifo_match};
use vizflow::operators::tag_condition::TagCondition;
use vizflow::operators::tag_running::TagRunning;

/// The same allocator as the `vizflow` binary, so the figures match the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn one_rule(rule: Arc<dyn EnrichRule>) -> EnrichSpec {
    EnrichSpec {
        symbol: "ukey".into(),
        rules: vec![rule],
        keep: None,
        open_in_place: None,
    }
}

fn bench_enrich(c: &mut Criterion) {
    vizflow::allocator::keep_freed_memory();
    let rows = common::rows();
    let stages = common::stages(vizflow::demo::ALPHA_MARKOUT_TOML, rows);
    let timed = &stages.timed;
    let shape = format!(
        "{} rows x {} symbols",
        common::rows_label(rows),
        common::SYMBOLS
    );
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(rows as u64));

    let fifo = FifoSpec::new("orderSide", "qty").with_price("fillPrice");
    group.bench_function(format!("fifo {shape}"), |b| {
        b.iter(|| {
            let (out, counts) = fifo_match(timed, &fifo, "ukey").expect("fifo");
            assert_eq!(common::total_rows(&out) as u64, counts.output_rows);
        })
    });

    let condition = Expr::parse("qty >= 1000").expect("condition");
    let position =
        Expr::parse("prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END").expect("update");
    let keyed = stages
        .pipeline
        .keyed()
        .cloned()
        .expect("alpha_markout has a keyed stage");
    let cases = [
        (
            format!("tag_condition {shape}, qty >= 1000"),
            one_rule(Arc::new(TagCondition::new("is_large", condition))),
        ),
        (
            format!("tag_running {shape}, position"),
            one_rule(Arc::new(TagRunning::new(
                "position",
                position,
                Scalar::Int(0),
            ))),
        ),
        (
            format!("alpha_markout keyed stage {shape}, 3 returns + fifo"),
            keyed,
        ),
    ];
    for (name, spec) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let (out, _counts) = enrich_owned(timed.clone(), &spec).expect("enrich");
                assert!(common::total_rows(&out) >= rows);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_enrich
}
criterion_main!(benches);
