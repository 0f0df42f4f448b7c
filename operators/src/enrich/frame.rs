//! The [`Frame`]: a date's rows while the rules run. It holds the input batches, the
//! rows as the rules so far left them (in event order), the input columns put in event
//! order as they are needed, and the columns the rules added.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::datatypes::Field;

use super::event_order::{EventTimes, Events};
use super::scatter::{Part, to_event_order};
use super::{EnrichError, EnrichRule, RuleOutput};
use crate::batch::SelectedRows;

/// A column added by a rule. A rule that runs before any rule expanded or dropped
/// rows adds a value per *event*; such a column is not copied when a later rule
/// reshapes the rows, but read through the current rows' events when needed (and for
/// the output, one batch at a time). Forward returns are such columns.
#[derive(Clone)]
pub(super) struct Added {
    pub(super) name: String,
    pub(super) values: ArrayRef,
    /// One value per event (else one per current row).
    pub(super) per_event: bool,
}

/// A date's rows while the rules run: the input batches, the rows as the rules so far
/// left them (in event order), and the columns the rules added.
#[derive(Clone)]
pub(super) struct Frame {
    /// The input batches, each with the rows of it that count.
    pub(super) inputs: Vec<SelectedRows>,
    /// The events (input rows and times, in event order; their `starts` moved to
    /// `runs`).
    pub(super) events: Events,
    /// The current rows, as indices into `events` (non-decreasing); `None` while they
    /// are the events themselves, before any rule expanded or dropped rows.
    pub(super) rows: Option<Vec<u32>>,
    /// Where each symbol's current rows start, then the end.
    pub(super) runs: Vec<usize>,
    /// The columns added by rules.
    pub(super) added: Vec<Added>,
    /// Input columns in event order (one value per event), by name.
    pub(super) event_ordered: BTreeMap<String, ArrayRef>,
    /// Each input row's position in `events`, once a column needed it.
    pub(super) positions: Vec<u32>,
    /// Input columns gathered for the current rows, by name.
    pub(super) gathered: BTreeMap<String, ArrayRef>,
    /// `elapsed_ms` and `row_id` of the current rows once a rule needed them after
    /// another expanded or dropped rows (reset when a rule reshapes the rows).
    pub(super) reshaped_times: Option<(Vec<i64>, Vec<u64>)>,
}

impl Frame {
    pub(super) fn new(inputs: Vec<SelectedRows>, mut events: Events) -> Self {
        Frame {
            inputs,
            runs: std::mem::take(&mut events.starts),
            events,
            rows: None,
            added: Vec::new(),
            event_ordered: BTreeMap::new(),
            positions: Vec::new(),
            gathered: BTreeMap::new(),
            reshaped_times: None,
        }
    }

    /// The frame of the symbols `symbols` alone, before any rule ran: its input
    /// columns in event order and its events are slices of this frame's (no copy).
    pub(super) fn chunk(&self, symbols: std::ops::Range<usize>) -> Frame {
        let (low, high) = (self.runs[symbols.start], self.runs[symbols.end]);
        let events = Events {
            starts: Vec::new(),
            rows: Vec::new(),
            times: self.events.times.slice(low, high - low),
        };
        let mut chunk = Frame::new(Vec::new(), events);
        chunk.runs = self.runs[symbols.start..=symbols.end]
            .iter()
            .map(|run| run - low)
            .collect();
        chunk.event_ordered = self
            .event_ordered
            .iter()
            .map(|(name, values)| (name.clone(), values.slice(low, high - low)))
            .collect();
        chunk
    }

    /// Puts the input columns `names` in event order and lets the input batches go, so
    /// that they (and their pages of a memory-mapped file) are freed before the rules
    /// run. Each input column goes as soon as it is in event order (its memory is freed
    /// once no worker shares it), the event columns first.
    pub(super) fn order_inputs(&mut self, names: &[String]) -> Result<(), EnrichError> {
        self.retain_inputs(|name| names.iter().any(|e| e == name));
        for name in names {
            self.ordered(name)?;
            self.retain_inputs(|other| other != name);
        }
        self.inputs.clear();
        self.positions = Vec::new();
        self.events.rows = Vec::new();
        Ok(())
    }

    /// The number of current rows.
    pub(super) fn len(&self) -> usize {
        self.rows.as_ref().map_or(self.events.times.len(), Vec::len)
    }

    /// The global input row behind each current row.
    pub(super) fn input_rows(&self) -> Vec<u32> {
        match &self.rows {
            None => self.events.rows.clone(),
            Some(rows) => rows.iter().map(|e| self.events.rows[*e as usize]).collect(),
        }
    }

    /// Makes [`Frame::event_columns`] available.
    pub(super) fn compute_event_columns(&mut self) {
        let (elapsed, row_id) = self.events.times.split();
        if let (Some(rows), None) = (&self.rows, &self.reshaped_times) {
            let elapsed = rows.iter().map(|e| elapsed[*e as usize]).collect();
            let row_id = rows.iter().map(|e| row_id[*e as usize]).collect();
            self.reshaped_times = Some((elapsed, row_id));
        }
    }

    /// `elapsed_ms` of the current rows, gathered alone when
    /// [`Frame::compute_event_columns`] did not run since the rows were reshaped.
    pub(super) fn row_times(&mut self) -> Vec<i64> {
        let (elapsed, _) = self.events.times.split();
        match (&self.rows, &self.reshaped_times) {
            (None, _) => elapsed.to_vec(),
            (Some(_), Some((times, _))) => times.clone(),
            (Some(rows), None) => rows.iter().map(|e| elapsed[*e as usize]).collect(),
        }
    }

    /// `elapsed_ms` and `row_id` of the current rows (after
    /// [`Frame::compute_event_columns`]).
    pub(super) fn event_columns(&self) -> (&[i64], &[u64]) {
        match (&self.rows, &self.events.times, &self.reshaped_times) {
            (None, EventTimes::Split(elapsed, row_id), _) => (elapsed, row_id),
            (Some(_), _, Some((elapsed, row_id))) => (elapsed, row_id),
            _ => unreachable!("compute_event_columns runs first"),
        }
    }

    /// A column for the current rows: added by a rule, or an input column gathered.
    pub(super) fn column(&mut self, name: &str) -> Result<ArrayRef, EnrichError> {
        if let Some(values) = self.gathered.get(name) {
            return Ok(values.clone());
        }
        let ordered = match self.added.iter().find(|a| a.name == name) {
            Some(added) if !added.per_event => return Ok(added.values.clone()),
            Some(added) => added.values.clone(),
            None => self.ordered(name)?,
        };
        // Before any rule expanded or dropped rows, the current rows are the events.
        let values = match &self.rows {
            None => ordered,
            Some(rows) => {
                let rows = UInt32Array::from(rows.clone());
                arrow::compute::take(&ordered, &rows, None).map_err(|source| {
                    EnrichError::Column {
                        column: name.to_owned(),
                        source,
                    }
                })?
            }
        };
        self.gathered.insert(name.to_owned(), values.clone());
        Ok(values)
    }

    /// An input column in event order (one value per event), scattered from the input
    /// batches the first time.
    pub(super) fn ordered(&mut self, name: &str) -> Result<ArrayRef, EnrichError> {
        if let Some(ordered) = self.event_ordered.get(name) {
            return Ok(ordered.clone());
        }
        self.positions();
        let parts: Vec<Part<'_>> = self
            .inputs
            .iter()
            .map(|(b, selection)| {
                let column = b
                    .column_by_name(name)
                    .ok_or_else(|| EnrichError::MissingColumn {
                        column: name.to_owned(),
                    })?;
                Ok((column, selection.as_ref()))
            })
            .collect::<Result<_, EnrichError>>()?;
        let ordered =
            to_event_order(&parts, &self.positions, &self.events.rows).map_err(|source| {
                EnrichError::Column {
                    column: name.to_owned(),
                    source,
                }
            })?;
        self.event_ordered.insert(name.to_owned(), ordered.clone());
        Ok(ordered)
    }

    /// Each input row's position in event order (the inverse of `events`' rows).
    pub(super) fn positions(&mut self) -> &[u32] {
        if self.positions.is_empty() {
            let mut positions = vec![0u32; self.events.rows.len()];
            for (position, row) in self.events.rows.iter().enumerate() {
                positions[*row as usize] = position as u32;
            }
            self.positions = positions;
        }
        &self.positions
    }

    /// Keeps only the columns `needed` by the output or later rules: added columns,
    /// gathered ones, and input columns (an input column replaced by an added one of the
    /// same name is not needed either).
    pub(super) fn retain(&mut self, needed: impl Fn(&str) -> bool) {
        self.added.retain(|a| needed(&a.name));
        self.event_ordered.retain(|name, _| needed(name));
        self.gathered.retain(|name, _| needed(name));
        let added = std::mem::take(&mut self.added);
        self.retain_inputs(|name| needed(name) && !added.iter().any(|a| a.name == name));
        self.added = added;
    }

    /// Keeps only the input batches' columns that are `needed`.
    pub(super) fn retain_inputs(&mut self, needed: impl Fn(&str) -> bool) {
        for (batch, _) in &mut self.inputs {
            let schema = batch.schema();
            let keep: Vec<usize> = (0..schema.fields().len())
                .filter(|c| needed(schema.field(*c).name()))
                .collect();
            if keep.len() < schema.fields().len() {
                *batch = batch.project(&keep).expect("indices are in bounds");
            }
        }
    }

    /// Takes a rule's output: checks its shape, expands or drops rows, adds its columns.
    pub(super) fn apply(
        &mut self,
        rule: &dyn EnrichRule,
        fields: &[Field],
        out: RuleOutput,
        counts: &mut BTreeMap<String, u64>,
    ) -> Result<(), EnrichError> {
        let name = rule.name();
        check_shape(&name, fields, &out, self.len())?;
        for (counter, amount) in out.counts {
            *counts.entry(counter).or_default() += amount;
        }
        if let Some(source) = out.source {
            self.reshape(&name, source)?;
        }
        let per_event = self.rows.is_none();
        for (field, values) in fields.iter().zip(out.columns) {
            self.gathered.remove(field.name());
            self.added.retain(|a| &a.name != field.name());
            self.added.push(Added {
                name: field.name().clone(),
                values,
                per_event,
            });
        }
        Ok(())
    }

    /// The frame of the current rows `rows` (in order) alone, after the rules ran, as
    /// a keyed stage that holds some rows back takes them: its input columns in event
    /// order, events and added columns are shared with this frame (no copy), the added
    /// columns with a value per current row taken.
    pub(super) fn select(&self, rows: Vec<u32>) -> Result<Frame, EnrichError> {
        debug_assert!(
            self.inputs.is_empty(),
            "the input columns are in event order"
        );
        // Every row (a part of a segment's rows often is): nothing to take.
        if rows.len() == self.len() && (rows.iter().enumerate()).all(|(i, row)| *row as usize == i)
        {
            return Ok(self.clone());
        }
        let mut selected = Frame {
            inputs: Vec::new(),
            events: self.events.clone(),
            rows: self.rows.clone(),
            runs: self.runs.clone(),
            added: self.added.clone(),
            event_ordered: self.event_ordered.clone(),
            positions: Vec::new(),
            gathered: self.gathered.clone(),
            reshaped_times: None,
        };
        selected.reshape("select", rows)?;
        Ok(selected)
    }

    /// Makes the current rows those rule `name`'s output rows come from (`source`, each
    /// output row's current row), checked to be in order and in range.
    pub(super) fn reshape(&mut self, name: &str, source: Vec<u32>) -> Result<(), EnrichError> {
        let ordered = source.windows(2).all(|w| w[0] <= w[1]);
        if !ordered || source.last().is_some_and(|s| *s as usize >= self.len()) {
            return Err(EnrichError::SourceRows {
                rule: name.to_owned(),
            });
        }
        let indices = UInt32Array::from(source);
        // Columns with a value per event stay as they are (see `Added`).
        for added in self.added.iter_mut().filter(|a| !a.per_event) {
            added.values =
                arrow::compute::take(&added.values, &indices, None).map_err(|source| {
                    EnrichError::Reshape {
                        rule: name.to_owned(),
                        source,
                    }
                })?;
        }
        let source = indices.values();
        for run in &mut self.runs {
            *run = source.partition_point(|s| (*s as usize) < *run);
        }
        self.rows = Some(match &self.rows {
            None => source.to_vec(),
            Some(rows) => source.iter().map(|s| rows[*s as usize]).collect(),
        });
        self.gathered.clear();
        self.reshaped_times = None;
        Ok(())
    }
}

/// Checks that rule `name` returned a column for each of its `fields`, of the field's
/// type, with a value per output row (one per current row, `before` of them, unless it
/// says where its rows come from).
fn check_shape(
    name: &str,
    fields: &[Field],
    out: &RuleOutput,
    before: usize,
) -> Result<(), EnrichError> {
    let after = out.source.as_ref().map_or(before, Vec::len);
    if out.columns.len() != fields.len() {
        return Err(EnrichError::ColumnCount {
            rule: name.to_owned(),
            returned: out.columns.len(),
            declared: fields.len(),
        });
    }
    for (column, field) in out.columns.iter().zip(fields) {
        if column.len() != after || column.data_type() != field.data_type() {
            return Err(EnrichError::ColumnShape {
                rule: name.to_owned(),
                column: field.name().clone(),
                len: column.len(),
                data_type: column.data_type().clone(),
                expected_len: after,
                expected_type: field.data_type().clone(),
            });
        }
    }
    Ok(())
}
