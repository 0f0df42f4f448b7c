//! Pipeline configuration: the TOML file format, and the same pipeline built from Rust.
//!
//! A [`Pipeline`] is parsed from TOML (see `examples/markout.toml` and the README's
//! configuration reference) or built field by field, then [bound](Pipeline::bind) to
//! the schema of the data, which checks every column and expression and decides which
//! columns to read.
//!
//! Wherever the configuration names a column, it may use an actual column name or a
//! semantic name from `[columns]` (`timestamp = "ticktime"` lets `timestamp` stand for
//! `ticktime`). Expressions use actual column names.
//!
//! Errors name the section and key (`[derive] mid: ...`), the column and what is
//! available, and say what to do; `tests/config_errors.rs` holds every message.
//!
//! ```
//! use arrow::datatypes::{DataType, Field, Schema};
//! use vizflow::config::Pipeline;
//!
//! let pipeline = Pipeline::from_toml(r#"
//!     input = { dir = "data", pattern = "alpha_{date}.feather" }
//!     output = { dir = "out" }
//!     columns = { symbol = "ukey", timestamp = "ticktime" }
//!     time = { market = "CN" }
//!     aggregate = { group_by = ["orderSide"], metrics = { volume = "sum(qty)" } }
//! "#)?;
//! let field = |name, data_type| Field::new(name, data_type, true);
//! let schema = Schema::new(vec![
//!     field("ticktime", DataType::Int64),
//!     field("ukey", DataType::Int64),
//!     field("orderSide", DataType::Utf8),
//!     field("qty", DataType::Float64),
//!     field("fillPrice", DataType::Float64),
//! ]);
//! assert_eq!(pipeline.bind(&schema)?.read, ["orderSide", "qty", "ukey", "ticktime"]);
//! # Ok::<(), vizflow::config::ConfigError>(())
//! ```

mod file;
mod schema;
mod stages;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::Field;
use vizflow_operators::aggregate::AggregateSpec;
use vizflow_operators::bin::BinSpec;
use vizflow_operators::derive::IntegerCast;
use vizflow_operators::enrich::{EnrichRule, TagRule, custom};
use vizflow_operators::expr::Expr;
use vizflow_operators::forward_return::Horizon;
use vizflow_operators::parse_time::{OutOfSession, TimestampFormat};
use vizflow_operators::suggest::column_hint;
use vizflow_operators::watermark::StreamSpec;

pub use file::{
    AggregateConfig, CastConfig, EnrichConfig, FifoMatchConfig, ForwardReturnConfig, InputConfig,
    MarketChoice, OutputConfig, TagConditionConfig, TagRunningConfig, TimeConfig,
};
pub use schema::{SchemaError, widen, widest_schema};
pub use stages::{BoundPipeline, Stage};

use crate::market::Market;

/// A configuration error: what is wrong, where, and what is available.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (part of the message, so not a `source` to print twice).
        error: std::io::Error,
    },
    /// The TOML does not parse or has an unknown, missing or mistyped key (the message has
    /// the line and column, and lists the expected keys or values).
    #[error("invalid pipeline{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Toml {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// The TOML parser's message, with line, column and the offending text.
        message: String,
    },
    /// A value is wrong: the section and key, the value and what is expected. From
    /// [`Pipeline::bind`], also the column and the columns available.
    #[error("invalid pipeline: {0}")]
    Invalid(String),
    /// A value in a pipeline file is wrong (as [`ConfigError::Invalid`], with the file).
    #[error("invalid pipeline {}: {message}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// As for [`ConfigError::Invalid`].
        message: String,
    },
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// `{what} '{name}'; did you mean ...? available columns: ...`, `what` naming the section
/// and role, e.g. `[columns] unknown symbol column`.
fn unknown_column(what: &str, name: &str, fields: &[Field]) -> ConfigError {
    let hint = column_hint(name, fields.iter().map(|f| f.name().as_str()));
    invalid(format!("{what} '{name}'; {hint}"))
}

/// The field `name` among `fields`, or an [`unknown_column`] error.
fn field<'a>(fields: &'a [Field], name: &str, what: &str) -> Result<&'a Field, ConfigError> {
    fields
        .iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| unknown_column(what, name, fields))
}

/// Adds `field`, or replaces the field of the same name in place.
fn set(fields: &mut Vec<Field>, field: Field) {
    match fields.iter().position(|f| f.name() == field.name()) {
        Some(i) => fields[i] = field,
        None => fields.push(field),
    }
}

/// A validated pipeline: every stage's settings, with expressions parsed and the
/// market resolved. Build it from TOML with [`Pipeline::from_toml`] or
/// [`Pipeline::from_file`], or field by field from Rust.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// Where the inputs are.
    pub input: InputConfig,
    /// Where the partials go.
    pub output: OutputConfig,
    /// The symbol column (actual name).
    pub symbol: String,
    /// The timestamp column (actual name).
    pub timestamp: String,
    /// Integer casts.
    pub casts: Vec<IntegerCast>,
    /// Derived columns, in order. Each is computed at the earliest of three points
    /// where every column it uses exists: before `parse_time` (input columns, `row_id`
    /// and earlier such derived columns), right after it (`elapsed_ms`,
    /// `elapsed_seconds`), or after the keyed stage (forward returns and `[[enrich]]`
    /// outputs), before `bin`.
    pub derive: Vec<(String, Expr)>,
    /// The market.
    pub market: Market,
    /// The timestamp encoding.
    pub time_format: TimestampFormat,
    /// The out-of-session policy.
    pub out_of_session: OutOfSession,
    /// Forward returns: price column and horizons.
    pub forward_return: Option<(String, Vec<Horizon>)>,
    /// The enrich stage's rules, in order (`[[enrich]]`, then rules added with
    /// [`Pipeline::with_rule`]).
    pub enrich: Vec<Arc<dyn EnrichRule>>,
    /// Binned columns.
    pub bins: Vec<BinSpec>,
    /// The grouped metrics.
    pub aggregate: AggregateSpec,
    /// `[stream]`: the watermark's lateness and what happens to late rows; `None` for
    /// whole-date processing (any arrival order).
    pub stream: Option<StreamSpec>,
    /// The configuration's text, as read (empty for a pipeline built from Rust).
    pub source: String,
}

impl Pipeline {
    /// Reads and validates a pipeline file; every error names the file.
    pub fn from_file(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Toml { message, .. } => ConfigError::Toml {
                path: Some(path.to_owned()),
                message,
            },
            ConfigError::Invalid(message) => ConfigError::InvalidFile {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// A hex digest of what the pipeline computes, stored in every partial so that
    /// `--skip-existing` keeps only partials of the same pipeline. It is taken over the
    /// parsed pipeline, not its text: comments, whitespace, quoting and the order of
    /// keys whose order means nothing do not change it; any change of meaning does
    /// (the order of derived columns and metrics is kept: it orders the partial's
    /// columns). Rules added from Rust ([`Pipeline::with_rule`]) count by their name
    /// and [fingerprint](TagRule::fingerprint) (their `Debug` form by default), so
    /// changing a rule or its parameters changes the hash.
    pub fn config_hash(&self) -> String {
        use sha2::Digest;
        let parsed = Pipeline {
            source: String::new(),
            stream: None,
            ..self.clone()
        };
        let mut hasher = sha2::Sha256::new();
        // `[stream]` came after partials had been written: it enters the hash only when
        // set, so that a pipeline without it keeps its hash. Its lateness and policy
        // change which rows count; `emit_every` changes no partial but asks for the
        // provisional results' file, which a date written without it lacks.
        let text = format!("{parsed:?}").replace(", stream: None", "");
        hasher.update(text.as_bytes());
        if let Some(stream) = &self.stream {
            let (lateness, late) = (stream.lateness_ms, stream.late);
            hasher.update(format!("\0stream: lateness {lateness} ms, late {late:?}").as_bytes());
            if let Some(every) = stream.emit_every_ms {
                hasher.update(format!(", provisional every {every} ms").as_bytes());
            }
        }
        let custom: Vec<String> = self.custom_rules().map(|r| r.fingerprint()).collect();
        if !custom.is_empty() {
            hasher.update(format!("\0rules: {}", custom.join("\0")).as_bytes());
        }
        let digest = hasher.finalize();
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The rules added from Rust (after those of `[[enrich]]`).
    fn custom_rules(&self) -> impl Iterator<Item = &Arc<dyn EnrichRule>> {
        self.enrich
            .iter()
            .filter(|r| r.name().starts_with("TagRule("))
    }

    /// The pipeline with one more enrich rule written in Rust, run after the others.
    ///
    /// ```
    /// use vizflow::config::Pipeline;
    /// use vizflow_operators::enrich::{Emit, Event, TagRule};
    ///
    /// /// Numbers each symbol's rows of a date in event order.
    /// #[derive(Debug)]
    /// struct Sequence;
    ///
    /// impl TagRule for Sequence {
    ///     type State = i64;
    ///     type Input<'a> = Option<f64>;
    ///     type Output = i64;
    ///     fn name(&self) -> String { "sequence".into() }
    ///     fn inputs(&self) -> Vec<String> { vec!["fillPrice".into()] }
    ///     fn outputs(&self) -> Vec<String> { vec!["sequence".into()] }
    ///     fn process(&self, _: Option<f64>, _: Event, n: &mut i64, emit: &mut Emit<'_, i64>) {
    ///         *n += 1;
    ///         emit.push(*n);
    ///     }
    /// }
    ///
    /// let pipeline = Pipeline::from_toml(r#"
    ///     input = { dir = "data", pattern = "alpha_{date}.feather" }
    ///     output = { dir = "out" }
    ///     columns = { symbol = "ukey", timestamp = "ticktime" }
    ///     time = { market = "CN" }
    ///     aggregate = { group_by = ["orderSide"], metrics = { last = "max(sequence)" } }
    /// "#)?
    /// .with_rule(Sequence);
    /// assert_eq!(pipeline.enrich.len(), 1);
    /// # Ok::<(), vizflow::config::ConfigError>(())
    /// ```
    pub fn with_rule<R: TagRule>(mut self, rule: R) -> Pipeline {
        self.enrich.push(custom(rule));
        self
    }
}
