//! The plan of a date's rules, worked out once before they run: each rule's input and
//! added columns (checked against the columns where it runs), the output's columns, and
//! whether the output goes out in event order (and which input columns to put in event
//! order first).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema, SchemaRef};

use super::frame::Frame;
use super::{
    Carried, EnrichError, EnrichRule, EnrichSpec, Revisions, Rows, RuleOutput, checked_outputs,
};

/// Adds `field`, or replaces the field of the same name in place.
fn set_field(fields: &mut Vec<Field>, field: Field) {
    match fields.iter().position(|f| f.name() == field.name()) {
        Some(i) => fields[i] = field,
        None => fields.push(field),
    }
}

/// A date's rules, with what was worked out once for all its chunks.
pub(super) struct RulePlan {
    pub(super) spec: EnrichSpec,
    /// Each rule's input columns.
    pub(super) inputs: Vec<Vec<String>>,
    /// Each rule's added columns.
    pub(super) outputs: Vec<Vec<Field>>,
    /// The output's columns.
    pub(super) schema: SchemaRef,
    /// Whether the output goes out in event order ([`output_order`]).
    pub(super) event_order: bool,
    /// The input columns to put in event order before the rules run ([`output_order`]).
    pub(super) early: Vec<String>,
}

impl RulePlan {
    /// The plan of `spec`'s rules over rows with the columns of `input_schema`: each
    /// rule's added columns, checked against the columns where it runs (the input's as
    /// the rules before it left them; an error names the rule), and the output's order.
    pub(super) fn new(spec: &EnrichSpec, input_schema: &Schema) -> Result<RulePlan, EnrichError> {
        let fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let inputs: Vec<Vec<String>> = spec.rules.iter().map(|r| r.inputs()).collect();
        // Each rule's added columns, checked against the columns where it runs.
        let mut rule_outputs = Vec::with_capacity(spec.rules.len());
        let mut final_fields = fields.clone();
        for rule in &spec.rules {
            let outputs = checked_outputs(rule.as_ref(), &final_fields)?;
            for field in &outputs {
                set_field(&mut final_fields, field.clone());
            }
            rule_outputs.push(outputs);
        }
        let (event_order, early) =
            output_order(spec, &fields, &final_fields, &rule_outputs, &inputs);
        Ok(RulePlan {
            spec: spec.clone(),
            inputs,
            outputs: rule_outputs,
            schema: Arc::new(Schema::new(spec.kept(final_fields))),
            event_order,
            early,
        })
    }

    /// Runs every rule over the frame's rows, adding up their counts.
    pub(super) fn run(
        &self,
        frame: &mut Frame,
        counts: &mut BTreeMap<String, u64>,
    ) -> Result<(), EnrichError> {
        self.run_with(frame, counts, |_, rule, rows| rule.apply(rows))
    }

    /// Runs every rule over the frame's rows as a continuation of earlier calls over the
    /// same date ([`EnrichRule::resume`]): the frame's run `r` is symbol `symbols[r]`,
    /// rule `i` carries its states in `carried[i]`, and the rules' [`Revisions`] are
    /// pushed to `revisions`.
    pub(super) fn run_resumed(
        &self,
        frame: &mut Frame,
        counts: &mut BTreeMap<String, u64>,
        symbols: &[u32],
        carried: &mut [Carried],
        revisions: &mut Vec<Revisions>,
    ) -> Result<(), EnrichError> {
        self.run_with(frame, counts, |i, rule, rows| {
            let mut out = rule.resume(rows, symbols, &mut carried[i])?;
            revisions.extend(out.revisions.take());
            Ok(out)
        })
    }

    /// Runs every rule over the frame's rows, rule `i` by `call(i, rule, rows)`.
    fn run_with(
        &self,
        frame: &mut Frame,
        counts: &mut BTreeMap<String, u64>,
        mut call: impl FnMut(usize, &dyn EnrichRule, &Rows<'_>) -> Result<RuleOutput, EnrichError>,
    ) -> Result<(), EnrichError> {
        let spec = &self.spec;
        for (i, (rule, outputs)) in spec.rules.iter().zip(&self.outputs).enumerate() {
            let columns: Vec<ArrayRef> = self.inputs[i]
                .iter()
                .map(|name| frame.column(name))
                .collect::<Result<_, _>>()?;
            frame.compute_event_columns();
            let (elapsed_ms, row_id) = frame.event_columns();
            let rows = Rows {
                columns: &columns,
                runs: &frame.runs,
                elapsed_ms,
                row_id,
            };
            let out = call(i, rule.as_ref(), &rows)?;
            drop(columns);
            frame.apply(rule.as_ref(), outputs, out, counts)?;
            // Free the columns that neither the output nor a later rule uses.
            let later: Vec<&String> = self.inputs[i + 1..].iter().flatten().collect();
            let needed = |name: &str| {
                spec.keep
                    .as_ref()
                    .is_none_or(|keep| keep.iter().any(|k| k == name))
                    || later.iter().any(|l| *l == name)
            };
            frame.retain(needed);
        }
        Ok(())
    }
}

/// Whether the output goes out in event order, which moves no more columns when the
/// rules add at least as many columns to the output as it keeps of the input columns
/// no rule reads (those are scattered into event order; in input order, every added
/// column would be gathered back instead) and lets the rules run chunk by chunk, and
/// the input columns to put in event order before
/// the rules run (those the rules read or the output keeps): none when a rule replaces
/// an input column that another reads, and then the input batches stay until the end.
fn output_order(
    spec: &EnrichSpec,
    input_fields: &[Field],
    final_fields: &[Field],
    rule_outputs: &[Vec<Field>],
    inputs: &[Vec<String>],
) -> (bool, Vec<String>) {
    let kept = spec.kept(final_fields.to_vec());
    let is_produced = |name: &str| rule_outputs.iter().flatten().any(|f| f.name() == name);
    let is_read = |name: &str| inputs.iter().flatten().any(|i| i == name);
    let is_input = |name: &str| input_fields.iter().any(|f| f.name() == name);
    let added = kept.iter().filter(|f| is_produced(f.name())).count();
    let unordered = kept
        .iter()
        .filter(|f| !is_produced(f.name()) && !is_read(f.name()))
        .count();
    if unordered > added {
        return (false, Vec::new());
    }
    if inputs
        .iter()
        .flatten()
        .any(|i| is_input(i) && is_produced(i))
    {
        return (true, Vec::new());
    }
    let read = inputs
        .iter()
        .flatten()
        .filter(|name| is_input(name))
        .cloned();
    let output = kept
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| is_input(name) && !is_produced(name));
    let mut early: Vec<String> = read.chain(output).collect();
    early.sort();
    early.dedup();
    (true, early)
}
