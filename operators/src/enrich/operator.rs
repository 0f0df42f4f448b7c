//! The `enrich` operator: the kernel as a timely operator, one date at a time per
//! worker, rows exchanged by symbol.

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use super::EnrichSpec;
use super::kernel::enrich_selected;
use crate::batch::{Batch, Partition, SelectedRows, by_symbol, per_date, selected_len};
use crate::report::Diagnostics;
use crate::time::Time;

/// The `enrich` operator.
pub trait Enrich<'scope> {
    /// Runs the rules per symbol and date (see the module docs), exchanging rows by
    /// symbol ([`Partition::Symbol`]).
    fn enrich(self, spec: EnrichSpec, diagnostics: Diagnostics) -> Stream<'scope, Time, Batch>;

    /// Runs the rules per symbol and date with rows spread over the workers as
    /// `partition` says. With [`Partition::Date`] rows are not exchanged: every row of
    /// a date must reach the operator on the same worker (the date's owner).
    fn enrich_partitioned(
        self,
        spec: EnrichSpec,
        diagnostics: Diagnostics,
        partition: Partition,
    ) -> Stream<'scope, Time, Batch>;
}

impl<'scope> Enrich<'scope> for Stream<'scope, Time, Batch> {
    fn enrich(self, spec: EnrichSpec, diagnostics: Diagnostics) -> Stream<'scope, Time, Batch> {
        self.enrich_partitioned(spec, diagnostics, Partition::Symbol)
    }

    fn enrich_partitioned(
        self,
        spec: EnrichSpec,
        diagnostics: Diagnostics,
        partition: Partition,
    ) -> Stream<'scope, Time, Batch> {
        let pact = by_symbol(&spec.symbol);
        let logic = move |date_key, parts: Vec<SelectedRows>, diagnostics: &Diagnostics| {
            let rows_in: usize = parts.iter().map(selected_len).sum();
            let null_symbols = null_symbol_rows(&parts, &spec.symbol);
            let stage = [
                ("enrich.rows_in", rows_in as u64),
                ("enrich.null_symbol_rows", null_symbols as u64),
            ];
            diagnostics.add_all(date_key, stage);
            let mut out = enrich_selected(parts, &spec)?;
            let diagnostics = diagnostics.clone();
            // The rules' counts and the output rows are complete once the output is (the
            // rules may run chunk by chunk as it is consumed); a date that fails on the
            // way reports none of them.
            let mut reported = false;
            Ok(std::iter::from_fn(move || {
                let next = out.next();
                if next.is_none() && !reported {
                    reported = true;
                    let rows_out = ("enrich.rows_out", out.rows_emitted() as u64);
                    let rules = out.counts().iter().map(|(k, v)| (k.as_str(), *v));
                    diagnostics.add_all(date_key, std::iter::once(rows_out).chain(rules));
                }
                next
            }))
        };
        match partition {
            Partition::Symbol => per_date(self, pact, "Enrich", diagnostics, logic),
            Partition::Date => per_date(self, Pipeline, "Enrich", diagnostics, logic),
        }
    }
}

/// The rows the parts select whose `symbol` is null (a part without the column counts
/// none; the kernel reports it).
fn null_symbol_rows(parts: &[SelectedRows], symbol: &str) -> usize {
    parts
        .iter()
        .filter_map(|(b, selection)| Some((b.column_by_name(symbol)?, selection)))
        .map(
            |(symbols, selection)| match (symbols.logical_nulls(), selection) {
                (None, _) => 0,
                (Some(nulls), None) => nulls.null_count(),
                (Some(nulls), Some(rows)) => rows
                    .values()
                    .iter()
                    .filter(|row| nulls.is_null(**row as usize))
                    .count(),
            },
        )
        .sum()
}
