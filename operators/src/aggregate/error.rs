//! The errors of the aggregate stage: what went wrong ([`AggregateProblem`], naming the
//! column, metric or value) and whose fault it is ([`Fault`]).

use arrow::datatypes::DataType;
use arrow::error::ArrowError;

use crate::Fault;
use crate::expr::ExprError;

/// An error of the aggregate stage. Its text is `aggregate: ` and its problem (see
/// [`AggregateError::problem`]), except for a value column that does not cast, whose
/// text is arrow's alone, as it has always been.
#[derive(Debug, thiserror::Error)]
#[error("{}{problem}", stage_prefix(.problem))]
pub struct AggregateError {
    /// Boxed: an error is rare, and a `Result` of it stays small on the good path.
    problem: Box<AggregateProblem>,
}

fn stage_prefix(problem: &AggregateProblem) -> &'static str {
    match problem {
        AggregateProblem::Cast(_) => "",
        _ => "aggregate: ",
    }
}

impl AggregateError {
    /// What went wrong; its text is the error's without the `aggregate: ` prefix (for
    /// messages that name the stage their own way, such as a configuration section's).
    pub fn problem(&self) -> &AggregateProblem {
        &self.problem
    }

    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        self.problem.fault()
    }
}

impl From<AggregateProblem> for AggregateError {
    fn from(problem: AggregateProblem) -> Self {
        AggregateError {
            problem: Box::new(problem),
        }
    }
}

/// What went wrong in the aggregate stage (the text without the stage's name).
#[derive(Debug, thiserror::Error)]
pub enum AggregateProblem {
    /// A column the spec names is not in the input schema.
    #[error("unknown column '{column}' in {context}; {hint}available columns: {available}")]
    UnknownColumn {
        /// The column.
        column: String,
        /// Where the spec names it: `group_by` or `metric 'name' = 'text'`.
        context: String,
        /// A did-you-mean hint (empty, or ending in a space).
        hint: String,
        /// The input's columns, comma-separated.
        available: String,
    },
    /// A group-by column of a type that cannot be a key.
    #[error(
        "cannot group by '{column}' of type {data_type}; group by integers, floats, strings, booleans or dates"
    )]
    Ungroupable {
        /// The column.
        column: String,
        /// Its type.
        data_type: DataType,
    },
    /// An aggregate call other than a count on a column that is not a number.
    #[error(
        "{call} needs a numeric or boolean column, but '{column}' has type {data_type} (in {context})"
    )]
    NotNumeric {
        /// The call, e.g. `sum(side)`.
        call: String,
        /// The column.
        column: String,
        /// Its type.
        data_type: DataType,
        /// The metric: `metric 'name' = 'text'`.
        context: String,
    },
    /// A group-by column missing from a batch.
    #[error("group_by column '{column}' is missing")]
    MissingGroupColumn {
        /// The column.
        column: String,
    },
    /// A group-by column that does not convert to its key type.
    #[error("group_by '{column}': {source}")]
    GroupCast {
        /// The column.
        column: String,
        /// Arrow's error.
        source: ArrowError,
    },
    /// A value column missing from a batch.
    #[error("column '{column}' is missing")]
    MissingColumn {
        /// The column.
        column: String,
    },
    /// A value column that does not convert to the numbers it sums.
    #[error("{0}")]
    Cast(ArrowError),
    /// An integer sum beyond `i64`.
    #[error("an integer sum ({sum}) overflows i64")]
    SumOverflow {
        /// The sum.
        sum: i128,
    },
    /// A metric whose arithmetic over its aggregate calls failed (on the values, or
    /// already on the types of its calls).
    #[error("metric '{metric}': {source}")]
    Metric {
        /// The metric's output name.
        metric: String,
        /// The expression's error.
        source: ExprError,
    },
    /// Group keys that do not decode from their row encoding.
    #[error("cannot decode group keys: {0}")]
    DecodeKeys(ArrowError),
    /// Another arrow error (encoding keys, assembling a partial).
    #[error("{0}")]
    Arrow(ArrowError),
}

impl AggregateProblem {
    /// Whose fault the problem is.
    pub fn fault(&self) -> Fault {
        match self {
            AggregateProblem::UnknownColumn { .. }
            | AggregateProblem::Ungroupable { .. }
            | AggregateProblem::NotNumeric { .. } => Fault::Config,
            AggregateProblem::MissingGroupColumn { .. }
            | AggregateProblem::GroupCast { .. }
            | AggregateProblem::MissingColumn { .. }
            | AggregateProblem::Cast(_)
            | AggregateProblem::SumOverflow { .. }
            | AggregateProblem::Metric {
                source: ExprError::Compute { .. },
                ..
            } => Fault::Data,
            // A metric that fails otherwise does so on every date, even on no rows.
            AggregateProblem::Metric { .. } => Fault::Config,
            AggregateProblem::DecodeKeys(_) | AggregateProblem::Arrow(_) => Fault::Bug,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_the_stage_and_the_problem_but_for_a_cast() {
        let missing = AggregateError::from(AggregateProblem::MissingColumn {
            column: "qty".into(),
        });
        assert_eq!(missing.to_string(), "aggregate: column 'qty' is missing");
        assert_eq!(missing.problem().to_string(), "column 'qty' is missing");
        assert_eq!(missing.fault(), Fault::Data);
        let arrow = || ArrowError::CastError("Can't cast value 1e300 to type Int64".into());
        let cast = AggregateError::from(AggregateProblem::Cast(arrow()));
        assert_eq!(cast.to_string(), arrow().to_string());
    }
}
