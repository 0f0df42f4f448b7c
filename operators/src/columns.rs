//! The names of the columns the engine and its operators add to every row, in one place:
//! every operator that reads or writes one imports its name from here.
//!
//! | column | type | added by | what it holds |
//! |---|---|---|---|
//! | [`ROW_ID`] | UInt64 | the engine, as it reads a date | the row's 0-based position in the date's file |
//! | [`ELAPSED_MS`] | Int64 | [`parse_time`](crate::parse_time) | trading time in ms since the first session's start |
//! | [`ELAPSED_SECONDS`] | Int64 | [`parse_time`](crate::parse_time) | `elapsed_ms` div 1000 (floor) |
//!
//! A row's event order is (`elapsed_ms`, `row_id`); rules may not add columns named
//! like either of them ([`crate::enrich::checked_outputs`]).

/// In a narrow batch of revised values ([`crate::batch::Emission::Revised`]), the
/// number of the batch each row was sent in (UInt64).
pub const KEPT_BATCH: &str = "__kept_batch";
/// In a narrow batch of revised values, each row's place in its batch (UInt32).
pub const KEPT_ROW: &str = "__kept_row";
/// In a narrow batch of revised values sent again, whether the entry no longer changes
/// (Boolean).
pub const SETTLES: &str = "__settles";

/// The name of the row identity column (0-based position in the date's file).
pub const ROW_ID: &str = "row_id";
/// The name of the trading-time column `parse_time` adds (ms since the first session's
/// start).
pub const ELAPSED_MS: &str = "elapsed_ms";
/// The name of `elapsed_ms`'s whole-seconds companion: `elapsed_ms` div 1000 (floor).
pub const ELAPSED_SECONDS: &str = "elapsed_seconds";
