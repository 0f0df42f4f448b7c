//! The built-in rules of the keyed [`crate::enrich`] operator, one per file. Each
//! implements [`crate::enrich::EnrichRule`] and is named in a pipeline's `[[enrich]]`
//! stage:
//!
//! | rule | type | what it adds |
//! |---|---|---|
//! | [`forward_return`] | [`forward_return::ForwardReturnSpec`] | as-of forward returns per symbol, all horizons in one pass (the stage's first rule) |
//! | [`fifo`] | [`fifo::FifoMatch`] | FIFO matching of entries and exits (expands an exit over the lots it closes) |
//! | [`tag_condition`] | [`tag_condition::TagCondition`] | a boolean column from a SQL condition |
//! | [`tag_running`] | [`tag_running::TagRunning`] | a running value per symbol, updated row by row |
//!
//! The crate re-exports each module at its root (`vizflow_operators::fifo`, ...).

pub mod fifo;
pub mod forward_return;
pub mod tag_condition;
pub mod tag_running;
