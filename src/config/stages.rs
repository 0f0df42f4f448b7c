//! The pipeline as one list of steps, and the dataflow's stages made from it.
//!
//! [`Pipeline::bind`] lays the pipeline out as a list of [`Step`]s in the order rows go
//! through them, each declaring the columns it reads and adds:
//!
//! ```text
//! [[cast]]s, row_id, derived columns      ─┐ Stage::Derive (always: it also converts
//!                                          │   each date's types to the run's)
//! parse_time                               ─  Stage::ParseTime
//! derived columns using elapsed_*          ─  Stage::Derive
//! forward returns, [[enrich]] rules        ─  Stage::Keyed (exchanged by symbol)
//! derived columns using their outputs      ─  Stage::Derive
//! [bin]s                                   ─  Stage::Bin
//! ```
//!
//! Three walks of that one list do the work: validation walks it forwards, checking
//! each step against the columns that exist at its point; column pruning walks it
//! backwards from the aggregation, each step needing what the later ones need, minus
//! what it adds, plus what it reads (a derived column or a return nothing needs is not
//! computed); and the kept steps, consecutive ones of the same operator fused, are the
//! dataflow's [`Stage`]s, which the engine builds in order.
//!
//! A derived column is computed at the earliest of three points where every column it
//! uses exists: after the casts, after parse_time, or after the keyed stage.
//!
//! A new step is a variant of [`Step`] with its arms in `reads`, `adds`, `check` and
//! `operator`, and, if it is a new operator, a variant of [`Stage`].

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use vizflow_operators::aggregate::AggregatePlan;
use vizflow_operators::batch::Parts;
use vizflow_operators::bin::BinSpec;
use vizflow_operators::columns::{
    ELAPSED_MS, ELAPSED_SECONDS, KEPT_BATCH, KEPT_ROW, ROW_ID, SETTLES,
};
use vizflow_operators::derive::{DeriveSpec, IntegerCast};
use vizflow_operators::enrich::{EnrichRule, EnrichSpec, checked_outputs};
use vizflow_operators::enrich::{Incremental, check_streamable};
use vizflow_operators::expr::Expr;
use vizflow_operators::forward_return::{ForwardReturnSpec, Horizon};
use vizflow_operators::next_day::NextDays;
use vizflow_operators::parse_time::{ParseTimeSpec, elapsed_ms};

use super::{ConfigError, Pipeline, field, invalid, set};

/// One step of a pipeline before its aggregation.
#[derive(Clone, Debug)]
enum Step {
    /// A `[[cast]]`: a numeric column to Int64, in place.
    Cast(IntegerCast),
    /// `row_id`, each row's position in its file. The input adds it to every batch; it
    /// is listed after the casts because a cast cannot name it.
    RowId,
    /// A `[derive]` column.
    Derive { name: String, expr: Expr },
    /// `[time]`: `elapsed_ms` and `elapsed_seconds` from the timestamp column.
    ParseTime,
    /// `[forward_return]`: the return over one horizon, on the original rows.
    ForwardReturn { price: String, horizon: Horizon },
    /// The `index`-th (from 0) enrich rule: an `[[enrich]]` table or a Rust rule.
    Rule {
        index: usize,
        rule: Arc<dyn EnrichRule>,
    },
    /// A `[bin]`.
    Bin(BinSpec),
}

/// The dataflow operator a step runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Derive,
    ParseTime,
    Keyed,
    Bin,
}

impl Step {
    fn operator(&self) -> Operator {
        match self {
            Step::Cast(_) | Step::RowId | Step::Derive { .. } => Operator::Derive,
            Step::ParseTime => Operator::ParseTime,
            Step::ForwardReturn { .. } | Step::Rule { .. } => Operator::Keyed,
            Step::Bin(_) => Operator::Bin,
        }
    }

    /// The columns the step reads (a cast reads and replaces its column).
    fn reads(&self, pipeline: &Pipeline) -> Vec<String> {
        match self {
            Step::Cast(cast) => vec![cast.column.clone()],
            Step::RowId => Vec::new(),
            Step::Derive { expr, .. } => expr.columns(),
            Step::ParseTime => vec![pipeline.timestamp.clone()],
            Step::ForwardReturn { price, .. } => vec![price.clone()],
            Step::Rule { rule, .. } => rule.inputs(),
            Step::Bin(bin) => vec![bin.column.clone()],
        }
    }

    /// The columns the step adds, as far as is known before checking (a rule's
    /// [`EnrichRule::output_names`]).
    fn adds(&self) -> Vec<String> {
        match self {
            Step::Cast(_) => Vec::new(),
            Step::RowId => vec![ROW_ID.to_owned()],
            Step::Derive { name, .. } => vec![name.clone()],
            Step::ParseTime => vec![ELAPSED_MS.to_owned(), ELAPSED_SECONDS.to_owned()],
            Step::ForwardReturn { horizon, .. } => vec![ForwardReturnSpec::output(*horizon)],
            Step::Rule { rule, .. } => rule.output_names(),
            Step::Bin(bin) => vec![bin.output()],
        }
    }

    /// True when the step runs even if no later step needs what it adds: parse_time
    /// (it places every row on the trading clock, and drops or rejects rows out of
    /// session), the rules (they may count or fail) and the bins.
    fn always_runs(&self) -> bool {
        matches!(
            self,
            Step::RowId | Step::ParseTime | Step::Rule { .. } | Step::Bin(_)
        )
    }

    /// Checks the step against the columns that exist before it (`fields`), and adds
    /// its own. Returns the names of the columns it adds or replaces (a cast's none: it
    /// changes its column's type, not what the column is). `steps` is the whole list and
    /// `at` the step's place in it. Errors start with the section at fault.
    fn check(
        &self,
        pipeline: &Pipeline,
        steps: &[Step],
        at: usize,
        fields: &mut Vec<Field>,
    ) -> Result<Vec<String>, ConfigError> {
        match self {
            Step::Cast(cast) => {
                let column = field(fields, &cast.column, "[[cast]] unknown column")?;
                if !column.data_type().is_numeric() {
                    return Err(invalid(format!(
                        "[[cast]] column '{}' has type {}; only numeric columns can be cast to int64",
                        cast.column,
                        column.data_type()
                    )));
                }
                set(fields, Field::new(&cast.column, DataType::Int64, true));
                return Ok(Vec::new());
            }
            Step::RowId => fields.push(Field::new(ROW_ID, DataType::UInt64, false)),
            Step::Derive { name, expr } => {
                let data_type = expr
                    .check(&Schema::new(fields.clone()))
                    .map_err(|e| invalid(format!("[derive] {name}: {e}")))?;
                set(fields, Field::new(name, data_type, true));
            }
            Step::ParseTime => {
                check_symbol(pipeline, fields)?;
                check_timestamp(pipeline, fields)?;
                set(fields, Field::new(ELAPSED_MS, DataType::Int64, false));
                set(fields, Field::new(ELAPSED_SECONDS, DataType::Int64, false));
            }
            Step::ForwardReturn { price, horizon } => {
                let derived_later = steps[at..]
                    .iter()
                    .any(|s| matches!(s, Step::Derive { name, .. } if name == price));
                if derived_later {
                    return Err(invalid(format!(
                        "[forward_return] price column '{price}' is a derived column that uses a \
                         column added after forward returns are computed (they use the original \
                         rows, before [[enrich]]); derive the price from input columns only"
                    )));
                }
                let price_type =
                    field(fields, price, "[forward_return] unknown price column")?.data_type();
                if !price_type.is_numeric() {
                    return Err(invalid(format!(
                        "[forward_return] price column '{price}' has type {price_type}; it must be numeric"
                    )));
                }
                let output = ForwardReturnSpec::output(*horizon);
                set(fields, Field::new(output, DataType::Float64, true));
            }
            Step::Rule { index, rule } => {
                let outputs = checked_outputs(rule.as_ref(), fields)
                    .map_err(|e| invalid(format!("[[enrich]] #{}: {e}", index + 1)))?;
                let names = outputs.iter().map(|f| f.name().clone()).collect();
                for output in outputs {
                    set(fields, output);
                }
                return Ok(names);
            }
            Step::Bin(bin) => {
                let bin_type = field(fields, &bin.column, "[bin] unknown column")?.data_type();
                if !bin_type.is_numeric() {
                    return Err(invalid(format!(
                        "[bin] column '{}' has type {bin_type}; it must be numeric",
                        bin.column
                    )));
                }
                set(fields, Field::new(bin.output(), DataType::Int64, true));
            }
        }
        Ok(self.adds())
    }
}

/// The symbol column exists and holds integers or strings.
fn check_symbol(pipeline: &Pipeline, fields: &[Field]) -> Result<(), ConfigError> {
    let symbol = &pipeline.symbol;
    let symbol_type = field(fields, symbol, "[columns] unknown symbol column")?.data_type();
    let is_string = matches!(
        symbol_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Dictionary(_, _)
    );
    if symbol_type.is_integer() || is_string {
        return Ok(());
    }
    let fix = if symbol_type.is_floating() {
        format!("; cast it with [[cast]] column = \"{symbol}\" and to = \"int64\"")
    } else {
        String::new()
    };
    Err(invalid(format!(
        "[columns] symbol column '{symbol}' has type {symbol_type}, but symbols must be integers or strings{fix}"
    )))
}

/// The timestamp column exists and the time format and market can read its type.
fn check_timestamp(pipeline: &Pipeline, fields: &[Field]) -> Result<(), ConfigError> {
    let timestamp = &pipeline.timestamp;
    let timestamp_type = field(fields, timestamp, "[time] unknown timestamp column")?.data_type();
    let any_date = chrono::NaiveDate::from_ymd_opt(2024, 1, 2).expect("a valid date");
    let empty = arrow::array::new_empty_array(timestamp_type);
    elapsed_ms(
        &empty,
        pipeline.time_format,
        &pipeline.market.clock,
        any_date,
        pipeline.out_of_session,
    )
    .map_err(|e| invalid(format!("[time] timestamp column '{timestamp}': {e}")))?;
    Ok(())
}

/// One operator of the dataflow, in the order [`BoundPipeline::stages`] lists them.
#[derive(Clone, Debug)]
pub enum Stage {
    /// Type conversion of each date's columns to the run's, casts, derived columns and
    /// the projection to what later stages need.
    Derive(DeriveSpec),
    /// Time parsing to the trading clock.
    ParseTime(ParseTimeSpec),
    /// The keyed per-symbol stage: forward returns (on the original rows), then the
    /// enrich rules.
    Keyed(EnrichSpec),
    /// Binned columns.
    Bin(Vec<BinSpec>),
}

/// A pipeline bound to an input schema: what to read, the dataflow's stages and the
/// aggregation.
#[derive(Clone, Debug)]
pub struct BoundPipeline {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// The input columns to read.
    pub read: Vec<String>,
    /// The schema it was bound to.
    pub input_schema: SchemaRef,
    /// The stages before the aggregation, in order. The first is always a
    /// [`Stage::Derive`] (it converts each date's types to the run's), and there is
    /// always one [`Stage::ParseTime`].
    pub stages: Vec<Stage>,
    /// The aggregation plan.
    pub plan: AggregatePlan,
    /// With `[stream] emit_every`, whether provisional results are computed
    /// incrementally, and how (see [`Pipeline::incremental`]).
    pub incremental: Option<Incremental>,
    /// The next trading day of each date, for the horizons `"next_open"` and
    /// `"next_close"`: `vizflow run` sets it from the calendar and the input files.
    /// Left empty, no date has a next day (the returns are null, counted as
    /// `forward_return.no_next_date`).
    pub next_days: Arc<NextDays>,
    /// The input columns a date read only for its prices needs (the symbol, the
    /// timestamp and the forward returns' price, through the derived columns), in the
    /// order of `read`; empty without returns to the next day.
    pub price_read: Vec<String>,
}

impl BoundPipeline {
    /// The schema of every partial.
    pub fn output_schema(&self) -> SchemaRef {
        self.plan.output_schema()
    }

    /// The time parsing stage.
    pub fn parse_time(&self) -> &ParseTimeSpec {
        self.stages
            .iter()
            .find_map(|s| match s {
                Stage::ParseTime(spec) => Some(spec),
                _ => None,
            })
            .expect("a bound pipeline parses time")
    }

    /// The keyed stage, if the pipeline has one.
    pub fn keyed(&self) -> Option<&EnrichSpec> {
        self.stages.iter().find_map(|s| match s {
            Stage::Keyed(spec) => Some(spec),
            _ => None,
        })
    }
}

/// How a column after the keyed stage depends on its late columns
/// ([`Pipeline::late_columns`]).
#[derive(Clone, Copy, Default)]
struct Late {
    /// The horizons (by position in the keyed stage's) it depends on.
    horizons: u32,
    /// Whether it depends on a column a rule revises.
    revised: bool,
    /// Null wherever a return it depends on is null.
    strict: bool,
    /// Null wherever a revised column it depends on is null.
    revised_strict: bool,
}

impl Pipeline {
    /// Binds the pipeline to the schema of an input file: checks every column and
    /// expression, and plans which columns to read and keep.
    ///
    /// The pipeline is laid out as one list of steps in the order rows go through
    /// them (casts, derived columns, parse_time, forward returns, enrich rules, bins),
    /// each declaring the columns it reads and adds. Validation walks the list
    /// forwards, checking each step against the columns that exist at its point;
    /// pruning walks it backwards from the aggregation (a derived column or a return
    /// nothing needs is not computed, a cast of an unneeded column not done); the
    /// steps that run, consecutive ones of one operator fused, are the
    /// [`stages`](BoundPipeline::stages) the engine builds.
    pub fn bind(&self, input: &Schema) -> Result<BoundPipeline, ConfigError> {
        let steps = self.steps(input);
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut writes = Vec::with_capacity(steps.len());
        for (at, step) in steps.iter().enumerate() {
            writes.push(step.check(self, &steps, at, &mut fields)?);
        }
        let plan = AggregatePlan::new(&self.aggregate, &Schema::new(fields)).map_err(|e| {
            // The section names the stage: its problem, without the "aggregate: " prefix.
            invalid(format!("[aggregate] {}", e.problem()))
        })?;
        let pruned = self.prune(&steps, writes);
        let read = pruned.read(&steps);
        let mut stages = self.stages(input, &steps, &pruned, &read)?;
        let mut plan = plan;
        let mut incremental = None;
        if let Some(stream) = &self.stream {
            let provisional = stream.emit_every_ms.is_some();
            if provisional && !stages.iter().any(|s| matches!(s, Stage::Keyed(_))) {
                // Provisional results come from the keyed stage: without it there would
                // be none, silently.
                return Err(invalid(
                    "[stream] emit_every: provisional results come from the keyed stage, and \
                     this pipeline has none (no [forward_return] horizon or [[enrich]] rule \
                     that the aggregate uses); remove emit_every, or aggregate a forward \
                     return or a rule's column"
                        .to_owned(),
                ));
            }
            for stage in &mut stages {
                if let Stage::Keyed(spec) = stage {
                    check_streamable(spec, provisional)
                        .map_err(|e| invalid(format!("[[enrich]] {e}")))?;
                    match provisional {
                        true => incremental = self.incremental(&steps, spec, &mut plan),
                        false => spec.open_in_place = self.in_place(&steps, spec, &mut plan),
                    }
                }
            }
        }
        Ok(BoundPipeline {
            pipeline: self.clone(),
            input_schema: Arc::new(input.clone()),
            stages,
            plan,
            incremental,
            price_read: self.price_read(&read),
            read,
            next_days: Arc::default(),
        })
    }

    /// The columns of `read` that the symbol, the timestamp and the forward returns'
    /// price come from, when the returns reach the next trading day (a date read for
    /// its prices alone reads these: `BoundPipeline::price_read`).
    fn price_read(&self, read: &[String]) -> Vec<String> {
        let Some((price, horizons)) = &self.forward_return else {
            return Vec::new();
        };
        if !horizons.iter().any(|h| h.crosses_date()) {
            return Vec::new();
        }
        let mut wanted = vec![self.symbol.clone(), self.timestamp.clone(), price.clone()];
        let mut needed: Vec<String> = Vec::new();
        while let Some(column) = wanted.pop() {
            if needed.contains(&column) {
                continue;
            }
            // A derived column stands for the columns it uses (the last definition
            // before any use is the one that counts; taking every one is safe).
            for (name, expr) in &self.derive {
                if *name == column {
                    wanted.extend(expr.columns());
                }
            }
            needed.push(column);
        }
        (read.iter())
            .filter(|c| needed.contains(c))
            .cloned()
            .collect()
    }

    /// The columns that are late after the keyed stage `keyed`: those that a forward
    /// return or a column a rule revises feeds, through the derived columns and bins
    /// after it; and the late columns that a stage after it counts (a bin or a cast of
    /// one: a row's counts then depend on its late values).
    fn late_columns(steps: &[Step], keyed: &EnrichSpec) -> (BTreeMap<String, Late>, Vec<String>) {
        let horizons = (keyed.rules.first())
            .and_then(|r| r.forward_returns())
            .map_or(Vec::new(), |r| r.horizons.clone());
        let mut late: BTreeMap<String, Late> = BTreeMap::new();
        let mut counted = Vec::new();
        for step in steps {
            match step {
                Step::ForwardReturn { horizon, .. } => {
                    // A return nothing needs is pruned: not among the stage's.
                    if let Some(k) = horizons.iter().position(|h| h == horizon) {
                        // Past `Parts::HORIZONS` it is refused by `incremental`.
                        let bit = 1u32 << k.min(31);
                        // The close's return on a date cut at `W` is the price at `W`'s:
                        // it changes at every result, not once (no part of its own).
                        let column = Late {
                            horizons: bit,
                            strict: horizon.changes_once(),
                            ..Late::default()
                        };
                        late.insert(ForwardReturnSpec::output(*horizon), column);
                    }
                }
                Step::Rule { rule, .. } => {
                    for column in rule.output_names() {
                        late.remove(&column);
                    }
                    for column in rule.revises() {
                        let revised = Late {
                            revised: true,
                            strict: true,
                            revised_strict: true,
                            ..Late::default()
                        };
                        late.insert(column, revised);
                    }
                }
                Step::Derive { name, expr } => {
                    let mut column = Late {
                        strict: true,
                        revised_strict: true,
                        ..Late::default()
                    };
                    for read in expr.columns() {
                        if let Some(from) = late.get(&read) {
                            column.horizons |= from.horizons;
                            column.revised |= from.revised;
                            if from.horizons != 0 {
                                column.strict &= from.strict && expr.null_strict(&read);
                            }
                            if from.revised {
                                column.revised_strict &=
                                    from.revised_strict && expr.null_strict(&read);
                            }
                        }
                    }
                    match column.horizons != 0 || column.revised {
                        true => late.insert(name.clone(), column),
                        false => late.remove(name),
                    };
                }
                Step::Bin(bin) => {
                    // A null value has a null bin (and is counted: `bin.null.{column}`).
                    if late.contains_key(&bin.column) {
                        counted.push(bin.column.clone());
                    }
                    match late.get(&bin.column).copied() {
                        Some(column) => late.insert(bin.output(), column),
                        None => late.remove(&bin.output()),
                    };
                }
                Step::Cast(cast) => {
                    if late.contains_key(&cast.column) {
                        counted.push(cast.column.clone());
                    }
                }
                Step::RowId | Step::ParseTime => {}
            }
        }
        (late, counted)
    }

    /// Whether provisional results can be computed incrementally ([`Incremental`]),
    /// and if so the part of each of `plan`'s components ([`Parts`]). A column is late
    /// when a forward return or a column a rule revises feeds it, through the derived
    /// columns and bins after the keyed stage (`keyed` is that stage). It can when no
    /// group-by column is late and each late column that a component reads depends on
    /// one horizon's return alone, and is null wherever that return is (so the row adds
    /// nothing to the component until the return is known), or on revised columns
    /// alone (an open entry's part is then evaluated at each result).
    fn incremental(
        &self,
        steps: &[Step],
        keyed: &EnrichSpec,
        plan: &mut AggregatePlan,
    ) -> Option<Incremental> {
        let horizons = (keyed.rules.first())
            .and_then(|r| r.forward_returns())
            .map_or(Vec::new(), |r| r.horizons.clone());
        let (late, counted) = Self::late_columns(steps, keyed);
        if self.aggregate.group_by.iter().any(|c| late.contains_key(c)) {
            return None;
        }
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        let mut incremental = Incremental {
            horizons: 0,
            revised: false,
            // Returns to the next day wait for it after the keyed stage, as whole rows;
            // a stage after it that counts a late column needs whole rows too (a bin
            // of a return: its rows' `Parts::BASE` have the return null).
            final_parts: counted.is_empty() && !horizons.iter().any(|h| h.crosses_date()),
            withdraw: false,
            narrow: 0,
            revised_narrow: None,
            idle: None,
        };
        for column in plan.input_columns() {
            let Some(column_late) = late.get(&column) else {
                continue;
            };
            let part = match (column_late.horizons, column_late.revised) {
                (0, _) => {
                    incremental.revised = true;
                    Parts::REVISED
                }
                (bits, false) if bits.is_power_of_two() && column_late.strict => {
                    let k = bits.trailing_zeros() as usize;
                    if k >= Parts::HORIZONS {
                        return None;
                    }
                    incremental.horizons |= bits;
                    Parts::horizon(k)
                }
                _ => return None,
            };
            parts.insert(column, part);
        }
        plan.set_parts(|column| parts.get(column).copied().unwrap_or(Parts::BASE));
        incremental.withdraw = incremental.revised && plan.withdrawable(Parts::REVISED);
        // A horizon's parts are narrow when every component of them reads the return
        // itself, the parts make the final result and a cut's rows go on whole.
        if incremental.final_parts && (incremental.withdraw || !incremental.revised) {
            for (k, horizon) in horizons.iter().enumerate() {
                let (part, name) = (Parts::horizon(k), ForwardReturnSpec::output(*horizon));
                let mut columns = parts.iter().filter(|(_, p)| **p == part);
                if incremental.horizons >> k & 1 == 1 && columns.all(|(c, _)| *c == name) {
                    incremental.narrow |= 1 << k;
                }
            }
        }
        let narrow = (0..Parts::HORIZONS).filter(|k| incremental.narrow >> k & 1 == 1);
        plan.set_narrow(narrow.fold(Parts::NONE, |parts, k| parts.with(Parts::horizon(k))));
        // An open entry's changes go narrow when the parts make the final result and
        // are withdrawn, and the one rule that revises columns says where its rows
        // went out (`EnrichRule::places`: the entries are held by place).
        if incremental.final_parts && incremental.withdraw && keyed.revisions_placed() {
            incremental.revised_narrow = Self::place_columns(steps, keyed, &late);
            incremental.idle = (incremental.revised_narrow)
                .and_then(|places| Self::idle_factors(steps, keyed, plan, places));
        }
        Some(incremental)
    }

    /// Whether an open entry sent with its revised columns zero, `false` or null adds
    /// nothing to `plan`'s [`Parts::REVISED`] ([`Incremental::idle`]), and if so which
    /// of the place columns (bits of `places`) must be finite for that: every component
    /// of the part is a sum, and each column they read is zero where the revised
    /// columns are (`Expr::zero_where`, through the derived columns after the keyed
    /// stage `keyed`), given those columns finite.
    fn idle_factors(
        steps: &[Step],
        keyed: &EnrichSpec,
        plan: &AggregatePlan,
        places: u64,
    ) -> Option<u64> {
        let summed = plan.summed(Parts::REVISED)?;
        // The columns zero where an idle entry's revised ones are, with the columns
        // they need finite for that.
        let mut zero: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for step in steps {
            match step {
                Step::Rule { rule, .. } => {
                    for column in rule.output_names() {
                        zero.remove(&column);
                    }
                    for column in rule.revises() {
                        zero.insert(column, Vec::new());
                    }
                }
                Step::Derive { name, expr } => {
                    let is_zero = |c: &str| zero.contains_key(c);
                    match expr.zero_where(&is_zero) {
                        Some(mut factors) => {
                            for read in expr.columns() {
                                factors.extend(zero.get(&read).into_iter().flatten().cloned());
                            }
                            zero.insert(name.clone(), factors);
                        }
                        None => {
                            zero.remove(name);
                        }
                    }
                }
                Step::Bin(bin) => {
                    zero.remove(&bin.output());
                }
                Step::Cast(cast) => {
                    zero.remove(&cast.column);
                }
                Step::ForwardReturn { .. } | Step::RowId | Step::ParseTime => {}
            }
        }
        let keep = keyed.keep.as_deref().unwrap_or(&[]);
        let mut finite = 0u64;
        for column in summed {
            for factor in zero.get(column)? {
                let bit = keep.iter().position(|c| c == factor).filter(|i| *i < 64)?;
                if places >> bit & 1 == 0 {
                    return None;
                }
                finite |= 1 << bit;
            }
        }
        Some(finite)
    }

    /// With `[stream]` and no provisional results, whether open entries can go on in
    /// place ([`EnrichSpec::open_in_place`]), and if so their place columns, with the
    /// part of each of `plan`'s components ([`Parts::REVISED`] for those that a revised
    /// column feeds). An open entry's row then goes on with its revised columns null,
    /// and its values come once, when it settles: it can when no group-by column is
    /// revised, no stage after the keyed stage counts a revised column (a bin or a cast
    /// of one), each column a component reads that a revised column feeds is null
    /// wherever that revised column is (so the row adds nothing to the component until
    /// its values come; any function then, `min` and `max` too), and the narrow rows
    /// can carry what the derived columns of revised ones read
    /// ([`Pipeline::place_columns`]). The forward returns are final when a row goes on;
    /// none reaches the close (the date would not stream).
    fn in_place(
        &self,
        steps: &[Step],
        keyed: &EnrichSpec,
        plan: &mut AggregatePlan,
    ) -> Option<u64> {
        if keyed.rules.iter().all(|r| r.revises().is_empty()) {
            // No entry is ever held open.
            return None;
        }
        let returns = keyed.rules.first().and_then(|r| r.forward_returns());
        if returns.is_some_and(ForwardReturnSpec::reaches_the_close) {
            // A return to the close or the next day: the keyed stage does not stream
            // (the date runs whole), and a next day's returns wait for whole rows.
            return None;
        }
        let (late, counted) = Self::late_columns(steps, keyed);
        let revised = |c: &String| late.get(c).is_some_and(|l| l.revised);
        if self.aggregate.group_by.iter().any(revised) || counted.iter().any(revised) {
            return None;
        }
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        for column in plan.input_columns() {
            match late.get(&column) {
                Some(l) if l.revised && !l.revised_strict => return None,
                Some(l) if l.revised => {
                    parts.insert(column, Parts::REVISED);
                }
                _ => {}
            }
        }
        let places = Self::place_columns(steps, keyed, &late)?;
        plan.set_parts(|column| parts.get(column).copied().unwrap_or(Parts::BASE));
        Some(places)
    }

    /// The place columns of open entries' narrow rows ([`Incremental::revised_narrow`]),
    /// as bits over the keyed stage's kept columns ([`EnrichSpec::keep`]): every column
    /// other than the revised ones that a derived column of them reads. None when one
    /// is not a column the keyed stage keeps, as it keeps it: when a derived column
    /// after the keyed stage replaces a kept or revised column (the narrow rows carry
    /// the keyed stage's), or when a column is named like a column of the narrow rows.
    fn place_columns(
        steps: &[Step],
        keyed: &EnrichSpec,
        late: &BTreeMap<String, Late>,
    ) -> Option<u64> {
        let keep = keyed.keep.as_deref().unwrap_or(&[]);
        let revised = |c: &str| late.get(c).is_some_and(|l| l.revised);
        let rules_revise: Vec<String> = keyed.rules.iter().flat_map(|r| r.revises()).collect();
        let reserved = [KEPT_BATCH, KEPT_ROW, SETTLES];
        let keyed_end = (steps.iter())
            .rposition(|s| matches!(s, Step::ForwardReturn { .. } | Step::Rule { .. }));
        let mut places = Some(0u64);
        for (at, step) in steps.iter().enumerate() {
            let written = match step {
                Step::Derive { name, .. } => name.clone(),
                Step::Bin(bin) => bin.output(),
                _ => continue,
            };
            let after_keyed = keyed_end.is_some_and(|end| at > end);
            let replaces = keep.contains(&written) || rules_revise.contains(&written);
            if reserved.contains(&written.as_str()) || (after_keyed && replaces) {
                places = None;
            }
            let Step::Derive { name, expr } = step else {
                continue;
            };
            if !revised(name) {
                continue;
            }
            for read in expr.columns().iter().filter(|c| !revised(c)) {
                places = match keep.iter().position(|c| c == read) {
                    Some(i) if i < 64 => places.map(|p| p | 1 << i),
                    _ => None,
                };
            }
        }
        if keep.iter().any(|c| reserved.contains(&c.as_str())) {
            places = None;
        }
        places
    }

    /// Every step, in the order rows go through them; derived columns at the earliest
    /// of three points where the columns they use exist (after the casts, after
    /// parse_time, after the keyed stage). A derived column that uses a column no step
    /// has goes at the first point, where checking it names the unknown column.
    fn steps(&self, input: &Schema) -> Vec<Step> {
        let mut steps: Vec<Step> = self.casts.iter().cloned().map(Step::Cast).collect();
        steps.push(Step::RowId);
        let after_casts = steps.len();
        steps.push(Step::ParseTime);
        if let Some((price, horizons)) = &self.forward_return {
            steps.extend(horizons.iter().map(|h| Step::ForwardReturn {
                price: price.clone(),
                horizon: *h,
            }));
        }
        let rules = self.enrich.iter().enumerate();
        steps.extend(rules.map(|(index, rule)| Step::Rule {
            index,
            rule: rule.clone(),
        }));
        let after_keyed = steps.len();
        steps.extend(self.bins.iter().cloned().map(Step::Bin));

        // The three points, and the columns that exist at each.
        let points = [after_casts, after_casts + 1, after_keyed];
        let available = |point: usize| {
            let input = input.fields().iter().map(|f| f.name().clone());
            input
                .chain(steps[..point].iter().flat_map(Step::adds))
                .collect()
        };
        let mut available: [Vec<String>; 3] = points.map(available);
        let mut derived: [Vec<Step>; 3] = Default::default();
        for (name, expr) in &self.derive {
            let columns = expr.columns();
            let p = (0..3)
                .find(|p| columns.iter().all(|c| available[*p].contains(c)))
                .unwrap_or(0);
            for later in &mut available[p..] {
                later.push(name.clone());
            }
            derived[p].push(Step::Derive {
                name: name.clone(),
                expr: expr.clone(),
            });
        }
        // From the last point, so that the earlier ones stay where they are.
        for (p, point) in points.iter().enumerate().rev() {
            let columns = std::mem::take(&mut derived[p]);
            steps.splice(*point..*point, columns);
        }
        steps
    }

    /// Walks the steps backwards from the aggregation (`writes[i]` are the columns step
    /// `i` adds or replaces): each step needs what the later ones need, minus the
    /// columns it writes, plus the columns it reads if it runs. A step runs if it [always
    /// does](Step::always_runs) or writes a column a later step needs. From parse_time
    /// to the keyed stage, the rows keep their symbol, `row_id` and `elapsed_ms`, by
    /// which the keyed stage orders each symbol's events.
    fn prune(&self, steps: &[Step], writes: Vec<Vec<String>>) -> Pruned {
        let mut list: Vec<String> = Vec::new();
        for column in &self.aggregate.group_by {
            need(column, &mut list);
        }
        if steps
            .iter()
            .any(|s| matches!(s, Step::ForwardReturn { horizon, .. } if horizon.crosses_date()))
        {
            // The returns to the next trading day are completed after the keyed stage,
            // by symbol (`vizflow_operators::next_day`).
            need(&self.symbol, &mut list);
        }
        for (_, metric) in &self.aggregate.metrics {
            for call in metric.calls() {
                if let Some(c) = &call.column {
                    need(c, &mut list);
                }
            }
        }
        // The keyed stage's place: its first step, else where it would be (before the
        // bins: no derived column waits for a keyed stage the pipeline does not have).
        let keyed_at = (steps.iter().position(|s| s.operator() == Operator::Keyed))
            .or_else(|| steps.iter().position(|s| s.operator() == Operator::Bin))
            .unwrap_or(steps.len());
        let event_columns = [self.symbol.as_str(), ROW_ID, ELAPSED_MS];
        let mut before = vec![Vec::new(); steps.len() + 1];
        let mut runs = vec![false; steps.len()];
        before[steps.len()] = list.clone();
        for (at, step) in steps.iter().enumerate().rev() {
            if at + 1 == keyed_at || matches!(step, Step::ParseTime) {
                event_columns.iter().for_each(|c| need(c, &mut list));
                before[at + 1] = list.clone();
            }
            runs[at] = step.always_runs()
                || match step {
                    Step::Cast(cast) => list.contains(&cast.column),
                    _ => writes[at].iter().any(|c| list.contains(c)),
                };
            list.retain(|c| !writes[at].contains(c));
            if runs[at] {
                step.reads(self).iter().for_each(|c| need(c, &mut list));
            }
            before[at] = list.clone();
        }
        Pruned {
            before,
            runs,
            writes,
        }
    }

    /// The dataflow's stages: the steps that run, consecutive ones of one operator
    /// together, each keeping the columns of its output that later stages need, in the
    /// order they are in its output (its input's, then the columns it adds).
    fn stages(
        &self,
        input: &Schema,
        steps: &[Step],
        pruned: &Pruned,
        read: &[String],
    ) -> Result<Vec<Stage>, ConfigError> {
        // The columns of the batch as it is between two steps.
        let mut columns: Vec<String> = read.to_vec();
        columns.push(ROW_ID.to_owned());
        let mut stages = Vec::new();
        let mut at = 0;
        while at < steps.len() {
            let operator = steps[at].operator();
            let end = (at..steps.len())
                .find(|i| steps[*i].operator() != operator)
                .unwrap_or(steps.len());
            let running: Vec<usize> = (at..end).filter(|i| pruned.runs[*i]).collect();
            for c in running.iter().flat_map(|i| &pruned.writes[*i]) {
                need(c, &mut columns);
            }
            let running: Vec<&Step> = running.iter().map(|i| &steps[*i]).collect();
            columns.retain(|c| pruned.before[end].contains(c));
            let keep = Some(columns.clone());
            if let Some(stage) = self.stage(operator, &running, keep, input, read, at == 0)? {
                stages.push(stage);
            }
            at = end;
        }
        Ok(stages)
    }

    /// The stage of `operator` running `steps`, if it has anything to do (the first
    /// always has: it converts each date's types to the run's and projects).
    fn stage(
        &self,
        operator: Operator,
        steps: &[&Step],
        keep: Option<Vec<String>>,
        input: &Schema,
        read: &[String],
        first: bool,
    ) -> Result<Option<Stage>, ConfigError> {
        if steps.is_empty() && !first {
            return Ok(None);
        }
        Ok(Some(match operator {
            Operator::Derive => {
                let mut input_types = Vec::new();
                if first {
                    // `check` found every one of them; this guards the planning.
                    let fields: Vec<Field> =
                        input.fields().iter().map(|f| f.as_ref().clone()).collect();
                    for c in read {
                        let data_type = field(&fields, c, "unknown column")?.data_type();
                        input_types.push((c.clone(), data_type.clone()));
                    }
                }
                Stage::Derive(DeriveSpec {
                    input_types,
                    casts: (steps.iter())
                        .filter_map(|s| match s {
                            Step::Cast(cast) => Some(cast.clone()),
                            _ => None,
                        })
                        .collect(),
                    columns: (steps.iter())
                        .filter_map(|s| match s {
                            Step::Derive { name, expr } => Some((name.clone(), expr.clone())),
                            _ => None,
                        })
                        .collect(),
                    keep,
                })
            }
            Operator::ParseTime => Stage::ParseTime(ParseTimeSpec {
                column: self.timestamp.clone(),
                format: self.time_format,
                clock: self.market.clock.clone(),
                policy: self.out_of_session,
                market: self.market.name.clone(),
                keep,
            }),
            Operator::Keyed => {
                let mut rules: Vec<Arc<dyn EnrichRule>> = Vec::new();
                let horizons: Vec<Horizon> = (steps.iter())
                    .filter_map(|s| match s {
                        Step::ForwardReturn { horizon, .. } => Some(*horizon),
                        _ => None,
                    })
                    .collect();
                if let (false, Some((price, _))) = (horizons.is_empty(), &self.forward_return) {
                    // Forward returns first, on the original rows; then the enrich rules.
                    let spec = ForwardReturnSpec {
                        symbol: self.symbol.clone(),
                        price: price.clone(),
                        horizons,
                        day_ms: self.market.clock.total_ms(),
                    };
                    rules.push(spec.rule());
                }
                rules.extend(steps.iter().filter_map(|s| match s {
                    Step::Rule { rule, .. } => Some(rule.clone()),
                    _ => None,
                }));
                Stage::Keyed(EnrichSpec {
                    symbol: self.symbol.clone(),
                    rules,
                    keep,
                    open_in_place: None,
                })
            }
            Operator::Bin => Stage::Bin(
                (steps.iter())
                    .filter_map(|s| match s {
                        Step::Bin(bin) => Some(bin.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
        }))
    }
}

/// What [`Pipeline::prune`] found.
struct Pruned {
    /// `before[i]`: the columns step `i` and the later steps need, in the order they
    /// came to be needed; `before[steps.len()]`, what the aggregation reads.
    before: Vec<Vec<String>>,
    /// Whether each step runs.
    runs: Vec<bool>,
    /// The columns each step adds or replaces.
    writes: Vec<Vec<String>>,
}

impl Pruned {
    /// The input columns to read: the columns of the casts that run, then the others
    /// the steps need (not `row_id`, which the input adds).
    fn read(&self, steps: &[Step]) -> Vec<String> {
        let mut read = Vec::new();
        for (step, runs) in steps.iter().zip(&self.runs) {
            if let (Step::Cast(cast), true) = (step, runs) {
                need(&cast.column, &mut read);
            }
        }
        for c in &self.before[0] {
            if c != ROW_ID {
                need(c, &mut read);
            }
        }
        read
    }
}

/// Adds `column` to `list` unless it is there.
fn need(column: &str, list: &mut Vec<String>) {
    if !list.iter().any(|x| x == column) {
        list.push(column.to_owned());
    }
}
