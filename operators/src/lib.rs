//! The dataflow operators of VizFlow, one per file, each an extension trait on a
//! timely stream of [`batch::Batch`]es:
//!
//! | operator | trait | what it computes |
//! |---|---|---|
//! | [`derive`](mod@derive) | [`derive::Derive`] | casts, SQL-expression columns, projection |
//! | [`parse_time`] | [`parse_time::ParseTime`] | wall-clock timestamps to trading time (`elapsed_ms`) |
//! | [`enrich`] | [`enrich::Enrich`] | per-symbol rules in event order: [`forward_return`]s, [`fifo`] matching, [`tag_condition`], running values, custom [`enrich::TagRule`]s |
//! | [`bin`] | [`bin::Bin`] | `{col}_bin` = round(x / width) |
//! | [`aggregate`] | [`aggregate::Aggregate`] | grouped metrics into mergeable per-date partials (differential dataflow) |
//!
//! The keyed stage is a folder, `enrich/`, one file per concern (see [`enrich`]); its
//! built-in rules sit together in `rules/`: [`forward_return`] (as-of forward returns,
//! all horizons in one pass), [`fifo`], [`tag_condition`] and [`tag_running`], each
//! re-exported at the crate's root.
//!
//! Supporting modules: [`time`] (the timestamp model: date + coarse trading time),
//! [`columns`] (the names of the columns the engine adds: `row_id`, `elapsed_ms`),
//! [`batch`] (the columnar container and the by-symbol exchange), [`stash`] (each
//! date's data held with a capability until the date is complete), [`clock`] (market
//! sessions and local wall-clock times), [`expr`] (SQL expressions on Arrow arrays),
//! [`exact_sum`] (order-independent float sums) and [`report`] (per-date counters and
//! errors).
//!
//! Errors are typed, one enum per concern ([`enrich::EnrichError`],
//! [`derive::DeriveError`], [`parse_time::ParseTimeError`], [`bin::BinError`], ...):
//! each carries what its message names (rule, column, row, value) and says whose
//! [`Fault`] it is.
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
mod error;
pub mod exact_sum;
pub mod expr;
pub mod next_day;
pub mod parse_time;
pub mod report;
mod rules;
pub mod stash;
pub mod suggest;
pub mod time;
pub mod watermark;

pub use error::Fault;
pub use rules::{fifo, forward_return, tag_condition, tag_running};
