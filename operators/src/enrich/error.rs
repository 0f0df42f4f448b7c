//! [`EnrichError`]: why the keyed stage failed on a date, naming the rule, column, row
//! and value involved, and whose [`Fault`] it is.

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::Fault;
use crate::expr::ExprError;
use crate::suggest::column_hint;

/// Why the `enrich` stage, or one of its rules, failed: the operator's own errors
/// (prefixed `enrich:`), a rule's columns that do not fit it (when the rules are
/// checked), and a rule's errors as it runs over a date's rows.
///
/// A rule written in Rust ([`EnrichRule`](super::EnrichRule)) reports its own errors
/// with [`EnrichError::rule`].
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    // ---- a rule written in Rust ----
    /// A rule's own error, as the rule words it ([`EnrichError::rule`]).
    #[error("{rule}: {message}")]
    Rule {
        /// The rule's name ([`EnrichRule::name`](super::EnrichRule::name)).
        rule: String,
        /// What went wrong, and what to do about it.
        message: String,
        /// Whose fault it is, as the rule says.
        fault: Fault,
    },

    // ---- checking a rule against the columns where it runs ----
    /// A rule reads a column that is not there.
    #[error(
        "{rule}: unknown column '{column}'; {}",
        column_hint(column, available.iter().map(String::as_str))
    )]
    UnknownColumn {
        /// The rule's name.
        rule: String,
        /// The column it reads.
        column: String,
        /// The columns there are where the rule runs.
        available: Vec<String>,
    },
    /// A rule adds two columns of one name.
    #[error("{rule}: the output column '{column}' is listed twice")]
    DuplicateOutput {
        /// The rule's name.
        rule: String,
        /// The column's name.
        column: String,
    },
    /// A rule adds a column named like one of the engine's event columns.
    #[error(
        "{rule}: the output column '{column}' would replace the engine's own column; rename it"
    )]
    ReservedOutput {
        /// The rule's name.
        rule: String,
        /// The column's name (`elapsed_ms` or `row_id`).
        column: String,
    },
    /// A rule's input column of a type the rule cannot read.
    #[error(
        "{rule}: input column '{column}' has type {data_type}, which cannot be read as {expected}"
    )]
    InputType {
        /// The rule's name.
        rule: String,
        /// The input column.
        column: String,
        /// Its type.
        data_type: DataType,
        /// What the rule reads, e.g. `&str (any string column)`.
        expected: String,
    },
    /// A [`TagRule`](super::TagRule) whose `inputs()` or `outputs()` names another
    /// number of columns than its `Input` or `Output` type has values.
    #[error("{rule}: {list}() names {named} columns but the {kind} type has {typed} values")]
    Arity {
        /// The rule's name.
        rule: String,
        /// `inputs` or `outputs`.
        list: &'static str,
        /// `Input` or `Output`.
        kind: &'static str,
        /// How many columns the list names.
        named: usize,
        /// How many values the type has.
        typed: usize,
    },
    /// The FIFO rule given the same entry and exit side.
    #[error("FIFOMatch: the entry side and the exit side are both '{side}'; they must differ")]
    FifoSides {
        /// The side value.
        side: String,
    },
    /// The FIFO rule's quantity column is not of an integer type.
    #[error(
        "FIFOMatch: quantity column '{column}' has type {data_type}; FIFO matches integer \
         quantities, so cast it first with [[cast]] column = \"{column}\" and to = \"int64\""
    )]
    FifoQuantityType {
        /// The quantity column.
        column: String,
        /// Its type.
        data_type: DataType,
    },
    /// The FIFO rule's side column cannot be compared with the side values.
    #[error(
        "FIFOMatch: side column '{column}' has type {data_type}, which cannot be compared with \
         the side values '{entry_side}' and '{exit_side}'"
    )]
    FifoSideType {
        /// The side column.
        column: String,
        /// Its type.
        data_type: DataType,
        /// The entry side value.
        entry_side: String,
        /// The exit side value.
        exit_side: String,
    },
    /// A rule's price column is not numeric (`rule` is `FIFOMatch` or `forward_return`).
    #[error("{rule}: price column '{column}' has type {data_type}; it must be numeric")]
    PriceType {
        /// The rule's name.
        rule: String,
        /// The price column.
        column: String,
        /// Its type.
        data_type: DataType,
    },
    /// A condition tag whose condition is not boolean.
    #[error(
        "{rule}: the condition '{condition}' gives {data_type}, not a boolean; write a \
         comparison, e.g. {condition} > 0"
    )]
    NotBoolean {
        /// The rule's name.
        rule: String,
        /// The condition's text.
        condition: String,
        /// The type it gives.
        data_type: DataType,
    },
    /// A running value whose update gives another type than its initial value.
    #[error(
        "{rule}: the initial value is {initial} but the update '{update}' gives {data_type}; \
         make them the same type"
    )]
    RunningType {
        /// The rule's name.
        rule: String,
        /// The update's text.
        update: String,
        /// The initial value's type.
        initial: DataType,
        /// The update's type.
        data_type: DataType,
    },
    /// A running value whose type changes each time the update is typed.
    #[error(
        "{rule}: the type of the update '{update}' does not settle; write the initial value \
         with the type you want (e.g. 0.0 for a float)"
    )]
    RunningTypeUnsettled {
        /// The rule's name.
        rule: String,
        /// The update's text.
        update: String,
    },

    // ---- a rule running over a date's rows ----
    /// A rule's expression failed to check or to evaluate.
    #[error("{rule}: {source}")]
    Expr {
        /// The rule's name.
        rule: String,
        /// The expression's error (boxed: it is large, and errors are rare).
        source: Box<ExprError>,
    },
    /// A running value's update failed on a row (an overflow, a failing `CAST`).
    #[error("{rule}: row_id {row_id}{}: {source}", prev_value(prev.as_deref()))]
    RowExpr {
        /// The rule's name.
        rule: String,
        /// The row's `row_id`.
        row_id: u64,
        /// The previous value, for an error in the part of the update that uses it.
        prev: Option<String>,
        /// The expression's error (boxed: it is large, and errors are rare).
        source: Box<ExprError>,
    },
    /// A [`TagRule`](super::TagRule)'s input column that cannot be read as its type.
    #[error("{rule}: reading an input column: {source}")]
    ReadInput {
        /// The rule's name.
        rule: String,
        /// Arrow's complaint about the cast.
        source: ArrowError,
    },
    /// The FIFO rule's side column could not be cast to strings.
    #[error(
        "fifo: side column '{column}' has type {data_type}, which cannot be compared with the \
         side values '{entry_side}' and '{exit_side}': {source}"
    )]
    FifoSideCast {
        /// The side column.
        column: String,
        /// Its type.
        data_type: DataType,
        /// The entry side value.
        entry_side: String,
        /// The exit side value.
        exit_side: String,
        /// Arrow's complaint about the cast (boxed to keep the error small).
        source: Box<ArrowError>,
    },
    /// The FIFO rule ran over a quantity column that is not of an integer type.
    #[error(
        "fifo: quantity column '{column}' has type {data_type}; FIFO matches integer \
         quantities, so cast it first (a [[cast]] of '{column}' to int64)"
    )]
    FifoQuantityNotInteger {
        /// The quantity column.
        column: String,
        /// Its type.
        data_type: DataType,
    },
    /// A FIFO quantity that does not fit in Int64 (a UInt64 above `i64::MAX`).
    #[error("fifo: quantity column '{column}' does not fit in Int64: {source}")]
    FifoQuantityRange {
        /// The quantity column.
        column: String,
        /// Arrow's complaint, naming the value.
        source: ArrowError,
    },
    /// The FIFO rule's price column could not be read as numbers.
    #[error("fifo: price column '{column}' has type {data_type}, not numeric: {source}")]
    FifoPriceCast {
        /// The price column.
        column: String,
        /// Its type.
        data_type: DataType,
        /// Arrow's complaint about the cast.
        source: ArrowError,
    },
    /// The forward returns' price column could not be read as numbers.
    #[error("forward_return: price column '{column}' is not numeric: {source}")]
    ReturnPriceCast {
        /// The price column.
        column: String,
        /// Arrow's complaint about the cast.
        source: ArrowError,
    },
    /// An Arrow kernel failed inside a rule where it cannot (a bug): looking up a checked
    /// column, building a batch of the rule's own columns.
    #[error("{rule}: {source}")]
    RuleArrow {
        /// The rule's name.
        rule: String,
        /// Arrow's complaint.
        source: ArrowError,
    },

    // ---- the operator ----
    /// The batches of a date do not share one schema.
    #[error(
        "enrich: batch {batch} of the date has columns ({}) but batch 0 has ({}); all batches \
         of a date must share one schema",
        describe(schema),
        describe(first)
    )]
    SchemaMismatch {
        /// The batch that differs (its index among the date's batches on the worker).
        batch: usize,
        /// Its schema.
        schema: SchemaRef,
        /// The first batch's schema.
        first: SchemaRef,
    },
    /// A rule that cannot carry its state from one call to the next runs where rows are
    /// released as a watermark passes them.
    #[error(
        "{rule} cannot run under [stream]: it does not carry its per-symbol state from one \
         release of rows to the next (EnrichRule::resume); remove [stream] or the rule"
    )]
    CannotResume {
        /// The rule.
        rule: String,
    },
    /// Under `[stream]`, a rule reads or replaces a column that an earlier rule may still
    /// change after it runs (an entry's `matched_qty` after `FIFOMatch`).
    #[error(
        "{rule} cannot run under [stream]: it {action} '{column}', which {by} still changes \
         on an entry row after the row is released (until its lot closes); under [stream] \
         a rule may not read it: compute it after the keyed stage ([derive]) or in the \
         aggregate, or remove [stream]"
    )]
    ReadsRevised {
        /// The rule.
        rule: String,
        /// `reads` or `replaces`.
        action: &'static str,
        /// The column.
        column: String,
        /// The rule that changes it.
        by: String,
    },
    /// Under `[stream] emit_every`, a rule that reads a forward return.
    #[error(
        "{rule} reads {column}, which is not known when the rules run under [stream] \
         emit_every (provisional results run the rules as rows arrive, before their returns); \
         compute what needs {column} in [derive] after the keyed stage, or remove emit_every"
    )]
    ReadsReturns {
        /// The rule.
        rule: String,
        /// The return column.
        column: String,
    },
    /// Under `[stream]`, two rules whose output on a row changes after it is released.
    #[error(
        "{second} cannot run under [stream] after {first}: both change their columns on rows \
         after the rows are released, and a keyed stage under [stream] holds such rows for one \
         rule only; remove one of them or [stream]"
    )]
    TwoRevising {
        /// The first such rule.
        first: String,
        /// The second.
        second: String,
    },
    /// A row reached the keyed stage after the stage had released the rows of its time
    /// (the input broke the watermark's promise: an engine bug).
    #[error(
        "enrich: row {row_id} (elapsed_ms {elapsed_ms}) arrived after the rows before \
         elapsed_ms {released} were released"
    )]
    BehindRelease {
        /// The row.
        row_id: u64,
        /// Its time.
        elapsed_ms: i64,
        /// The release point it is behind.
        released: i64,
    },
    /// More rows of one date on one worker than the operator numbers in `u32`.
    #[error("enrich: {rows} rows of one date on one worker; at most {max} are supported")]
    TooManyRows {
        /// The rows.
        rows: usize,
        /// The most there may be.
        max: u32,
    },
    /// The symbol column is missing or holds neither integers nor strings.
    #[error(transparent)]
    Symbols(#[from] crate::batch::SymbolError),
    /// An event column (`elapsed_ms`, `row_id`) is missing.
    #[error("enrich: column '{column}' is missing (parse_time adds elapsed_ms, the engine row_id)")]
    MissingEventColumn {
        /// The column.
        column: &'static str,
    },
    /// An event column has the wrong type.
    #[error("enrich: column '{column}' has type {data_type}; expected {expected}")]
    EventColumnType {
        /// The column.
        column: &'static str,
        /// Its type.
        data_type: DataType,
        /// The type it must have.
        expected: DataType,
    },
    /// An event column has nulls among the rows the operator runs over.
    #[error("enrich: column '{column}' has {nulls} null values")]
    EventColumnNulls {
        /// The column.
        column: &'static str,
        /// How many values are null.
        nulls: usize,
    },
    /// An event time outside the range of the operator's event keys.
    #[error(
        "enrich: event time out of range (elapsed_ms {elapsed_ms}, row_id {row_id}); \
         elapsed_ms must be in 0..2^27 and row_id below 2^36"
    )]
    EventOutOfRange {
        /// The row's `elapsed_ms`.
        elapsed_ms: i64,
        /// The row's `row_id`.
        row_id: u64,
    },
    /// A column a rule reads or the output keeps is not in the input batches (a bug: the
    /// rules were checked against them).
    #[error("enrich: column '{column}' is missing")]
    MissingColumn {
        /// The column.
        column: String,
    },
    /// Putting a column in event order or gathering it failed (a bug).
    #[error("enrich: column '{column}': {source}")]
    Column {
        /// The column.
        column: String,
        /// Arrow's complaint.
        source: ArrowError,
    },
    /// A rule's output rows are not in order, or come from rows that are not there.
    #[error(
        "enrich: rule {rule} returned output rows out of order or out of range; each output \
         row must come from a row at or after the previous one's"
    )]
    SourceRows {
        /// The rule's name.
        rule: String,
    },
    /// Expanding the columns added so far through a rule's output rows failed (a bug).
    #[error("enrich: rule {rule}: {source}")]
    Reshape {
        /// The rule's name.
        rule: String,
        /// Arrow's complaint.
        source: ArrowError,
    },
    /// A rule returned another number of columns than it declares.
    #[error("enrich: rule {rule} returned {returned} columns but declares {declared}")]
    ColumnCount {
        /// The rule's name.
        rule: String,
        /// How many columns it returned.
        returned: usize,
        /// How many it declares ([`EnrichRule::outputs`](super::EnrichRule::outputs)).
        declared: usize,
    },
    /// A rule returned a column of the wrong length or type.
    #[error(
        "enrich: rule {rule} returned column '{column}' as {len} values of type {data_type}; \
         expected {expected_len} values of type {expected_type}"
    )]
    ColumnShape {
        /// The rule's name.
        rule: String,
        /// The column.
        column: String,
        /// How many values it returned.
        len: usize,
        /// Their type.
        data_type: DataType,
        /// How many values there are to be (one per output row).
        expected_len: usize,
        /// The type it declares.
        expected_type: DataType,
    },
    /// Building an output batch failed (a bug).
    #[error("enrich: output rows: {source}")]
    Output {
        /// Arrow's complaint.
        source: ArrowError,
    },
}

impl EnrichError {
    /// A rule's own error, `{rule}: {message}`, and whose fault it is: what a rule
    /// written in Rust returns from [`EnrichRule::outputs`](super::EnrichRule::outputs)
    /// (usually [`Fault::Config`]) or [`EnrichRule::apply`](super::EnrichRule::apply)
    /// (usually [`Fault::Data`]).
    pub fn rule(rule: impl Into<String>, message: impl Into<String>, fault: Fault) -> Self {
        EnrichError::Rule {
            rule: rule.into(),
            message: message.into(),
            fault,
        }
    }

    /// Whose fault the error is: the data's for values and rows the rules cannot
    /// process, the configuration's for a rule that does not fit its columns, a bug's
    /// for a rule that breaks the rule interface or the engine's own columns gone wrong.
    pub fn fault(&self) -> Fault {
        use EnrichError::*;
        match self {
            Rule { fault, .. } => *fault,
            RowExpr { .. }
            | ReadInput { .. }
            | FifoSideCast { .. }
            | FifoQuantityRange { .. }
            | FifoPriceCast { .. }
            | ReturnPriceCast { .. }
            | SchemaMismatch { .. }
            | TooManyRows { .. }
            | EventOutOfRange { .. } => Fault::Data,
            Symbols(error) => error.fault(),
            UnknownColumn { .. }
            | DuplicateOutput { .. }
            | ReservedOutput { .. }
            | InputType { .. }
            | FifoSides { .. }
            | FifoQuantityType { .. }
            | FifoSideType { .. }
            | PriceType { .. }
            | NotBoolean { .. }
            | RunningType { .. }
            | RunningTypeUnsettled { .. }
            | FifoQuantityNotInteger { .. }
            | CannotResume { .. }
            | ReadsRevised { .. }
            | ReadsReturns { .. }
            | TwoRevising { .. } => Fault::Config,
            Expr { source, .. } => source.fault(),
            Arity { .. }
            | RuleArrow { .. }
            | MissingEventColumn { .. }
            | EventColumnType { .. }
            | EventColumnNulls { .. }
            | MissingColumn { .. }
            | Column { .. }
            | SourceRows { .. }
            | Reshape { .. }
            | ColumnCount { .. }
            | ColumnShape { .. }
            | BehindRelease { .. }
            | Output { .. } => Fault::Bug,
        }
    }
}

/// ` (prev = 5)` when there is a previous value, else nothing.
fn prev_value(prev: Option<&str>) -> String {
    prev.map(|prev| format!(" (prev = {prev})"))
        .unwrap_or_default()
}

/// `name: type, ...`, a schema's columns in an error.
fn describe(schema: &Schema) -> String {
    let fields = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()));
    fields.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_text_and_say_whose_fault_they_are() {
        let error = EnrichError::FifoSides { side: "B".into() };
        assert_eq!(error.fault(), Fault::Config);
        assert_eq!(
            error.to_string(),
            "FIFOMatch: the entry side and the exit side are both 'B'; they must differ"
        );
        let error = EnrichError::EventOutOfRange {
            elapsed_ms: -1,
            row_id: 7,
        };
        assert_eq!(error.fault(), Fault::Data);
        assert_eq!(
            error.to_string(),
            "enrich: event time out of range (elapsed_ms -1, row_id 7); elapsed_ms must be in \
             0..2^27 and row_id below 2^36"
        );
        let error = EnrichError::SourceRows {
            rule: "TagRule(x)".into(),
        };
        assert_eq!(error.fault(), Fault::Bug);
        let error = EnrichError::rule(
            "TagRule(vwap)",
            "no price table for 2024-01-02",
            Fault::Data,
        );
        assert_eq!(error.fault(), Fault::Data);
        assert_eq!(
            error.to_string(),
            "TagRule(vwap): no price table for 2024-01-02"
        );
    }
}
