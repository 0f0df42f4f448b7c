//! Plain sequential oracles of the project's `SEMANTICS.md`, written from the text and
//! shared by the tests of both crates (`tests/` and `operators/tests/`): each test maps
//! its own rows in and the oracle's rows out, so every test checks against one reading
//! of the rules.
//!
//! | module | rule |
//! |---|---|
//! | [`fifo`] | "FIFO matching", with the documented decisions of `rules/fifo` |
//! | [`stream`] | "Streaming": late rows, the date cut at `W`, as-of forward returns with any close |
#![deny(missing_docs)]

pub mod fifo;
pub mod stream;
