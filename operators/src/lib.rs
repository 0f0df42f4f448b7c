//! The dataflow operators of VizFlow, one per file, each an extension trait on a
//! timely stream of [`batch::Batch`]es:
//!
//! | operator | trait | what it computes |
//! |---|---|---|
//! | [`derive`](mod@derive) | [`derive::Derive`] | casts, SQL-expression columns, projection |
//! | [`parse_time`] | [`parse_time::ParseTime`] | wall-clock timestamps to trading time (`elapsed_ms`) |
//! | [`enrich`] | [`enrich::Enrich`] | per-symbol rules in event order: [`fifo`] matching, [`tag_condition`], running values, custom [`enrich::TagRule`]s |
//! | [`forward_return`] | a rule of [`enrich::Enrich`] ([`forward_return::ForwardReturnSpec::rule`]) | as-of forward returns per symbol, all horizons in one pass |
//! | [`bin`] | [`bin::Bin`] | `{col}_bin` = round(x / width) |
//! | [`aggregate`] | [`aggregate::Aggregate`] | grouped metrics into mergeable per-date partials (differential dataflow) |
//!
//! Supporting modules: [`time`] (the timestamp model: date + coarse trading time),
//! [`columns`] (the names of the columns the engine adds: `row_id`, `elapsed_ms`),
//! [`batch`] (the columnar container and the by-symbol exchange), [`clock`] (market
//! sessions and local wall-clock times), [`expr`] (SQL expressions on Arrow arrays), [`exact_sum`] (order-independent
//! float sums) and [`report`] (per-date counters and errors).
//!
//! The exact semantics of every operator are in the project's `SEMANTICS.md`; each
//! module's docs say which rule it implements.
#![deny(missing_docs)]

pub mod aggregate;
pub mod batch;
pub mod bin;
pub mod clock;
pub mod columns;
pub mod derive;
pub mod enrich;
pub mod exact_sum;
pub mod expr;
pub mod fifo;
pub mod forward_return;
pub mod parse_time;
pub mod report;
pub mod tag_condition;
pub mod tag_running;
pub mod time;
