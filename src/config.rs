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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use vizflow_operators::aggregate::{AggregatePlan, AggregateSpec};
use vizflow_operators::bin::BinSpec;
use vizflow_operators::derive::{CastFailure, DeriveSpec, IntegerCast};
use vizflow_operators::expr::{Expr, MetricExpr, closest};
use vizflow_operators::forward_return::{ELAPSED_MS, ForwardReturnSpec, ROW_ID};
use vizflow_operators::parse_time::{ELAPSED_SECONDS, OutOfSession, ParseTimeSpec, TimestampFormat};

use crate::market::{Market, MarketConfig};

/// A configuration error: what is wrong, where, and what is available.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown or missing keys (the message has the line).
    #[error("invalid pipeline{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Toml {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// The TOML parser's message, with line, column and the offending text.
        message: String,
    },
    /// A value is wrong: the key, the value and what is expected.
    #[error("invalid pipeline: {0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
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
    /// Rows per batch inside the engine.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

fn default_batch_rows() -> usize {
    65_536
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
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MarketChoice {
    /// A preset.
    Preset(String),
    /// A custom market (or a preset with other sessions).
    Custom(MarketConfig),
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

/// `[aggregate]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The group-by columns.
    pub group_by: Vec<String>,
    /// Output name = metric expression, in output order.
    pub metrics: toml::Table,
}

/// The pipeline file, as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    input: InputConfig,
    output: OutputConfig,
    #[serde(default)]
    columns: toml::Table,
    #[serde(default)]
    cast: Vec<CastConfig>,
    #[serde(default)]
    derive: toml::Table,
    time: TimeConfig,
    #[serde(default)]
    forward_return: Option<ForwardReturnConfig>,
    #[serde(default)]
    bin: toml::Table,
    aggregate: AggregateConfig,
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
    /// Derived columns, in order.
    pub derive: Vec<(String, Expr)>,
    /// The market.
    pub market: Market,
    /// The timestamp encoding.
    pub time_format: TimestampFormat,
    /// The out-of-session policy.
    pub out_of_session: OutOfSession,
    /// Forward returns: price column and horizons.
    pub forward_return: Option<(String, Vec<i64>)>,
    /// Binned columns.
    pub bins: Vec<BinSpec>,
    /// The grouped metrics.
    pub aggregate: AggregateSpec,
    /// The configuration's canonical text, hashed into every partial.
    pub source: String,
}

fn string_value(table: &str, key: &str, value: &toml::Value) -> Result<String, ConfigError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(format!("[{table}] {key}: expected a string, got {value}")))
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn from_file(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Toml { message, .. } => ConfigError::Toml { path: Some(path.to_owned()), message },
            other => other,
        })
    }

    /// Parses and validates a pipeline from TOML text.
    pub fn from_toml(text: &str) -> Result<Pipeline, ConfigError> {
        let file: PipelineFile =
            toml::from_str(text).map_err(|e| ConfigError::Toml { path: None, message: e.to_string().trim_end().to_owned() })?;
        let mut semantic = Vec::new();
        for (key, value) in &file.columns {
            semantic.push((key.clone(), string_value("columns", key, value)?));
        }
        let resolve = |name: &str| {
            semantic.iter().find(|(k, _)| k == name).map_or_else(|| name.to_owned(), |(_, v)| v.clone())
        };
        let required = |key: &str| {
            semantic.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).ok_or_else(|| {
                invalid(format!("[columns] must name the '{key}' column, e.g. {key} = \"{}\"", if key == "symbol" { "ukey" } else { "ticktime" }))
            })
        };
        let symbol = required("symbol")?;
        let timestamp = match &file.time.column {
            Some(column) => resolve(column),
            None => required("timestamp")?,
        };
        if !file.input.pattern.contains("{date}") {
            return Err(invalid(format!(
                "[input] pattern '{}' must contain {{date}}, e.g. \"alpha_{{date}}.feather\"",
                file.input.pattern
            )));
        }
        if file.input.batch_rows == 0 {
            return Err(invalid("[input] batch_rows must be positive"));
        }
        let mut casts = Vec::new();
        for cast in &file.cast {
            if !cast.to.eq_ignore_ascii_case("int64") {
                return Err(invalid(format!("[[cast]] column '{}': unsupported type '{}'; supported: int64", cast.column, cast.to)));
            }
            if !(cast.tolerance >= 0.0 && cast.tolerance < 0.5) {
                return Err(invalid(format!("[[cast]] column '{}': tolerance {} must be in [0, 0.5)", cast.column, cast.tolerance)));
            }
            casts.push(IntegerCast { column: resolve(&cast.column), tolerance: cast.tolerance, on_error: cast.on_error });
        }
        let mut derive = Vec::new();
        for (name, value) in &file.derive {
            let text = string_value("derive", name, value)?;
            let expr = Expr::parse(&text).map_err(|e| invalid(format!("[derive] {name}: {e}")))?;
            derive.push((name.clone(), expr));
        }
        let forward_return = match &file.forward_return {
            Some(config) => {
                if config.horizons.is_empty() || config.horizons.iter().any(|h| *h <= 0) {
                    return Err(invalid(format!(
                        "[forward_return] horizons must be positive seconds, e.g. [60, 300], got {:?}",
                        config.horizons
                    )));
                }
                Some((resolve(&config.price), config.horizons.clone()))
            }
            None => None,
        };
        let mut bins = Vec::new();
        for (column, value) in &file.bin {
            let width = value.as_float().or_else(|| value.as_integer().map(|i| i as f64)).filter(|w| w.is_finite() && *w > 0.0);
            let width = width.ok_or_else(|| invalid(format!("[bin] {column}: the width must be a positive number, got {value}")))?;
            bins.push(BinSpec { column: resolve(column), width });
        }
        if file.aggregate.metrics.is_empty() {
            return Err(invalid("[aggregate] metrics: define at least one metric, e.g. count = \"count()\""));
        }
        let mut metrics = Vec::new();
        for (name, value) in &file.aggregate.metrics {
            let text = string_value("aggregate.metrics", name, value)?;
            let metric = MetricExpr::parse(&text).map_err(|e| invalid(format!("[aggregate.metrics] {name}: {e}")))?;
            metrics.push((name.clone(), metric));
        }
        let group_by = file.aggregate.group_by.iter().map(|c| resolve(c)).collect();
        Ok(Pipeline {
            input: file.input,
            output: file.output,
            symbol,
            timestamp,
            casts,
            derive,
            market: file.time.market.build()?,
            time_format: file.time.format,
            out_of_session: file.time.out_of_session,
            forward_return,
            bins,
            aggregate: AggregateSpec { group_by, metrics },
            source: text.to_owned(),
        })
    }

    /// A hex digest of the pipeline's text, stored in every partial.
    pub fn config_hash(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.source.as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// Binds the pipeline to the schema of an input file: checks every column and
    /// expression, and plans which columns to read and keep.
    pub fn bind(&self, input: &Schema) -> Result<BoundPipeline, ConfigError> {
        let produced: BTreeSet<String> = self
            .derive
            .iter()
            .map(|(name, _)| name.clone())
            .chain([ELAPSED_MS.to_owned(), ELAPSED_SECONDS.to_owned(), ROW_ID.to_owned()])
            .chain(self.forward_return.iter().flat_map(|(_, hs)| hs.iter().map(|h| ForwardReturnSpec::output(*h))))
            .chain(self.bins.iter().map(BinSpec::output))
            .collect();
        let available = |schema: &Schema| schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
        let missing = |name: &str, role: &str, schema: &Schema| {
            let hint = closest(name, schema.fields().iter().map(|f| f.name().as_str()))
                .map(|c| format!(" did you mean '{c}'?"))
                .unwrap_or_default();
            invalid(format!("{role} column '{name}' is not in the input.{hint} available columns: {}", available(schema)))
        };

        // The columns needed after the derive stage, then the input columns to read.
        let mut downstream: Vec<String> = vec![self.symbol.clone(), self.timestamp.clone(), ROW_ID.to_owned()];
        let need = |c: &str, list: &mut Vec<String>| {
            if !list.iter().any(|x| x == c) {
                list.push(c.to_owned());
            }
        };
        if let Some((price, _)) = &self.forward_return {
            need(price, &mut downstream);
        }
        for bin in &self.bins {
            need(&bin.column, &mut downstream);
        }
        for column in self.aggregate.group_by.iter() {
            need(column, &mut downstream);
        }
        for (_, metric) in &self.aggregate.metrics {
            for call in metric.calls() {
                if let Some(c) = &call.column {
                    need(c, &mut downstream);
                }
            }
        }
        downstream.retain(|c| !produced.contains(c) || self.derive.iter().any(|(n, _)| n == c) || c == ROW_ID);
        let mut read: Vec<String> = Vec::new();
        let mut wanted: Vec<String> = downstream.clone();
        for (name, expr) in self.derive.iter().rev() {
            if wanted.contains(name) {
                for c in expr.columns() {
                    need(&c, &mut wanted);
                }
            }
        }
        for cast in &self.casts {
            if wanted.contains(&cast.column) {
                need(&cast.column, &mut read);
            }
        }
        for c in &wanted {
            if !produced.contains(c) {
                need(c, &mut read);
            }
        }
        for c in &read {
            if input.field_with_name(c).is_err() {
                let role = if *c == self.symbol {
                    "symbol"
                } else if *c == self.timestamp {
                    "timestamp"
                } else {
                    "the pipeline's"
                };
                return Err(missing(c, role, input));
            }
        }

        // Walk the stages over the schema, checking types as we go.
        let mut fields: Vec<Field> = read.iter().map(|c| input.field_with_name(c).expect("checked above").clone()).collect();
        fields.push(Field::new(ROW_ID, DataType::UInt64, false));
        let set = |fields: &mut Vec<Field>, field: Field| match fields.iter().position(|f| f.name() == field.name()) {
            Some(i) => fields[i] = field,
            None => fields.push(field),
        };
        for cast in &self.casts {
            if wanted.contains(&cast.column) {
                set(&mut fields, Field::new(&cast.column, DataType::Int64, true));
            }
        }
        for (name, expr) in &self.derive {
            let data_type = expr
                .check(&Schema::new(fields.clone()))
                .map_err(|e| invalid(format!("[derive] {name}: {e}")))?;
            set(&mut fields, Field::new(name, data_type, true));
        }
        fields.retain(|f| downstream.contains(f.name()));
        let keep: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        set(&mut fields, Field::new(ELAPSED_MS, DataType::Int64, false));
        set(&mut fields, Field::new(ELAPSED_SECONDS, DataType::Int64, false));
        if let Some((price, horizons)) = &self.forward_return {
            let schema = Schema::new(fields.clone());
            let field = schema.field_with_name(price).map_err(|_| missing(price, "[forward_return] price", &schema))?;
            if !field.data_type().is_numeric() {
                return Err(invalid(format!("[forward_return] price column '{price}' has type {}; it must be numeric", field.data_type())));
            }
            for h in horizons {
                set(&mut fields, Field::new(ForwardReturnSpec::output(*h), DataType::Float64, true));
            }
        }
        for bin in &self.bins {
            let schema = Schema::new(fields.clone());
            let field = schema.field_with_name(&bin.column).map_err(|_| missing(&bin.column, "[bin]", &schema))?;
            if !field.data_type().is_numeric() {
                return Err(invalid(format!("[bin] column '{}' has type {}; it must be numeric", bin.column, field.data_type())));
            }
            set(&mut fields, Field::new(bin.output(), DataType::Int64, true));
        }
        let staged = Schema::new(fields);
        let plan = AggregatePlan::new(&self.aggregate, &staged).map_err(|e| invalid(format!("[aggregate] {e}")))?;
        let symbol_type = input.field_with_name(&self.symbol).expect("checked").data_type();
        if !(symbol_type.is_integer() || matches!(symbol_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Dictionary(_, _))) {
            return Err(invalid(format!("symbol column '{}' has type {symbol_type}; it must hold integers or strings", self.symbol)));
        }
        Ok(BoundPipeline {
            pipeline: self.clone(),
            read,
            input_schema: std::sync::Arc::new(input.clone()),
            derive: DeriveSpec { casts: self.casts.clone(), columns: self.derive.clone(), keep: Some(keep) },
            parse_time: ParseTimeSpec {
                column: self.timestamp.clone(),
                format: self.time_format,
                clock: self.market.clock.clone(),
                policy: self.out_of_session,
                market: self.market.name.clone(),
            },
            forward_return: self.forward_return.as_ref().map(|(price, horizons)| ForwardReturnSpec {
                symbol: self.symbol.clone(),
                price: price.clone(),
                horizons_s: horizons.clone(),
                day_ms: self.market.clock.total_ms(),
            }),
            plan,
        })
    }
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
    /// Forward returns, if any.
    pub forward_return: Option<ForwardReturnSpec>,
    /// The aggregation plan.
    pub plan: AggregatePlan,
}

impl BoundPipeline {
    /// The schema of every partial.
    pub fn output_schema(&self) -> SchemaRef {
        self.plan.output_schema()
    }

    /// Checks that another date's file schema is compatible with the bound one: every
    /// column read exists, with a type of the same kind. The error names the column and
    /// both types.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), String> {
        for column in &self.read {
            let expected = self.input_schema.field_with_name(column).expect("bound columns exist").data_type();
            let Ok(field) = schema.field_with_name(column) else {
                let hint = closest(column, schema.fields().iter().map(|f| f.name().as_str()))
                    .map(|c| format!(" did you mean '{c}'?"))
                    .unwrap_or_default();
                return Err(format!("column '{column}' is missing.{hint}"));
            };
            let kind = |t: &DataType| {
                if self.pipeline.casts.iter().any(|c| c.column == *column) && t.is_numeric() {
                    "number"
                } else if t.is_integer() {
                    "integer"
                } else if t.is_floating() {
                    "float"
                } else if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)) {
                    "string"
                } else {
                    "other"
                }
            };
            if field.data_type() != expected && kind(field.data_type()) != kind(expected) {
                return Err(format!(
                    "column '{column}' has type {} here but {expected} on the first date; \
                     make the type consistent across dates, or cast the column with [[cast]]",
                    field.data_type()
                ));
            }
        }
        Ok(())
    }
}
