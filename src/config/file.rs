//! The pipeline file as written: its sections as serde types, and
//! [`Pipeline::from_toml`], which parses them, resolves semantic column names, parses
//! expressions and checks every value that can be checked without the data.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use vizflow_operators::aggregate::AggregateSpec;
use vizflow_operators::bin::BinSpec;
use vizflow_operators::derive::{CastFailure, IntegerCast};
use vizflow_operators::enrich::EnrichRule;
use vizflow_operators::expr::{Expr, MetricExpr, Scalar};
use vizflow_operators::fifo::{FifoMatch, FifoSpec};
use vizflow_operators::forward_return::Horizon;
use vizflow_operators::parse_time::{OutOfSession, TimestampFormat};
use vizflow_operators::tag_condition::TagCondition;
use vizflow_operators::tag_running::TagRunning;
use vizflow_operators::watermark::{LatePolicy, StreamSpec};

use super::{ConfigError, Pipeline, invalid};
use crate::market::{Market, MarketConfig};

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

/// `[stream]`: a date streams through under a watermark (SEMANTICS.md, *Streaming*).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// How far a row may arrive behind the latest row of its date, in trading time:
    /// `"2s"`, `"500ms"`, `"1m"`.
    pub lateness: String,
    /// What happens to a row that arrives later than that: `"drop"` (the default:
    /// dropped, counted as `stream.late_rows` and listed) or `"error"` (the date fails).
    #[serde(default)]
    pub late: Option<String>,
    /// Provisional results at every multiple of this much trading time.
    #[serde(default)]
    pub emit_every: Option<String>,
}

impl StreamConfig {
    fn build(&self) -> Result<StreamSpec, ConfigError> {
        let lateness_ms = duration_ms("lateness", &self.lateness)?;
        let late = match self.late.as_deref() {
            None | Some("drop") => LatePolicy::Drop,
            Some("error") => LatePolicy::Error,
            Some(other) => {
                return Err(invalid(format!(
                    "[stream] late: unknown policy \"{other}\"; use \"drop\" (drop and count \
                     late rows) or \"error\" (fail the date)"
                )));
            }
        };
        let emit_every_ms = match &self.emit_every {
            Some(text) => {
                let ms = duration_ms("emit_every", text)?;
                // Provisional results are at whole seconds of trading time (the
                // dataflow's buckets).
                if ms == 0 || ms % 1000 != 0 {
                    return Err(invalid(format!(
                        "[stream] emit_every = \"{text}\": must be a positive whole number of \
                         seconds, e.g. emit_every = \"60s\""
                    )));
                }
                Some(ms)
            }
            None => None,
        };
        Ok(StreamSpec {
            lateness_ms,
            late,
            emit_every_ms,
        })
    }
}

/// A duration of trading time written as a number and a unit (`ms`, `s`, `m`, `h`),
/// e.g. `"2s"`, in whole milliseconds.
fn duration_ms(key: &str, text: &str) -> Result<i64, ConfigError> {
    let error = || {
        invalid(format!(
            "[stream] {key}: '{text}' is not a duration; write a number and a unit (ms, s, m \
             or h), e.g. {key} = \"2s\""
        ))
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(error)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| error())?;
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1e3,
        "m" | "min" => 60e3,
        "h" => 3_600e3,
        _ => return Err(error()),
    };
    let ms = number * scale;
    if !(0.0..=1e12).contains(&ms) || ms.fract() != 0.0 {
        return Err(invalid(format!(
            "[stream] {key}: '{text}' must be a whole number of milliseconds from 0 to 10^12"
        )));
    }
    Ok(ms as i64)
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
    /// Horizons: seconds of trading time, each adding `return_{h}`, or `"close"`
    /// (`return_close`, to the symbol's last row of the date).
    pub horizons: Vec<HorizonConfig>,
}

/// A horizon as written: seconds, or a name.
#[derive(Clone, Debug, PartialEq)]
pub enum HorizonConfig {
    /// Seconds of trading time.
    Seconds(i64),
    /// `"close"` (or a name not known, refused when the pipeline is built).
    Name(String),
}

impl<'de> Deserialize<'de> for HorizonConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HorizonConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds of trading time (an integer) or a name (\"close\", \"next_open\", \"next_close\")")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HorizonConfig, E> {
                Ok(HorizonConfig::Seconds(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HorizonConfig, E> {
                i64::try_from(v)
                    .map(HorizonConfig::Seconds)
                    .map_err(|_| E::custom(format!("{v} seconds is too long a horizon")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HorizonConfig, E> {
                Ok(HorizonConfig::Name(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
    #[serde(default)]
    stream: Option<StreamConfig>,
}

fn required_section<T>(section: Option<T>, name: &str, example: &str) -> Result<T, ConfigError> {
    section.ok_or_else(|| {
        invalid(format!(
            "missing section [{name}]; add it with its required keys, e.g. {example}"
        ))
    })
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

/// The `[columns]` table: semantic names (`symbol`, `timestamp`, ...) and the actual
/// columns they stand for.
struct SemanticColumns(Vec<(String, String)>);

impl SemanticColumns {
    fn new(table: &toml::Table) -> Result<SemanticColumns, ConfigError> {
        let mut names = Vec::new();
        for (key, value) in table {
            names.push((key.clone(), string_value("columns", key, value)?));
        }
        Ok(SemanticColumns(names))
    }

    /// The actual column `name` stands for: itself unless it is a semantic name.
    fn resolve(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or_else(|| name.to_owned(), |(_, v)| v.clone())
    }

    /// The column a required semantic name stands for.
    fn required(&self, key: &str, example: &str, alternative: &str) -> Result<String, ConfigError> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                invalid(format!(
                    "[columns] must name the {key} column, e.g. {key} = \"{example}\"{alternative}"
                ))
            })
    }
}

impl Pipeline {
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
        let columns = SemanticColumns::new(&file.columns)?;
        let symbol = columns.required("symbol", "ukey", "")?;
        let timestamp = match &time.column {
            Some(column) => columns.resolve(column),
            None => columns.required("timestamp", "ticktime", " (or set column in [time])")?,
        };
        if !input.pattern.contains("{date}") {
            return Err(invalid(format!(
                "[input] pattern: '{}' has no {{date}}; put {{date}} where the file name has \
                 the date (YYYYMMDD), e.g. pattern = \"alpha_{{date}}.feather\"",
                input.pattern
            )));
        }
        let casts = file
            .cast
            .iter()
            .map(|cast| cast.build(&columns))
            .collect::<Result<_, _>>()?;
        let mut derive = Vec::new();
        for (name, value) in &file.derive {
            let text = string_value("derive", name, value)?;
            let expr = Expr::parse(&text).map_err(|e| invalid(format!("[derive] {name}: {e}")))?;
            derive.push((name.clone(), expr));
        }
        let forward_return = match &file.forward_return {
            Some(config) => Some(config.build(&columns)?),
            None => None,
        };
        let enrich = file
            .enrich
            .iter()
            .enumerate()
            .map(|(i, rule)| rule.build(i, &columns))
            .collect::<Result<_, _>>()?;
        let mut bins = Vec::new();
        for (column, value) in &file.bin {
            bins.push(bin(column, value, &columns)?);
        }
        let aggregate = aggregate.build(&columns)?;
        let stream = match &file.stream {
            Some(config) => Some(config.build()?),
            None => None,
        };
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
            aggregate,
            stream,
            source: text.to_owned(),
        })
    }
}

impl CastConfig {
    fn build(&self, columns: &SemanticColumns) -> Result<IntegerCast, ConfigError> {
        let column = &self.column;
        if !self.to.eq_ignore_ascii_case("int64") {
            return Err(invalid(format!(
                "[[cast]] column '{column}': unsupported to = \"{}\"; the only supported type is \"int64\"",
                self.to
            )));
        }
        if !(self.tolerance >= 0.0 && self.tolerance < 0.5) {
            return Err(invalid(format!(
                "[[cast]] column '{column}': tolerance {} must be at least 0 and below 0.5 \
                 (the default is 1e-6)",
                self.tolerance
            )));
        }
        Ok(IntegerCast {
            column: columns.resolve(column),
            tolerance: self.tolerance,
            on_error: self.on_error,
        })
    }
}

impl ForwardReturnConfig {
    /// The price column and the horizons.
    fn build(&self, columns: &SemanticColumns) -> Result<(String, Vec<Horizon>), ConfigError> {
        let wrong = |problem: String| {
            invalid(format!(
                "[forward_return] horizons: {problem}; horizons are seconds of trading time, \
                 \"close\", \"next_open\" or \"next_close\", e.g. horizons = [60, 300, \"close\"]"
            ))
        };
        if self.horizons.is_empty() {
            return Err(wrong("the list is empty".into()));
        }
        let mut horizons = Vec::with_capacity(self.horizons.len());
        for written in &self.horizons {
            let horizon = match written {
                HorizonConfig::Seconds(h) if *h <= 0 => {
                    return Err(wrong(format!("{h} is not positive")));
                }
                HorizonConfig::Seconds(h) => Horizon::Seconds(*h),
                HorizonConfig::Name(name) if name == "close" => Horizon::Close,
                HorizonConfig::Name(name) if name == "next_open" => Horizon::NextOpen,
                HorizonConfig::Name(name) if name == "next_close" => Horizon::NextClose,
                HorizonConfig::Name(name) => {
                    return Err(wrong(format!("\"{name}\" is not a horizon")));
                }
            };
            if horizons.contains(&horizon) {
                return Err(wrong(format!("{horizon} is listed twice")));
            }
            horizons.push(horizon);
        }
        Ok((columns.resolve(&self.price), horizons))
    }
}

impl EnrichConfig {
    /// The rule of the `index`-th (from 0) `[[enrich]]` table.
    fn build(
        &self,
        index: usize,
        columns: &SemanticColumns,
    ) -> Result<Arc<dyn EnrichRule>, ConfigError> {
        let at = |what: &str| format!("[[enrich]] #{} ({what})", index + 1);
        let resolve = |name: &str| columns.resolve(name);
        Ok(match self {
            EnrichConfig::FifoMatch(config) => {
                let mut spec = FifoSpec::new(resolve(&config.side), resolve(&config.qty));
                spec.price = config.price.as_deref().map(resolve);
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
        })
    }
}

/// A `[bin]` entry: `column = width`.
fn bin(
    column: &str,
    value: &toml::Value,
    columns: &SemanticColumns,
) -> Result<BinSpec, ConfigError> {
    let width = value
        .as_float()
        .or_else(|| value.as_integer().map(|i| i as f64));
    let width = width.filter(|w| w.is_finite() && *w > 0.0).ok_or_else(|| {
        invalid(format!(
            "[bin] {column}: the width must be a positive number, got {value}; \
             e.g. {column} = 1e-4"
        ))
    })?;
    Ok(BinSpec {
        column: columns.resolve(column),
        width,
    })
}

impl AggregateConfig {
    fn build(&self, columns: &SemanticColumns) -> Result<AggregateSpec, ConfigError> {
        if self.metrics.is_empty() {
            return Err(invalid(
                "[aggregate.metrics] is empty; define at least one metric, e.g. count = \"count()\"",
            ));
        }
        let group_by: Vec<String> = self.group_by.iter().map(|c| columns.resolve(c)).collect();
        let mut metrics = Vec::new();
        for (name, value) in &self.metrics {
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
        Ok(AggregateSpec { group_by, metrics })
    }
}
