//! Rules written in Rust: the typed [`TagRule`] API, and [`custom`], which makes one an
//! [`EnrichRule`]. The row codec ([`super::codec`]) reads and writes the typed values.

use std::fmt;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema};

use super::codec::{InputRow, OutputRow};
use super::{Carried, EnrichError, EnrichRule, Rows, RuleOutput, fresh_symbols};

/// The event a row belongs to: its `row_id` and `elapsed_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The row's position in the date's file.
    pub row_id: u64,
    /// The row's trading time in ms since the first session's start.
    pub elapsed_ms: i64,
}

/// A rule written in Rust: the seeds' `TagRule.process(row, state)`, typed.
///
/// Per symbol and date, the operator creates a fresh `State::default()` and calls
/// [`TagRule::process`] once per row in event order. The rule emits any number of
/// output rows for the row with [`Emit::push`]: one is the common case, several expand
/// the row (each copy keeps all the row's columns), none drops it (counted as
/// `rule.{name}.dropped_rows`). Register it on a pipeline with the library API (see
/// `Pipeline::with_rule` in the `vizflow` crate) or wrap it with [`custom`].
///
/// Inputs are read as the types of `Input`: `Option<f64>` reads any numeric column
/// (cast to `f64`), `Option<i64>` any integer column, `Option<&str>` any string
/// column, `Option<bool>` a boolean column; nulls are `None`. The same types without
/// `Option` read nulls as `0`, `0.0`, `""` and `false`. Outputs are typed the same way
/// (`Option<T>` writes nulls).
///
/// The rule's `Debug` form (derive it) is its [fingerprint](TagRule::fingerprint):
/// `--skip-existing` recomputes a date's partial when it changes.
pub trait TagRule: fmt::Debug + Send + Sync + 'static {
    /// The state kept per symbol and date.
    type State: Default + 'static;
    /// The input values of one row: a value type or a tuple of up to six.
    type Input<'a>: InputRow<'a>;
    /// The output values of one output row: a value type or a tuple of up to six.
    type Output: OutputRow;

    /// The rule's name, used in errors and report counts.
    fn name(&self) -> String;
    /// The input column names, one per element of `Input`.
    fn inputs(&self) -> Vec<String>;
    /// The output column names, one per element of `Output`.
    fn outputs(&self) -> Vec<String>;
    /// Processes one row (in event order), updating `state` and emitting output rows.
    fn process(
        &self,
        input: Self::Input<'_>,
        event: Event,
        state: &mut Self::State,
        emit: &mut Emit<'_, Self::Output>,
    );
    /// What defines the rule's results beside its code: its parameters. It enters the
    /// pipeline's hash (stored in every partial), so `--skip-existing` recomputes the
    /// partials a rule with other parameters made. The default is the rule's `Debug`
    /// form; override it when that form leaves out something the results depend on (a
    /// table the rule loads, say), or changes when the results do not.
    fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}

/// Where [`TagRule::process`] puts its output rows.
pub struct Emit<'b, O: OutputRow> {
    builders: &'b mut O::Builders,
    source: &'b mut Vec<u32>,
    row: u32,
}

impl<O: OutputRow> Emit<'_, O> {
    /// Emits one output row for the current row, with these output values.
    pub fn push(&mut self, values: O) {
        values.append(self.builders);
        self.source.push(self.row);
    }
}

/// A [`TagRule`] as an [`EnrichRule`], to put in an [`EnrichSpec`](super::EnrichSpec).
pub fn custom<R: TagRule>(rule: R) -> Arc<dyn EnrichRule> {
    Arc::new(Custom(rule))
}

struct Custom<R>(R);

impl<R: TagRule> fmt::Debug for Custom<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagRule({})", self.0.name())
    }
}

impl<R: TagRule> EnrichRule for Custom<R> {
    fn name(&self) -> String {
        format!("TagRule({})", self.0.name())
    }

    fn fingerprint(&self) -> String {
        format!("{}: {}", self.name(), self.0.fingerprint())
    }

    fn inputs(&self) -> Vec<String> {
        self.0.inputs()
    }

    fn output_names(&self) -> Vec<String> {
        self.0.outputs()
    }

    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, EnrichError> {
        let (inputs, outputs) = (self.0.inputs(), self.0.outputs());
        let input_types = R::Input::types();
        if inputs.len() != input_types.len() {
            return Err(EnrichError::Arity {
                rule: self.name(),
                list: "inputs",
                kind: "Input",
                named: inputs.len(),
                typed: input_types.len(),
            });
        }
        for (name, wanted) in inputs.iter().zip(&input_types) {
            let actual = schema
                .field_with_name(name)
                .map_err(|source| EnrichError::RuleArrow {
                    rule: self.name(),
                    source,
                })?
                .data_type();
            if wanted.cast_from(actual).is_none() {
                return Err(EnrichError::InputType {
                    rule: self.name(),
                    column: name.clone(),
                    data_type: actual.clone(),
                    expected: wanted.describe().to_owned(),
                });
            }
        }
        let output_types = R::Output::data_types();
        if outputs.len() != output_types.len() {
            return Err(EnrichError::Arity {
                rule: self.name(),
                list: "outputs",
                kind: "Output",
                named: outputs.len(),
                typed: output_types.len(),
            });
        }
        Ok(outputs
            .into_iter()
            .zip(output_types)
            .map(|(name, data_type)| Field::new(name, data_type, true))
            .collect())
    }

    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, EnrichError> {
        self.resume(rows, &fresh_symbols(rows), &mut Carried::default())
    }

    /// Each symbol's `State` is carried to its next call.
    fn resume(
        &self,
        rows: &Rows<'_>,
        symbols: &[u32],
        carried: &mut Carried,
    ) -> Result<RuleOutput, EnrichError> {
        let name = self.0.name();
        let columns: Vec<ArrayRef> = rows
            .columns
            .iter()
            .zip(R::Input::types())
            .map(|(column, kind)| kind.cast(column))
            .collect::<Result<_, _>>()
            .map_err(|source| EnrichError::ReadInput {
                rule: self.name(),
                source,
            })?;
        let readers = R::Input::readers(&columns);
        let mut builders = R::Output::builders(rows.len());
        let mut source = Vec::with_capacity(rows.len());
        for (run, symbol) in rows.runs.windows(2).zip(symbols) {
            let state = carried.state_mut::<R::State>(*symbol);
            for row in run[0]..run[1] {
                let event = Event {
                    row_id: rows.row_id[row],
                    elapsed_ms: rows.elapsed_ms[row],
                };
                let mut emit = Emit {
                    builders: &mut builders,
                    source: &mut source,
                    row: row as u32,
                };
                self.0
                    .process(R::Input::read(&readers, row), event, state, &mut emit);
            }
        }
        let mut counts = Vec::new();
        let identity =
            source.len() == rows.len() && source.iter().enumerate().all(|(i, s)| *s as usize == i);
        if !identity {
            let mut emitted = vec![false; rows.len()];
            for s in &source {
                emitted[*s as usize] = true;
            }
            let dropped = emitted.iter().filter(|e| !**e).count() as u64;
            counts.push((format!("rule.{name}.dropped_rows"), dropped));
            counts.push((
                format!("rule.{name}.added_rows"),
                (source.len() as u64 + dropped).saturating_sub(rows.len() as u64),
            ));
        }
        Ok(RuleOutput {
            source: (!identity).then_some(source),
            columns: R::Output::finish(builders),
            counts,
            revisions: None,
        })
    }
}
