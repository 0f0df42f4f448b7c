//! VizFlow: a streaming dataflow engine for per-date market-data analysis.
//!
//! Hand it one file per trading day (all symbols in one file; Arrow IPC/feather,
//! Parquet or CSV) and a pipeline; each date's rows stream through the operators of
//! the `vizflow-operators` crate on timely dataflow and differential dataflow, and
//! come out as a per-date partial (Parquet) that merges exactly across dates.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | the pipeline: TOML format (`file`), the stage list it binds to a schema (`stages`), schemas across dates (`schema`) |
//! | [`market`] | market presets (CN, KR, HK, hkex_northbound, JP, US, crypto) and custom markets |
//! | [`calendar`] | trading days, date specs, previous/next trading day |
//! | [`io`] | reading date files by parts with projection; atomic Parquet partials |
//! | [`engine`] | the embedding API: push batches and time, receive per-date results; the dataflow each worker builds from the stage list (`worker`) |
//! | [`cluster`] | runs across processes: connecting a cluster, supervising local clusters |
//! | [`run`] | batch replay over many dates |
//! | [`progress`] | the progress display of a run or a local cluster, and the messages a cluster's processes send |
//! | [`synthetic`] | deterministic synthetic market data |
//! | [`demo`] | the `vizflow demo` walkthrough |
//! | [`partials`] | what a partial says about itself; listing a directory's partials |
//! | [`reduce`] | `vizflow reduce`: partials merged exactly |
//! | [`plot`] | `vizflow plot`: heatmaps and lines as PNG, SVG or HTML |
//! | [`serve`] | `vizflow serve`: the dashboard and its JSON API |
//! | [`inspect`] | `vizflow inspect`: a stage's rows for one date |
//! | [`live`] | `vizflow live`: Arrow IPC feeds |
//! | [`bench`](mod@bench) | `vizflow bench`: a measured run with its time per stage, peak memory and the read floor |
//! | [`allocator`] | tuning of mimalloc, the `vizflow` binary's allocator |
//!
//! ```no_run
//! use vizflow::config::Pipeline;
//! use vizflow::run::{run, RunOptions};
//!
//! let pipeline = Pipeline::from_file("examples/markout.toml".as_ref())?;
//! let summary = run(&pipeline, &RunOptions { workers: 2, ..RunOptions::default() })?;
//! println!("{} dates, {} rows", summary.dates.len(), summary.rows);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod allocator;
pub mod bench;
pub mod calendar;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod engine;
pub mod inspect;
pub mod io;
pub mod live;
pub mod market;
pub mod partials;
pub mod plot;
pub mod progress;
pub mod reduce;
pub mod run;
pub mod serve;
pub mod synthetic;

pub use vizflow_operators as operators;
