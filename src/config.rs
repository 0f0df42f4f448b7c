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

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use vizflow_operators::aggregate::{AggregatePlan, AggregateSpec};
use vizflow_operators::bin::BinSpec;
use vizflow_operators::columns::{ELAPSED_MS, ELAPSED_SECONDS, ROW_ID};
use vizflow_operators::derive::{CastFailure, DeriveSpec, IntegerCast};
use vizflow_operators::enrich::{EnrichRule, EnrichSpec, TagRule, checked_outputs, custom};
use vizflow_operators::expr::{Expr, MetricExpr, Scalar};
use vizflow_operators::fifo::{FifoMatch, FifoSpec};
use vizflow_operators::forward_return::ForwardReturnSpec;
use vizflow_operators::parse_time::{OutOfSession, ParseTimeSpec, TimestampFormat, elapsed_ms};
use vizflow_operators::suggest::column_hint;
use vizflow_operators::tag_condition::TagCondition;
use vizflow_operators::tag_running::TagRunning;

use crate::market::{Market, MarketConfig};

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

/// `[input]`: where the per-date files are.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// The directory of the per-date files (relative paths are relative to the current
    /// directory). `--input-dir` overrides it.
    pub dir: PathBuf,
    /// The file name pattern with `{date}` (YYYYMMDD), e.g. `alpha_{date}.feather`. The
    /// extension picks the format: feather/arrow/ipc, arrows (IPC stream), parquet, csv.
    pub pattern: String,
    /// A calendar file (CSV or Parquet with a `date` column). Without it, the trading
    /// days are the dates of the files matching `pattern` in `dir`.
    #[serde(default)]
    pub calendar: Option<PathBuf>,
    /// Rows per batch inside the engine, at least 1.
    #[serde(default = "default_batch_rows", deserialize_with = "batch_rows")]
    pub batch_rows: usize,
}

fn default_batch_rows() -> usize {
    65_536
}

/// Any integer, so that 0 and -1 get a message saying what is allowed (not "expected usize").
fn batch_rows<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let rows = i64::deserialize(deserializer)?;
    usize::try_from(rows)
        .ok()
        .filter(|rows| *rows >= 1)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "batch_rows must be at least 1, got {rows} (the default is {})",
                default_batch_rows()
            ))
        })
}

/// `[output]`: where partials go.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The directory of the per-date partials, `{dir}/{date}.parquet`. `--output-dir`
    /// overrides it.
    pub dir: PathBuf,
}

/// `[[cast]]`: a column cast to an integer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CastConfig {
    /// The column.
    pub column: String,
    /// The target type; only `int64` is supported.
    pub to: String,
    /// The largest accepted distance to an integer (default 1e-6).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// `error` (default) fails the date on a non-integer value; `null` nulls and counts it.
    #[serde(default)]
    pub on_error: CastFailure,
}

fn default_tolerance() -> f64 {
    1e-6
}

/// `[time]`: parse_time.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// A preset name (`CN`, `KR`, `HK`, `hkex_northbound`, `JP`, `US`, `crypto`) or a
    /// table `{ time_zone = "...", sessions = [["09:30", "11:30"], ...] }`.
    pub market: MarketChoice,
    /// The timestamp column (default: the `timestamp` semantic column).
    #[serde(default)]
    pub column: Option<String>,
    /// The timestamp encoding: `auto` (default), `hhmmssmmm`, `hhmmss`, `epoch_seconds`,
    /// `epoch_millis`, `epoch_micros`, `epoch_nanos`.
    #[serde(default)]
    pub format: TimestampFormat,
    /// Rows outside the sessions: `clamp` (default), `drop` or `error`.
    #[serde(default)]
    pub out_of_session: OutOfSession,
}

/// A market: a preset's name or a custom definition.
#[derive(Clone, Debug, PartialEq)]
pub enum MarketChoice {
    /// A preset.
    Preset(String),
    /// A custom market (or a preset with other sessions).
    Custom(MarketConfig),
}

/// A string is a preset, a table a custom market; anything else is an error that says so
/// (serde's untagged enums only say "data did not match any variant").
impl<'de> Deserialize<'de> for MarketChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Choice;
        impl<'de> serde::de::Visitor<'de> for Choice {
            type Value = MarketChoice;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a preset name ({}) or a table {{ time_zone = \"...\", sessions = [[\"09:30\", \"11:30\"], ...] }}",
                    Market::preset_names().join(", ")
                )
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<MarketChoice, E> {
                Ok(MarketChoice::Preset(name.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<MarketChoice, A::Error> {
                let table = serde::de::value::MapAccessDeserializer::new(map);
                MarketConfig::deserialize(table).map(MarketChoice::Custom)
            }
        }
        deserializer.deserialize_any(Choice)
    }
}

impl MarketChoice {
    fn build(&self) -> Result<Market, ConfigError> {
        match self {
            MarketChoice::Preset(name) => Market::preset(name),
            MarketChoice::Custom(config) => config.build(),
        }
        .map_err(|e| invalid(format!("[time] market: {e}")))
    }
}

/// `[forward_return]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardReturnConfig {
    /// The price column.
    pub price: String,
    /// Horizons in seconds of trading time; each adds `return_{h}`.
    pub horizons: Vec<i64>,
}

/// `[[enrich]]`: one rule of the enrich stage, chosen by `rule`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "rule")]
pub enum EnrichConfig {
    /// `rule = "FIFOMatch"`: FIFO matching of entries and exits (SEMANTICS.md).
    #[serde(rename = "FIFOMatch")]
    FifoMatch(FifoMatchConfig),
    /// `rule = "TagCondition"`: a boolean column from a condition.
    #[serde(rename = "TagCondition")]
    TagCondition(TagConditionConfig),
    /// `rule = "TagRunning"`: a running value per symbol and date.
    #[serde(rename = "TagRunning")]
    TagRunning(TagRunningConfig),
}

/// `rule = "FIFOMatch"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FifoMatchConfig {
    /// The side column.
    pub side: String,
    /// The quantity column (an integer column; `[[cast]]` a float one first).
    pub qty: String,
    /// The price recorded with each lot and reported as `matched_entry_price`.
    #[serde(default)]
    pub price: Option<String>,
    /// The side value of entries (default `B`).
    #[serde(default = "default_entry_side")]
    pub entry_side: String,
    /// The side value of exits (default `S`).
    #[serde(default = "default_exit_side")]
    pub exit_side: String,
}

fn default_entry_side() -> String {
    "B".to_owned()
}

fn default_exit_side() -> String {
    "S".to_owned()
}

/// `rule = "TagCondition"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TagConditionConfig {
    /// The output column.
    pub name: String,
    /// A boolean SQL expression over the row's columns.
    pub condition: String,
}

/// `rule = "TagRunning"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TagRunningConfig {
    /// The output column.
    pub name: String,
    /// A SQL expression over `prev` (the previous row's value) and the row's columns.
    pub update: String,
    /// The value before the first row of each symbol and date: an integer (default 0),
    /// a float or a boolean.
    #[serde(default)]
    pub initial: Option<toml::Value>,
}

/// `[aggregate]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The group-by columns.
    pub group_by: Vec<String>,
    /// Output name = metric expression, in output order.
    pub metrics: toml::Table,
}

/// The pipeline file, as written. Required sections are options here so that a missing
/// one gets a message saying what to add, not serde's "missing field" at line 1.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    input: Option<InputConfig>,
    #[serde(default)]
    output: Option<OutputConfig>,
    #[serde(default)]
    columns: toml::Table,
    #[serde(default)]
    cast: Vec<CastConfig>,
    #[serde(default)]
    derive: toml::Table,
    #[serde(default)]
    time: Option<TimeConfig>,
    #[serde(default)]
    forward_return: Option<ForwardReturnConfig>,
    #[serde(default)]
    enrich: Vec<EnrichConfig>,
    #[serde(default)]
    bin: toml::Table,
    #[serde(default)]
    aggregate: Option<AggregateConfig>,
}

fn required_section<T>(section: Option<T>, name: &str, example: &str) -> Result<T, ConfigError> {
    section.ok_or_else(|| {
        invalid(format!(
            "missing section [{name}]; add it with its required keys, e.g. {example}"
        ))
    })
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
    pub forward_return: Option<(String, Vec<i64>)>,
    /// The enrich stage's rules, in order (`[[enrich]]`, then rules added with
    /// [`Pipeline::with_rule`]).
    pub enrich: Vec<Arc<dyn EnrichRule>>,
    /// Binned columns.
    pub bins: Vec<BinSpec>,
    /// The grouped metrics.
    pub aggregate: AggregateSpec,
    /// The configuration's text, as read (empty for a pipeline built from Rust).
    pub source: String,
}

/// A value that must be a string (a column name or an expression); a scalar written
/// without quotes gets the quoted form as the fix.
fn string_value(table: &str, key: &str, value: &toml::Value) -> Result<String, ConfigError> {
    value.as_str().map(str::to_owned).ok_or_else(|| {
        let fix = match value {
            toml::Value::Array(_) | toml::Value::Table(_) => String::new(),
            scalar => format!("; write it in quotes: {key} = \"{scalar}\""),
        };
        invalid(format!(
            "[{table}] {key}: expected a string, got {} {value}{fix}",
            value.type_str()
        ))
    })
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

    /// Parses and validates a pipeline from TOML text.
    pub fn from_toml(text: &str) -> Result<Pipeline, ConfigError> {
        let file: PipelineFile = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: None,
            message: e.to_string().trim_end().to_owned(),
        })?;
        let input = required_section(
            file.input,
            "input",
            "dir = \"data\" and pattern = \"alpha_{date}.feather\"",
        )?;
        let output = required_section(file.output, "output", "dir = \"out\"")?;
        let time = required_section(file.time, "time", "market = \"CN\"")?;
        let aggregate = required_section(
            file.aggregate,
            "aggregate",
            "group_by = [\"orderSide\"] and [aggregate.metrics] count = \"count()\"",
        )?;
        let mut semantic = Vec::new();
        for (key, value) in &file.columns {
            semantic.push((key.clone(), string_value("columns", key, value)?));
        }
        let resolve = |name: &str| {
            semantic
                .iter()
                .find(|(k, _)| k == name)
                .map_or_else(|| name.to_owned(), |(_, v)| v.clone())
        };
        let required = |key: &str, example: &str, alternative: &str| {
            semantic.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).ok_or_else(|| {
                invalid(format!("[columns] must name the {key} column, e.g. {key} = \"{example}\"{alternative}"))
            })
        };
        let symbol = required("symbol", "ukey", "")?;
        let timestamp = match &time.column {
            Some(column) => resolve(column),
            None => required("timestamp", "ticktime", " (or set column in [time])")?,
        };
        if !input.pattern.contains("{date}") {
            return Err(invalid(format!(
                "[input] pattern: '{}' has no {{date}}; put {{date}} where the file name has \
                 the date (YYYYMMDD), e.g. pattern = \"alpha_{{date}}.feather\"",
                input.pattern
            )));
        }
        let mut casts = Vec::new();
        for cast in &file.cast {
            let column = &cast.column;
            if !cast.to.eq_ignore_ascii_case("int64") {
                return Err(invalid(format!(
                    "[[cast]] column '{column}': unsupported to = \"{}\"; the only supported type is \"int64\"",
                    cast.to
                )));
            }
            if !(cast.tolerance >= 0.0 && cast.tolerance < 0.5) {
                return Err(invalid(format!(
                    "[[cast]] column '{column}': tolerance {} must be at least 0 and below 0.5 \
                     (the default is 1e-6)",
                    cast.tolerance
                )));
            }
            casts.push(IntegerCast {
                column: resolve(column),
                tolerance: cast.tolerance,
                on_error: cast.on_error,
            });
        }
        let mut derive = Vec::new();
        for (name, value) in &file.derive {
            let text = string_value("derive", name, value)?;
            let expr = Expr::parse(&text).map_err(|e| invalid(format!("[derive] {name}: {e}")))?;
            derive.push((name.clone(), expr));
        }
        let forward_return = match &file.forward_return {
            Some(config) => {
                let wrong = |problem: String| {
                    invalid(format!(
                        "[forward_return] horizons: {problem}; horizons are seconds of trading time, \
                         e.g. horizons = [60, 300]"
                    ))
                };
                if config.horizons.is_empty() {
                    return Err(wrong("the list is empty".into()));
                }
                for (i, h) in config.horizons.iter().enumerate() {
                    if *h <= 0 {
                        return Err(wrong(format!("{h} is not positive")));
                    }
                    if config.horizons[..i].contains(h) {
                        return Err(wrong(format!("{h} is listed twice")));
                    }
                }
                Some((resolve(&config.price), config.horizons.clone()))
            }
            None => None,
        };
        let mut enrich: Vec<Arc<dyn EnrichRule>> = Vec::new();
        for (i, rule) in file.enrich.iter().enumerate() {
            let at = |what: &str| format!("[[enrich]] #{} ({what})", i + 1);
            enrich.push(match rule {
                EnrichConfig::FifoMatch(config) => {
                    let mut spec = FifoSpec::new(resolve(&config.side), resolve(&config.qty));
                    spec.price = config.price.as_deref().map(&resolve);
                    spec.entry_side = config.entry_side.clone();
                    spec.exit_side = config.exit_side.clone();
                    let rule = FifoMatch::new(spec)
                        .map_err(|e| invalid(format!("{}: {e}", at("FIFOMatch"))))?;
                    Arc::new(rule)
                }
                EnrichConfig::TagCondition(config) => {
                    let condition = Expr::parse(&config.condition)
                        .map_err(|e| invalid(format!("{} condition: {e}", at("TagCondition"))))?;
                    Arc::new(TagCondition::new(&config.name, condition))
                }
                EnrichConfig::TagRunning(config) => {
                    let update = Expr::parse(&config.update)
                        .map_err(|e| invalid(format!("{} update: {e}", at("TagRunning"))))?;
                    let initial = match &config.initial {
                        None => Scalar::Int(0),
                        Some(toml::Value::Integer(i)) => Scalar::Int(*i),
                        Some(toml::Value::Float(f)) => Scalar::Float(*f),
                        Some(toml::Value::Boolean(b)) => Scalar::Bool(*b),
                        Some(other) => {
                            return Err(invalid(format!(
                                "{} initial: expected a number or a boolean, got {} {other}; \
                                 e.g. initial = 0",
                                at("TagRunning"),
                                other.type_str()
                            )));
                        }
                    };
                    Arc::new(TagRunning::new(&config.name, update, initial))
                }
            });
        }
        let mut bins = Vec::new();
        for (column, value) in &file.bin {
            let width = value
                .as_float()
                .or_else(|| value.as_integer().map(|i| i as f64));
            let width = width.filter(|w| w.is_finite() && *w > 0.0).ok_or_else(|| {
                invalid(format!(
                    "[bin] {column}: the width must be a positive number, got {value}; \
                     e.g. {column} = 1e-4"
                ))
            })?;
            bins.push(BinSpec {
                column: resolve(column),
                width,
            });
        }
        if aggregate.metrics.is_empty() {
            return Err(invalid(
                "[aggregate.metrics] is empty; define at least one metric, e.g. count = \"count()\"",
            ));
        }
        let group_by: Vec<String> = aggregate.group_by.iter().map(|c| resolve(c)).collect();
        let mut metrics = Vec::new();
        for (name, value) in &aggregate.metrics {
            let text = string_value("aggregate.metrics", name, value)?;
            let metric = MetricExpr::parse(&text)
                .map_err(|e| invalid(format!("[aggregate.metrics] {name}: {e}")))?;
            if group_by.contains(name) {
                return Err(invalid(format!(
                    "[aggregate.metrics] {name}: the name is also a group_by column; rename the metric"
                )));
            }
            metrics.push((name.clone(), metric));
        }
        Ok(Pipeline {
            input,
            output,
            symbol,
            timestamp,
            casts,
            derive,
            market: time.market.build()?,
            time_format: time.format,
            out_of_session: time.out_of_session,
            forward_return,
            enrich,
            bins,
            aggregate: AggregateSpec { group_by, metrics },
            source: text.to_owned(),
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
            ..self.clone()
        };
        let mut hasher = sha2::Sha256::new();
        hasher.update(format!("{parsed:?}").as_bytes());
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

    /// Splits the derived columns by where they are computed: each at the earliest of
    /// three points where every column it uses exists. [`Tier::Input`]: before
    /// `parse_time`, from input columns, `row_id` and earlier such derived columns.
    /// [`Tier::Time`]: right after `parse_time`, which adds `elapsed_ms` and
    /// `elapsed_seconds`. [`Tier::Enriched`]: after forward returns and the enrich
    /// stage, before `bin`. A column that uses a column no stage has goes in the first,
    /// where checking it names the unknown column.
    fn split_derive(&self, input: &Schema) -> [Vec<(String, Expr)>; 3] {
        let mut available: [BTreeSet<String>; 3] = Default::default();
        available[0] = input.fields().iter().map(|f| f.name().clone()).collect();
        available[0].insert(ROW_ID.to_owned());
        available[1] = available[0].clone();
        available[1].extend([ELAPSED_MS.to_owned(), ELAPSED_SECONDS.to_owned()]);
        available[2] = available[1].clone();
        if let Some((_, horizons)) = &self.forward_return {
            available[2].extend(horizons.iter().map(|h| ForwardReturnSpec::output(*h)));
        }
        available[2].extend(self.enrich.iter().flat_map(|r| r.output_names()));
        let mut tiers: [Vec<(String, Expr)>; 3] = Default::default();
        for (name, expr) in &self.derive {
            let columns = expr.columns();
            let tier = (0..3)
                .find(|t| columns.iter().all(|c| available[*t].contains(c)))
                .unwrap_or(0);
            for later in &mut available[tier..] {
                later.insert(name.clone());
            }
            tiers[tier].push((name.clone(), expr.clone()));
        }
        tiers
    }

    /// Binds the pipeline to the schema of an input file: checks every column and
    /// expression, and plans which columns to read and keep.
    ///
    /// The plan walks the stages backwards from the aggregation: each stage needs what
    /// the next needs, minus the columns it adds, plus the columns it reads. Derived
    /// columns nothing needs are not computed, and casts of unneeded columns not done.
    pub fn bind(&self, input: &Schema) -> Result<BoundPipeline, ConfigError> {
        let [early, timed, late] = self.split_derive(input);
        let checked = self.check(input, [&early, &timed, &late])?;
        let need = |c: &str, list: &mut Vec<String>| {
            if !list.iter().any(|x| x == c) {
                list.push(c.to_owned());
            }
        };
        let remove = |c: &str, list: &mut Vec<String>| list.retain(|x| x != c);
        // The derived columns of `tier` that `list` needs, in order; `list` then needs
        // their inputs instead of them.
        let derived = |tier: &[(String, Expr)], list: &mut Vec<String>| {
            let mut needed = Vec::new();
            for (name, expr) in tier.iter().rev() {
                if list.contains(name) {
                    remove(name, list);
                    for c in expr.columns() {
                        need(&c, list);
                    }
                    needed.insert(0, (name.clone(), expr.clone()));
                }
            }
            needed
        };

        // Needed by the aggregation, then before bin.
        let mut before_bin: Vec<String> = Vec::new();
        for column in &self.aggregate.group_by {
            need(column, &mut before_bin);
        }
        for (_, metric) in &self.aggregate.metrics {
            for call in metric.calls() {
                if let Some(c) = &call.column {
                    need(c, &mut before_bin);
                }
            }
        }
        for bin in self.bins.iter().rev() {
            remove(&bin.output(), &mut before_bin);
            need(&bin.column, &mut before_bin);
        }
        // After the enrich stage, before the late derived columns.
        let mut after_enrich = before_bin.clone();
        let late_needed = derived(&late, &mut after_enrich);
        // Before the enrich stage and forward returns, which need the event columns.
        let mut before_keyed = after_enrich.clone();
        for (rule, outputs) in self.enrich.iter().zip(&checked.rule_outputs).rev() {
            for output in outputs {
                remove(output, &mut before_keyed);
            }
            for input in rule.inputs() {
                need(&input, &mut before_keyed);
            }
        }
        // Horizons whose returns nothing uses are not computed.
        let mut horizons_needed = Vec::new();
        if let Some((price, horizons)) = &self.forward_return {
            for h in horizons {
                if before_keyed.contains(&ForwardReturnSpec::output(*h)) {
                    horizons_needed.push(*h);
                }
                remove(&ForwardReturnSpec::output(*h), &mut before_keyed);
            }
            if !horizons_needed.is_empty() {
                need(price, &mut before_keyed);
            }
        }
        for c in [self.symbol.as_str(), ROW_ID, ELAPSED_MS] {
            need(c, &mut before_keyed);
        }
        // After parse_time, before the derived columns that use its output.
        let mut after_time = before_keyed.clone();
        let timed_needed = derived(&timed, &mut after_time);
        for c in [self.symbol.as_str(), ROW_ID, ELAPSED_MS] {
            need(c, &mut after_time);
        }
        // Before parse_time, then the early derived columns and casts, then the input.
        let mut before_time = after_time.clone();
        remove(ELAPSED_MS, &mut before_time);
        remove(ELAPSED_SECONDS, &mut before_time);
        need(&self.timestamp, &mut before_time);
        let mut wanted = before_time.clone();
        let early_needed = derived(&early, &mut wanted);
        let casts: Vec<IntegerCast> = self
            .casts
            .iter()
            .filter(|c| wanted.contains(&c.column))
            .cloned()
            .collect();
        let mut read: Vec<String> = Vec::new();
        for cast in &casts {
            need(&cast.column, &mut read);
        }
        for c in &wanted {
            if c != ROW_ID {
                need(c, &mut read);
            }
        }
        // `check` found every one of them; this guards the planning above.
        let input_fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        // Later dates' files may hold these columns in other types of the same kind
        // (see `check_schema`); the first stage converts them to these.
        let mut input_types = Vec::with_capacity(read.len());
        for c in &read {
            let data_type = field(&input_fields, c, "unknown column")?.data_type();
            input_types.push((c.clone(), data_type.clone()));
        }
        // The columns after the early derived columns, in their order there.
        let mut keep = read.clone();
        for name in [ROW_ID.to_owned()]
            .into_iter()
            .chain(early_needed.iter().map(|(n, _)| n.clone()))
        {
            need(&name, &mut keep);
        }
        keep.retain(|c| before_time.contains(c));
        let mut time_keep: Vec<String> = keep
            .iter()
            .filter(|c| after_time.contains(c))
            .cloned()
            .collect();
        need(ELAPSED_MS, &mut time_keep);
        if after_time.iter().any(|c| c == ELAPSED_SECONDS) {
            need(ELAPSED_SECONDS, &mut time_keep);
        }
        let derive_stage = |columns: Vec<(String, Expr)>, keep: Vec<String>| {
            (!columns.is_empty()).then(|| DeriveSpec {
                input_types: Vec::new(),
                casts: Vec::new(),
                columns,
                keep: Some(keep),
            })
        };

        let returns = self.forward_return.as_ref().and_then(|(price, _)| {
            let spec = ForwardReturnSpec {
                symbol: self.symbol.clone(),
                price: price.clone(),
                horizons_s: horizons_needed.clone(),
                day_ms: self.market.clock.total_ms(),
            };
            (!spec.horizons_s.is_empty()).then(|| spec.rule())
        });

        Ok(BoundPipeline {
            pipeline: self.clone(),
            read,
            input_schema: Arc::new(input.clone()),
            derive: DeriveSpec {
                input_types,
                casts,
                columns: early_needed,
                keep: Some(keep),
            },
            parse_time: ParseTimeSpec {
                column: self.timestamp.clone(),
                format: self.time_format,
                clock: self.market.clock.clone(),
                policy: self.out_of_session,
                market: self.market.name.clone(),
                keep: Some(time_keep),
            },
            timed_derive: derive_stage(timed_needed, before_keyed),
            keyed: (returns.is_some() || !self.enrich.is_empty()).then(|| EnrichSpec {
                symbol: self.symbol.clone(),
                // Forward returns first, on the original rows; then the enrich rules.
                rules: returns
                    .into_iter()
                    .chain(self.enrich.iter().cloned())
                    .collect(),
                keep: Some(after_enrich.clone()),
            }),
            late_derive: derive_stage(late_needed, before_bin),
            plan: checked.plan,
        })
    }

    /// Walks the stages over the whole input schema, checking each column and expression
    /// where it is used against the columns available at that point. Returns the
    /// aggregation plan and the columns each enrich rule adds. Errors start with the
    /// section at fault.
    fn check(
        &self,
        input: &Schema,
        [early, timed, late]: [&[(String, Expr)]; 3],
    ) -> Result<Checked, ConfigError> {
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for cast in &self.casts {
            let column = field(&fields, &cast.column, "[[cast]] unknown column")?;
            if !column.data_type().is_numeric() {
                return Err(invalid(format!(
                    "[[cast]] column '{}' has type {}; only numeric columns can be cast to int64",
                    cast.column,
                    column.data_type()
                )));
            }
            set(&mut fields, Field::new(&cast.column, DataType::Int64, true));
        }
        fields.push(Field::new(ROW_ID, DataType::UInt64, false));
        let derive_columns = |derived: &[(String, Expr)], fields: &mut Vec<Field>| {
            for (name, expr) in derived {
                let data_type = expr
                    .check(&Schema::new(fields.clone()))
                    .map_err(|e| invalid(format!("[derive] {name}: {e}")))?;
                set(fields, Field::new(name, data_type, true));
            }
            Ok::<(), ConfigError>(())
        };
        derive_columns(early, &mut fields)?;

        let symbol_type =
            field(&fields, &self.symbol, "[columns] unknown symbol column")?.data_type();
        if !(symbol_type.is_integer()
            || matches!(
                symbol_type,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Dictionary(_, _)
            ))
        {
            let fix = if symbol_type.is_floating() {
                format!(
                    "; cast it with [[cast]] column = \"{}\" and to = \"int64\"",
                    self.symbol
                )
            } else {
                String::new()
            };
            return Err(invalid(format!(
                "[columns] symbol column '{}' has type {symbol_type}, but symbols must be integers or strings{fix}",
                self.symbol
            )));
        }
        let timestamp_type =
            field(&fields, &self.timestamp, "[time] unknown timestamp column")?.data_type();
        let any_date = chrono::NaiveDate::from_ymd_opt(2024, 1, 2).expect("a valid date");
        let empty = arrow::array::new_empty_array(timestamp_type);
        elapsed_ms(
            &empty,
            self.time_format,
            &self.market.clock,
            any_date,
            self.out_of_session,
        )
        .map_err(|e| invalid(format!("[time] timestamp column '{}': {e}", self.timestamp)))?;
        set(&mut fields, Field::new(ELAPSED_MS, DataType::Int64, false));
        set(
            &mut fields,
            Field::new(ELAPSED_SECONDS, DataType::Int64, false),
        );
        derive_columns(timed, &mut fields)?;

        if let Some((price, horizons)) = &self.forward_return {
            if late.iter().any(|(n, _)| n == price) {
                return Err(invalid(format!(
                    "[forward_return] price column '{price}' is a derived column that uses a \
                     column added after forward returns are computed (they use the original \
                     rows, before [[enrich]]); derive the price from input columns only"
                )));
            }
            let price_type =
                field(&fields, price, "[forward_return] unknown price column")?.data_type();
            if !price_type.is_numeric() {
                return Err(invalid(format!(
                    "[forward_return] price column '{price}' has type {price_type}; it must be numeric"
                )));
            }
            for h in horizons {
                set(
                    &mut fields,
                    Field::new(ForwardReturnSpec::output(*h), DataType::Float64, true),
                );
            }
        }
        let mut rule_outputs = Vec::with_capacity(self.enrich.len());
        for (i, rule) in self.enrich.iter().enumerate() {
            let outputs = checked_outputs(rule.as_ref(), &fields)
                .map_err(|e| invalid(format!("[[enrich]] #{}: {e}", i + 1)))?;
            rule_outputs.push(outputs.iter().map(|f| f.name().clone()).collect());
            for output in outputs {
                set(&mut fields, output);
            }
        }
        derive_columns(late, &mut fields)?;
        for bin in &self.bins {
            let bin_type = field(&fields, &bin.column, "[bin] unknown column")?.data_type();
            if !bin_type.is_numeric() {
                return Err(invalid(format!(
                    "[bin] column '{}' has type {bin_type}; it must be numeric",
                    bin.column
                )));
            }
            set(&mut fields, Field::new(bin.output(), DataType::Int64, true));
        }
        let plan = AggregatePlan::new(&self.aggregate, &Schema::new(fields)).map_err(|e| {
            // The section names the stage: its problem, without the "aggregate: " prefix.
            invalid(format!("[aggregate] {}", e.problem()))
        })?;
        Ok(Checked { plan, rule_outputs })
    }
}

/// What [`Pipeline::check`] found.
struct Checked {
    plan: AggregatePlan,
    /// The names of the columns each enrich rule adds.
    rule_outputs: Vec<Vec<String>>,
}

/// A pipeline bound to an input schema: what to read and every operator's settings.
#[derive(Clone, Debug)]
pub struct BoundPipeline {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// The input columns to read.
    pub read: Vec<String>,
    /// The schema it was bound to.
    pub input_schema: SchemaRef,
    /// Casts, derived columns and projection.
    pub derive: DeriveSpec,
    /// Time parsing.
    pub parse_time: ParseTimeSpec,
    /// The derived columns computed right after parse_time (they use `elapsed_ms` or
    /// `elapsed_seconds`), if any.
    pub timed_derive: Option<DeriveSpec>,
    /// The keyed per-symbol stage: forward returns (on the original rows), then the
    /// enrich rules; `None` when the pipeline has neither.
    pub keyed: Option<EnrichSpec>,
    /// The derived columns computed after the enrich stage, if any.
    pub late_derive: Option<DeriveSpec>,
    /// The aggregation plan.
    pub plan: AggregatePlan,
}

impl BoundPipeline {
    /// The schema of every partial.
    pub fn output_schema(&self) -> SchemaRef {
        self.plan.output_schema()
    }

    /// Checks that another date's file schema is compatible with the bound one: every
    /// column read exists, with a type of the same kind, an integer type where the bound
    /// type is a float, or Arrow's Null type (a column without values); the `derive`
    /// stage converts it to the bound type without changing a value. The error names the
    /// column and both types, or suggests a column and lists those available.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), String> {
        for column in &self.read {
            let expected = self
                .input_schema
                .field_with_name(column)
                .expect("bound columns exist")
                .data_type();
            let Ok(field) = schema.field_with_name(column) else {
                let hint = column_hint(column, schema.fields().iter().map(|f| f.name().as_str()));
                return Err(format!(
                    "column '{column}' is missing, though the first date has it; {hint}"
                ));
            };
            let kind = |t: &DataType| {
                if self.pipeline.casts.iter().any(|c| c.column == *column) && t.is_numeric() {
                    "number"
                } else if t.is_integer() {
                    "integer"
                } else if t.is_floating() {
                    "float"
                } else if matches!(
                    t,
                    DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Dictionary(_, _)
                ) {
                    "string"
                } else {
                    "other"
                }
            };
            // A column of the Null type has no values: nulls of any type. Integers widen
            // to floats (the `derive` stage checks that each value is held exactly).
            let compatible = field.data_type() == expected
                || field.data_type() == &DataType::Null
                || kind(field.data_type()) == kind(expected)
                || (field.data_type().is_integer() && expected.is_floating());
            if !compatible {
                let fix = if field.data_type().is_numeric() && expected.is_numeric() {
                    format!(
                        "make the type consistent across dates, or cast the column with [[cast]] column = \"{column}\""
                    )
                } else {
                    "make the type consistent across dates".to_owned()
                };
                return Err(format!(
                    "column '{column}' has type {} here but {expected} on the first date; {fix}",
                    field.data_type()
                ));
            }
        }
        Ok(())
    }
}

/// The schema a run over several dates binds to: the columns of `first`, in its order,
/// each with the narrowest type that holds its type in `first` and in every one of
/// `others` (see [`widen`]); a column whose types have no common type keeps `first`'s,
/// and the dates that differ fail with [`BoundPipeline::check_schema`]'s message.
///
/// ```
/// use arrow::datatypes::{DataType, Field, Schema};
/// use vizflow::config::widest_schema;
///
/// let schema = |qty| Schema::new(vec![Field::new("qty", qty, true)]);
/// let widest = widest_schema(&schema(DataType::Int32), &[schema(DataType::Int64)]);
/// assert_eq!(widest.field(0).data_type(), &DataType::Int64);
/// ```
pub fn widest_schema(first: &Schema, others: &[Schema]) -> Schema {
    let fields: Vec<Field> = first
        .fields()
        .iter()
        .map(|field| {
            let data_type = others
                .iter()
                .filter_map(|schema| schema.field_with_name(field.name()).ok())
                .try_fold(field.data_type().clone(), |widest, other| {
                    widen(&widest, other.data_type())
                });
            let data_type = data_type.unwrap_or_else(|| field.data_type().clone());
            field.as_ref().clone().with_data_type(data_type)
        })
        .collect();
    Schema::new_with_metadata(fields, first.metadata().clone())
}

/// The narrowest type that holds every value of both `a` and `b`, if they have one:
/// the wider of two integer or two float types (a signed integer wide enough for an
/// unsigned one, at most Int64), Float64 for an integer and a float, Utf8 (LargeUtf8
/// when either is) for two kinds of strings (a dictionary of strings included), and the
/// other type beside Arrow's Null type. Float64 cannot hold an integer beyond 2^53 and
/// Int64 no UInt64 beyond 2^63 - 1: such a value fails its date, naming it.
pub fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    fn string_kind(t: &DataType) -> bool {
        match t {
            Utf8 | LargeUtf8 | Utf8View => true,
            Dictionary(_, values) => string_kind(values),
            _ => false,
        }
    }
    // (bits, signed) of an integer type.
    fn integer(t: &DataType) -> (u32, bool) {
        match t {
            Int8 => (8, true),
            Int16 => (16, true),
            Int32 => (32, true),
            UInt8 => (8, false),
            UInt16 => (16, false),
            UInt32 => (32, false),
            UInt64 => (64, false),
            _ => (64, true),
        }
    }
    Some(match (a, b) {
        _ if a == b => a.clone(),
        (Null, other) | (other, Null) => other.clone(),
        _ if a.is_integer() && b.is_integer() => {
            let ((a_bits, a_signed), (b_bits, b_signed)) = (integer(a), integer(b));
            let bits = match (a_signed, b_signed) {
                (true, true) | (false, false) => a_bits.max(b_bits),
                // A signed type wider than the unsigned one.
                (true, false) => a_bits.max(2 * b_bits).min(64),
                (false, true) => b_bits.max(2 * a_bits).min(64),
            };
            match (a_signed || b_signed, bits) {
                (true, 8) => Int8,
                (true, 16) => Int16,
                (true, 32) => Int32,
                (true, _) => Int64,
                (false, 8) => UInt8,
                (false, 16) => UInt16,
                (false, 32) => UInt32,
                (false, _) => UInt64,
            }
        }
        _ if a.is_floating() && b.is_floating() => match (a, b) {
            (Float64, _) | (_, Float64) => Float64,
            _ => Float32,
        },
        _ if (a.is_integer() || a.is_floating()) && (b.is_integer() || b.is_floating()) => Float64,
        _ if string_kind(a) && string_kind(b) => match (a, b) {
            (LargeUtf8, _) | (_, LargeUtf8) => LargeUtf8,
            _ => Utf8,
        },
        _ => return None,
    })
}
