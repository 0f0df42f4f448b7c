//! SQL-syntax expressions, evaluated vectorised on Arrow arrays.
//!
//! Pipelines derive columns with scalar expressions ([`Expr`]), e.g.
//! `mid = (AskPrice1 + BidPrice1) / 2` or `CASE WHEN orderSide = 'B' THEN qty ELSE -qty END`,
//! and compute aggregate metrics with [`MetricExpr`], e.g. `sum(notional) / sum(qty)`
//! (SEMANTICS.md, "aggregate"). Text is parsed once with `sqlparser` and converted to a small
//! private syntax tree; evaluation runs one Arrow compute kernel per tree node and batch.
//!
//! # Semantics
//!
//! - **Literals**: integers are `Int64` (an integer too large for `i64` becomes `Float64`),
//!   decimals and exponents (`0.5`, `1e-4`) `Float64`, `'B'` `Utf8`, `TRUE`/`FALSE`, `NULL`.
//! - **Columns**: `AskPrice1` or `"my col"`; names are case-sensitive. A bare column keeps its
//!   type; operators first bring integers of any width to `Int64`, floats to `Float64` and
//!   strings (`LargeUtf8`, `Utf8View`, dictionaries of strings) to `Utf8`.
//! - **Arithmetic** `+ - * %` and unary `-` give `Int64` on integers and `Float64` as soon as a
//!   float is involved; integer overflow is an error. **`/` always gives `Float64`**, so
//!   `3 / 2` is `1.5`, not SQL's integer `1`. Division (and `%`) by zero gives null, for
//!   integers and floats alike, never an error or an infinity.
//! - **Comparisons** `= != <> < <= > >=` between numbers, strings or booleans; a null operand
//!   gives null. Floats compare as in PostgreSQL: `-0.0 = 0.0`, and every NaN equals NaN and
//!   sorts above every number.
//! - **Logic**: `AND`, `OR`, `NOT` with SQL's three-valued (Kleene) logic, `IS [NOT] NULL`,
//!   `[NOT] BETWEEN` (inclusive) and `[NOT] IN (...)` (a chain of `=` joined by `OR`).
//! - **`CASE WHEN c THEN v ... [ELSE e] END`** and `CASE x WHEN a THEN v ... END`: a null
//!   condition counts as false, no `ELSE` gives null. Every branch is evaluated on every row,
//!   so an integer overflow in a branch not taken is still an error.
//! - **Functions**: `abs`, `sqrt`, `ln`, `log10`, `exp`, `floor`, `ceil`, `round` (half away
//!   from zero; integers pass through unchanged), `least`, `greatest` (both skip nulls),
//!   `coalesce`. `sqrt`, `ln`, ... follow IEEE 754 (`sqrt(-1)` is NaN, `ln(0)` is `-inf`).
//! - **Casts**: `CAST(x AS BIGINT|INTEGER|DOUBLE|FLOAT|VARCHAR|BOOLEAN)`; `INTEGER` is `Int64`
//!   too. `CAST` fails on a value it cannot convert; `TRY_CAST` gives null instead. Floats
//!   cast to integers are truncated toward zero.
//! - An operation whose operands are all `NULL` literals is typed `Int64`.
//!
//! Every error names the expression text; see [`ExprError`].
//!
//! A running value per symbol and date (e.g. a position, `prev + qty`) is computed row by row
//! with [`Expr::recurrence`], with the same semantics.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use vizflow_operators::expr::Expr;
//!
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("orderSide", DataType::Utf8, true),
//!     Field::new("qty", DataType::Int64, true),
//! ]));
//! let batch = RecordBatch::try_new(schema.clone(), vec![
//!     Arc::new(StringArray::from(vec!["B", "S", "B"])),
//!     Arc::new(Int64Array::from(vec![Some(100), Some(30), None])),
//! ]).unwrap();
//!
//! let signed = Expr::parse("CASE WHEN orderSide = 'B' THEN qty ELSE -qty END").unwrap();
//! assert_eq!(signed.check(&schema).unwrap(), DataType::Int64);
//! let values = signed.evaluate(&batch).unwrap();
//! assert_eq!(values.as_ref(), &Int64Array::from(vec![Some(100), Some(-30), None]) as &dyn Array);
//!
//! let half = Expr::parse("qty / 2").unwrap();
//! let values = half.evaluate(&batch).unwrap();
//! assert_eq!(values.as_ref(), &Float64Array::from(vec![Some(50.0), Some(15.0), None]) as &dyn Array);
//! ```

use std::fmt;

pub use crate::suggest::closest;
use crate::suggest::did_you_mean;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Datum, Float64Array, Int64Array, NullArray,
    StringArray, UInt32Array,
};
use arrow::compute::kernels::{cmp, numeric, zip::zip};
use arrow::compute::{
    CastOptions, and_kleene, can_cast_types, cast_with_options, is_not_null, is_null, not, nullif,
    or_kleene, take,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use sqlparser::ast as sql;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

// The parts: `convert` turns sqlparser's AST into the syntax tree, `eval` holds the
// values and helpers evaluation works with, `metric` the aggregate expressions,
// `recurrence` the row-by-row steps of `TagRunning` and `scalar` the one-value
// operations those steps use.
mod convert;
mod eval;
mod metric;
mod recurrence;
mod scalar;

use convert::*;
use eval::*;
pub use metric::{AggregateCall, AggregateFunction, MetricExpr};

pub use recurrence::{PreparedRecurrence, Recurrence};
pub use scalar::Scalar;

/// Why an expression could not be parsed, checked or evaluated.
///
/// Every message names the expression text; the `Display` output is meant for users.
#[derive(Debug, thiserror::Error)]
pub enum ExprError {
    /// The text is not a single SQL expression; `message` is sqlparser's, with its position.
    #[error("cannot parse expression '{text}': {message}")]
    Parse {
        /// The expression text.
        text: String,
        /// What went wrong, e.g. `Expected: an expression, found: EOF`.
        message: String,
    },
    /// Valid SQL that VizFlow does not evaluate (subqueries, window functions, `LIKE`, ...).
    #[error("unsupported {construct} `{fragment}` in expression '{text}'")]
    Unsupported {
        /// The expression text.
        text: String,
        /// What kind of construct it is, e.g. `subquery`.
        construct: String,
        /// The offending part of the expression.
        fragment: String,
    },
    /// A column that is not in the schema.
    #[error(
        "unknown column '{column}' in expression '{text}'; {}available columns: {}",
        did_you_mean(suggestion.as_deref()),
        available.join(", ")
    )]
    UnknownColumn {
        /// The expression text.
        text: String,
        /// The name as written.
        column: String,
        /// The closest available name, if any is close (see [`closest`]).
        suggestion: Option<String>,
        /// Every column of the schema.
        available: Vec<String>,
    },
    /// A function that does not exist.
    #[error(
        "unknown function '{function}' in expression '{text}'; {}supported functions: {}, CAST, TRY_CAST",
        did_you_mean(suggestion.as_deref()),
        FUNCTIONS.map(|(name, _)| name).join(", ")
    )]
    UnknownFunction {
        /// The expression text.
        text: String,
        /// The function name, lowercased.
        function: String,
        /// The closest supported function, if any is close.
        suggestion: Option<String>,
    },
    /// A function called with the wrong number of arguments.
    #[error("function '{function}' takes {expected}, got {got} in expression '{text}'")]
    Arity {
        /// The expression text.
        text: String,
        /// The function name, lowercased.
        function: String,
        /// What it takes, e.g. `1 argument`.
        expected: &'static str,
        /// How many arguments it was given.
        got: usize,
    },
    /// An operator or function applied to types it does not accept.
    #[error(
        "cannot apply '{operator}' to {} in expression '{text}'",
        type_list(types)
    )]
    Type {
        /// The expression text.
        text: String,
        /// The operator or function, e.g. `+`, `CASE`, `sqrt`.
        operator: String,
        /// The operand types, as found.
        types: Vec<DataType>,
    },
    /// A kernel failed while evaluating, e.g. on integer overflow or a failed `CAST`.
    #[error("cannot evaluate expression '{text}': {source}")]
    Compute {
        /// The expression text.
        text: String,
        /// The kernel's error.
        source: ArrowError,
    },
    /// An aggregate whose argument is an expression rather than a column.
    #[error(
        "the argument of {call} in metric '{text}' is an expression, not a column; \
         define a derived column first, e.g. `derive: x = {argument}`, and aggregate that column"
    )]
    AggregateArgument {
        /// The metric text.
        text: String,
        /// The aggregate call as written, e.g. `sum(qty * fillPrice)`.
        call: String,
        /// Its argument, e.g. `qty * fillPrice`.
        argument: String,
    },
    /// An aggregate inside another aggregate's argument.
    #[error("nested aggregate {call} in metric '{text}'; an aggregate's argument must be a column")]
    NestedAggregate {
        /// The metric text.
        text: String,
        /// The outer aggregate call as written, e.g. `sum(count())`.
        call: String,
    },
    /// A column used in a metric outside any aggregate.
    #[error(
        "column '{column}' is used outside an aggregate in metric '{text}'; \
         aggregate it, e.g. sum({column}) or mean({column})"
    )]
    BareColumn {
        /// The metric text.
        text: String,
        /// The column name.
        column: String,
    },
    /// A metric without any aggregate call, e.g. `1 + 2`.
    #[error("metric '{text}' has no aggregate call; use e.g. count() or sum(qty)")]
    NoAggregate {
        /// The metric text.
        text: String,
    },
    /// [`Expr::recurrence`] given a running variable of a type other than Int64, Float64 or
    /// Boolean.
    #[error(
        "the running variable '{var}' of expression '{text}' is {data_type}; \
         it must be Int64, Float64 or Boolean"
    )]
    RecurrenceVariableType {
        /// The expression text.
        text: String,
        /// The variable's name, e.g. `prev`.
        var: String,
        /// The type it was given.
        data_type: DataType,
    },
    /// [`Expr::recurrence`] given a schema with a column named like the running variable.
    #[error(
        "the running variable '{var}' of expression '{text}' is also a column of the input; \
         rename the variable or the column"
    )]
    RecurrenceVariableIsColumn {
        /// The expression text.
        text: String,
        /// The variable's name, e.g. `prev`.
        var: String,
    },
    /// A running value (see [`Expr::recurrence`]) whose expression gives a type other than
    /// Int64, Float64 or Boolean.
    #[error(
        "expression '{text}' gives {data_type}, but a running value must be Int64, Float64 or \
         Boolean; convert it, e.g. CAST(... AS BIGINT)"
    )]
    RecurrenceResultType {
        /// The expression text.
        text: String,
        /// The type the expression gives.
        data_type: DataType,
    },
    /// A string value in a part of a running-value expression (see [`Expr::recurrence`]) that
    /// involves the running variable, which the row-by-row evaluator does not handle.
    #[error(
        "cannot apply '{operator}' to {} in expression '{text}': strings may only be used in \
         parts of the expression that do not involve '{var}'",
        type_list(types)
    )]
    RecurrenceString {
        /// The expression text.
        text: String,
        /// The variable's name, e.g. `prev`.
        var: String,
        /// The operator or function, e.g. `CASE`, `CAST AS Utf8`.
        operator: String,
        /// The operand types, as found.
        types: Vec<DataType>,
    },
    /// [`MetricExpr::evaluate`] given a different number of arrays than there are calls.
    #[error("metric '{text}' has {expected} aggregate calls but was given {got} arrays")]
    CallValues {
        /// The metric text.
        text: String,
        /// The number of calls, `calls().len()`.
        expected: usize,
        /// The number of arrays given.
        got: usize,
    },
}

impl ExprError {
    /// Whose fault the error is: a kernel failing on a value is the data's, a metric
    /// given the wrong number of arrays a bug, anything found while parsing or
    /// checking the expression the configuration's.
    pub fn fault(&self) -> crate::Fault {
        match self {
            ExprError::Compute { .. } => crate::Fault::Data,
            ExprError::CallValues { .. } => crate::Fault::Bug,
            _ => crate::Fault::Config,
        }
    }
}

/// `Utf8`, `Utf8 and Float64`, `Int64, Utf8 and Null`.
fn type_list(types: &[DataType]) -> String {
    let names: Vec<String> = types.iter().map(DataType::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// A compiled scalar expression: parsed once, evaluated on any number of batches.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Array, Float64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use vizflow_operators::expr::Expr;
///
/// let mid = Expr::parse("(AskPrice1 + BidPrice1) / 2").unwrap();
/// assert_eq!(mid.columns(), ["AskPrice1", "BidPrice1"]);
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("AskPrice1", DataType::Float64, true),
///     Field::new("BidPrice1", DataType::Float64, true),
/// ]));
/// assert_eq!(mid.check(&schema).unwrap(), DataType::Float64);
/// let batch = RecordBatch::try_new(schema, vec![
///     Arc::new(Float64Array::from(vec![10.2, 7.0])),
///     Arc::new(Float64Array::from(vec![10.0, 6.0])),
/// ]).unwrap();
/// let expected = Float64Array::from(vec![10.1, 6.5]);
/// assert_eq!(mid.evaluate(&batch).unwrap().as_ref(), &expected as &dyn Array);
/// ```
#[derive(Clone)]
pub struct Expr {
    text: String,
    node: Node,
}

/// The syntax tree, without the text as written: two spellings of one expression
/// (`a+b`, `a + b`) are the same expression, and a pipeline's hash, taken over its
/// `Debug` form, is the same for both.
impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expr").field("node", &self.node).finish()
    }
}

/// The syntax tree evaluation works on; `BETWEEN`, `IN` and simple `CASE` are rewritten into
/// comparisons while converting.
#[derive(Clone, Debug)]
enum Node {
    Column(String),
    /// A one-element array.
    Literal(ArrayRef),
    Negate(Box<Node>),
    Not(Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    IsNull {
        arg: Box<Node>,
        negated: bool,
    },
    Case {
        branches: Vec<(Node, Node)>,
        otherwise: Option<Box<Node>>,
    },
    Call(Function, Vec<Node>),
    Cast {
        arg: Box<Node>,
        to: DataType,
        strict: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Rem => "%",
            Eq => "=",
            NotEq => "<>",
            Lt => "<",
            LtEq => "<=",
            Gt => ">",
            GtEq => ">=",
            And => "AND",
            Or => "OR",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    Abs,
    Sqrt,
    Ln,
    Log10,
    Exp,
    Floor,
    Ceil,
    Round,
    Least,
    Greatest,
    Coalesce,
}

const FUNCTIONS: [(&str, Function); 11] = [
    ("abs", Function::Abs),
    ("sqrt", Function::Sqrt),
    ("ln", Function::Ln),
    ("log10", Function::Log10),
    ("exp", Function::Exp),
    ("floor", Function::Floor),
    ("ceil", Function::Ceil),
    ("round", Function::Round),
    ("least", Function::Least),
    ("greatest", Function::Greatest),
    ("coalesce", Function::Coalesce),
];

impl Function {
    fn name(self) -> &'static str {
        FUNCTIONS
            .iter()
            .find(|(_, function)| *function == self)
            .map_or("?", |(name, _)| name)
    }

    fn variadic(self) -> bool {
        matches!(
            self,
            Function::Least | Function::Greatest | Function::Coalesce
        )
    }
}

impl Expr {
    /// Parses one SQL expression.
    ///
    /// ```
    /// use vizflow_operators::expr::Expr;
    ///
    /// let notional = Expr::parse("matched_qty * fillPrice").unwrap();
    /// assert_eq!(notional.text(), "matched_qty * fillPrice");
    /// let error = Expr::parse("qty *").unwrap_err();
    /// assert_eq!(
    ///     error.to_string(),
    ///     "cannot parse expression 'qty *': Expected: an expression, found: EOF"
    /// );
    /// ```
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let node = Converter { text, calls: None }.convert(&parse_sql(text)?)?;
        Ok(Expr {
            text: text.to_string(),
            node,
        })
    }

    /// Column names referenced, in order of first appearance, without duplicates.
    pub fn columns(&self) -> Vec<String> {
        fn visit(node: &Node, columns: &mut Vec<String>) {
            match node {
                Node::Column(name) if !columns.contains(name) => columns.push(name.clone()),
                Node::Column(_) | Node::Literal(_) => {}
                Node::Negate(arg) | Node::Not(arg) => visit(arg, columns),
                Node::IsNull { arg, .. } | Node::Cast { arg, .. } => visit(arg, columns),
                Node::Binary(_, left, right) => {
                    visit(left, columns);
                    visit(right, columns);
                }
                Node::Case {
                    branches,
                    otherwise,
                } => {
                    for (condition, result) in branches {
                        visit(condition, columns);
                        visit(result, columns);
                    }
                    if let Some(otherwise) = otherwise {
                        visit(otherwise, columns);
                    }
                }
                Node::Call(_, args) => args.iter().for_each(|arg| visit(arg, columns)),
            }
        }
        let mut columns = Vec::new();
        visit(&self.node, &mut columns);
        columns
    }

    /// Whether the expression is null wherever `column` is: arithmetic,
    /// comparisons, casts and functions of one argument propagate a null argument;
    /// `AND`, `OR`, `IS NULL`, `CASE`, `coalesce`, `least` and `greatest` may not, and
    /// count as not strict.
    ///
    /// ```
    /// use vizflow_operators::expr::Expr;
    ///
    /// assert!(Expr::parse("abs(r) * 2 > q").unwrap().null_strict("r"));
    /// assert!(!Expr::parse("coalesce(r, 0)").unwrap().null_strict("r"));
    /// assert!(!Expr::parse("q + 1").unwrap().null_strict("r"));
    /// ```
    pub fn null_strict(&self, column: &str) -> bool {
        fn strict(node: &Node, column: &str) -> bool {
            match node {
                Node::Column(name) => name == column,
                Node::Literal(_) | Node::IsNull { .. } | Node::Case { .. } => false,
                Node::Negate(arg) | Node::Not(arg) | Node::Cast { arg, .. } => strict(arg, column),
                Node::Binary(BinaryOp::And | BinaryOp::Or, _, _) => false,
                Node::Binary(_, left, right) => strict(left, column) || strict(right, column),
                Node::Call(function, args) => {
                    !function.variadic() && args.iter().any(|arg| strict(arg, column))
                }
            }
        }
        strict(&self.node, column)
    }

    /// Whether the expression is zero or null wherever each column that `zero` names
    /// is zero, `false` or null, given that the other columns it multiplies them by are
    /// finite or null: `Some` of those columns, or `None` when it may not be. Sums,
    /// differences and products of such columns, with negations and numeric casts, are;
    /// a product with a finite number literal too. Anything else counts as not (a
    /// quotient: `0 / 0` is NaN; a function: `exp(0)` is 1).
    ///
    /// ```
    /// use vizflow_operators::expr::Expr;
    ///
    /// let zero = |c: &str| c == "q";
    /// let factors = |text: &str| Expr::parse(text).unwrap().zero_where(&zero);
    /// assert_eq!(factors("q * px * 2"), Some(vec!["px".to_owned()]));
    /// assert_eq!(factors("-q + q * q"), Some(vec![]));
    /// assert_eq!(factors("q + px"), None);
    /// assert_eq!(factors("q / px"), None);
    /// assert_eq!(factors("q * (px + 1)"), None);
    /// ```
    pub fn zero_where(&self, zero: &dyn Fn(&str) -> bool) -> Option<Vec<String>> {
        fn finite_literal(array: &ArrayRef) -> bool {
            match array.data_type() {
                DataType::Float64 => array.as_primitive::<Float64Type>().value(0).is_finite(),
                DataType::Float32 => {
                    let values = array.as_primitive::<arrow::datatypes::Float32Type>();
                    values.value(0).is_finite()
                }
                data_type => data_type.is_integer(),
            }
        }
        // The factors of `node` that must be finite, when it is zero.
        fn zeros(node: &Node, zero: &dyn Fn(&str) -> bool, factors: &mut Vec<String>) -> bool {
            match node {
                Node::Column(name) => zero(name),
                Node::Negate(arg) => zeros(arg, zero, factors),
                Node::Cast { arg, to, .. } => {
                    (to.is_numeric() || *to == DataType::Boolean) && zeros(arg, zero, factors)
                }
                Node::Binary(BinaryOp::Add | BinaryOp::Sub, left, right) => {
                    zeros(left, zero, factors) && zeros(right, zero, factors)
                }
                Node::Binary(BinaryOp::Mul, left, right) => {
                    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
                    let (l, r) = (
                        zeros(left, zero, &mut mine),
                        zeros(right, zero, &mut theirs),
                    );
                    let finite = |other: &Node, found: &mut Vec<String>| match other {
                        Node::Column(name) => {
                            found.push(name.clone());
                            true
                        }
                        Node::Literal(array) => array.is_valid(0) && finite_literal(array),
                        _ => false,
                    };
                    let ok = match (l, r) {
                        (true, true) => true,
                        (true, false) => finite(right, &mut mine),
                        (false, true) => finite(left, &mut theirs),
                        (false, false) => false,
                    };
                    factors.extend(mine.into_iter().chain(theirs));
                    ok
                }
                _ => false,
            }
        }
        let mut factors = Vec::new();
        let zero = zeros(&self.node, zero, &mut factors);
        factors.sort();
        factors.dedup();
        zero.then_some(factors)
    }

    /// Checks every referenced column exists in `schema` and types are compatible; returns
    /// the output type.
    ///
    /// It evaluates the expression on an empty batch of `schema`, so it accepts exactly what
    /// [`Expr::evaluate`] accepts.
    pub fn check(&self, schema: &Schema) -> Result<DataType, ExprError> {
        let empty = RecordBatch::new_empty(Arc::new(schema.clone()));
        Ok(self.evaluate(&empty)?.data_type().clone())
    }

    /// Evaluates over a batch; the result has `batch.num_rows()` rows.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef, ExprError> {
        let result = self.eval(&self.node, batch);
        let result = result.and_then(|value| Ok(value.expand(batch.num_rows())?));
        result.map_err(|failure| match failure {
            Failure::Expr(error) => error,
            Failure::Arrow(source) => ExprError::Compute {
                text: self.text.clone(),
                source,
            },
        })
    }

    /// The source text, as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn eval(&self, node: &Node, batch: &RecordBatch) -> Result<Value, Failure> {
        let eval = |node| self.eval(node, batch);
        match node {
            Node::Column(name) => match batch.column_by_name(name) {
                Some(array) => Ok(Value::column(array.clone())),
                None => Err(self.unknown_column(name, batch.schema_ref()).into()),
            },
            Node::Literal(array) => Ok(Value::scalar(array.clone())),
            Node::Negate(arg) => {
                let value = eval(arg)?;
                let kind = self.common_kind("-", &[&value], NUMERIC)?;
                Ok(value.cast(kind)?.map(numeric::neg)?)
            }
            Node::Not(arg) => {
                let value = eval(arg)?;
                self.common_kind("NOT", &[&value], BOOLEAN)?;
                Ok(value
                    .cast(Kind::Bool)?
                    .map(|array| Ok(Arc::new(not(array.as_boolean())?)))?)
            }
            Node::Binary(op, left, right) => self.binary(*op, eval(left)?, eval(right)?, batch),
            Node::IsNull { arg, negated } => Ok(eval(arg)?.map(|array| {
                Ok(Arc::new(if *negated {
                    is_not_null(array)?
                } else {
                    is_null(array)?
                }))
            })?),
            Node::Case {
                branches,
                otherwise,
            } => {
                let mut conditions = Vec::with_capacity(branches.len());
                let mut results = Vec::with_capacity(branches.len() + 1);
                for (condition, result) in branches {
                    conditions.push(eval(condition)?);
                    results.push(eval(result)?);
                }
                results.push(match otherwise {
                    Some(otherwise) => eval(otherwise)?,
                    None => Value::scalar(Arc::new(NullArray::new(1))),
                });
                for condition in &conditions {
                    self.common_kind("CASE WHEN", &[condition], BOOLEAN)?;
                }
                let kind = self.common_kind("CASE", &results.iter().collect::<Vec<_>>(), ANY)?;
                let conditions = cast_all(conditions, Kind::Bool)?;
                case(conditions, cast_all(results, kind)?, batch.num_rows())
            }
            Node::Call(function, args) => {
                let args = args.iter().map(eval).collect::<Result<Vec<_>, _>>()?;
                self.call(*function, args, batch.num_rows())
            }
            Node::Cast { arg, to, strict } => {
                let value = eval(arg)?;
                if !can_cast_types(value.data_type(), to) {
                    return Err(self.type_error(&format!("CAST AS {to}"), &[&value]));
                }
                let options = CastOptions {
                    safe: !strict,
                    ..CastOptions::default()
                };
                Ok(value.map(|array| cast_with_options(array, to, &options))?)
            }
        }
    }

    fn binary(
        &self,
        op: BinaryOp,
        left: Value,
        right: Value,
        batch: &RecordBatch,
    ) -> Result<Value, Failure> {
        use BinaryOp::*;
        let scalar = left.scalar && right.scalar;
        let array: ArrayRef = match op {
            Add | Sub | Mul | Div | Rem => {
                let kind = match self.common_kind(op.symbol(), &[&left, &right], NUMERIC)? {
                    _ if op == Div => Kind::Float,
                    kind => kind,
                };
                let (left, mut right) = (left.cast(kind)?, right.cast(kind)?);
                if matches!(op, Div | Rem) {
                    right = right.null_if_zero()?;
                }
                let kernel = match op {
                    Add => numeric::add,
                    Sub => numeric::sub,
                    Mul => numeric::mul,
                    Div => numeric::div,
                    _ => numeric::rem,
                };
                kernel(&left, &right)?
            }
            Eq | NotEq | Lt | LtEq | Gt | GtEq => {
                let kind = self.common_kind(op.symbol(), &[&left, &right], ANY)?;
                let (left, right) = (left.comparable(kind)?, right.comparable(kind)?);
                let kernel = match op {
                    Eq => cmp::eq,
                    NotEq => cmp::neq,
                    Lt => cmp::lt,
                    LtEq => cmp::lt_eq,
                    Gt => cmp::gt,
                    _ => cmp::gt_eq,
                };
                Arc::new(kernel(&left, &right)?)
            }
            And | Or => {
                self.common_kind(op.symbol(), &[&left, &right], BOOLEAN)?;
                let (left, right) = (left.cast(Kind::Bool)?, right.cast(Kind::Bool)?);
                let rows = if scalar { 1 } else { batch.num_rows() };
                let (left, right) = (left.expand(rows)?, right.expand(rows)?);
                let kernel = if op == And { and_kleene } else { or_kleene };
                Arc::new(kernel(left.as_boolean(), right.as_boolean())?)
            }
        };
        Ok(Value { array, scalar })
    }

    fn call(&self, function: Function, args: Vec<Value>, rows: usize) -> Result<Value, Failure> {
        use Function::*;
        let kind = if function.variadic() { ANY } else { NUMERIC };
        let kind = self.common_kind(function.name(), &args.iter().collect::<Vec<_>>(), kind)?;
        let mut args = cast_all(args, kind)?;
        if function.variadic() {
            return Ok(fold_variadic(function, args, kind, rows)?);
        }
        let arg = args.remove(0);
        let float = kind == Kind::Float;
        let result = match function {
            Abs if !float => arg.map(|array| {
                let abs = array
                    .as_primitive::<Int64Type>()
                    .try_unary::<_, Int64Type, _>(checked_abs)?;
                Ok(Arc::new(abs))
            })?,
            Floor | Ceil | Round if !float => arg,
            Abs => float_unary(arg, f64::abs),
            Floor => float_unary(arg, f64::floor),
            Ceil => float_unary(arg, f64::ceil),
            Round => float_unary(arg, f64::round),
            Sqrt => float_unary(arg.cast(Kind::Float)?, f64::sqrt),
            Ln => float_unary(arg.cast(Kind::Float)?, f64::ln),
            Log10 => float_unary(arg.cast(Kind::Float)?, f64::log10),
            Exp => float_unary(arg.cast(Kind::Float)?, f64::exp),
            Least | Greatest | Coalesce => unreachable!("variadic functions are handled above"),
        };
        Ok(result)
    }

    /// The kind all `values` can be cast to; `NULL`-only operands count as `allowed[0]`.
    fn common_kind(
        &self,
        operator: &str,
        values: &[&Value],
        allowed: &[Kind],
    ) -> Result<Kind, Failure> {
        let common = values.iter().try_fold(Kind::Null, |common, value| {
            Kind::of(value.data_type()).and_then(|kind| common.unify(kind))
        });
        match common {
            Some(Kind::Null) => Ok(allowed[0]),
            Some(kind) if allowed.contains(&kind) => Ok(kind),
            _ => Err(self.type_error(operator, values)),
        }
    }

    fn type_error(&self, operator: &str, values: &[&Value]) -> Failure {
        Failure::Expr(ExprError::Type {
            text: self.text.clone(),
            operator: operator.to_string(),
            types: values
                .iter()
                .map(|value| value.data_type().clone())
                .collect(),
        })
    }

    fn unknown_column(&self, name: &str, schema: &Schema) -> ExprError {
        let available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        ExprError::UnknownColumn {
            text: self.text.clone(),
            column: name.to_string(),
            suggestion: closest(name, available.iter().map(String::as_str)).map(str::to_string),
            available,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::metric::quote;
    use super::*;
    use arrow::array::Float64Array;

    #[test]
    fn compiled_expressions_can_move_between_workers() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Expr>();
        send_sync::<MetricExpr>();
    }

    #[test]
    fn call_names_quote_columns_only_when_needed() {
        assert_eq!(quote("return_60"), "return_60");
        assert_eq!(quote("_x1"), "_x1");
        assert_eq!(quote("my col"), "\"my col\"");
        assert_eq!(quote("1st"), "\"1st\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn construct_names_are_sqlparser_variants_in_words() {
        let name = |text: &str| construct_name(&parse_sql(text).unwrap());
        assert_eq!(name("x IN (SELECT 1)"), "in subquery");
        assert_eq!(name("EXISTS (SELECT 1)"), "exists");
        assert_eq!(name("x LIKE 'a%'"), "like");
    }

    #[test]
    fn literal_only_operations_stay_one_value() {
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
        )])
        .unwrap();
        let Node::Binary(_, _, constant) = Expr::parse("x * (2 + 3)").unwrap().node else {
            panic!("expected a product");
        };
        let expr = Expr::parse("x").unwrap();
        let value = expr.eval(&constant, &batch).unwrap();
        assert!(value.scalar);
        assert_eq!(value.array.len(), 1);
        let column = expr.eval(&expr.node, &batch).unwrap();
        assert!(!column.scalar);
    }
}
