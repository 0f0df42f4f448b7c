//! The scatter kernels: a column of the input batches put in event order by writing
//! each input row to its position (reading the input in order, one write cursor per
//! symbol), for primitive and Utf8 columns; [`to_event_order`] gathers the other types.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, UInt32Array};
use arrow::error::ArrowError;

use crate::batch::for_each_row;

/// A column of one input batch, and the rows of it that count (all when `None`).
pub(super) type Part<'a> = (&'a ArrayRef, Option<&'a UInt32Array>);

/// A column of the input batches (`parts`, in input order, through their selections)
/// in event order, where input row `g` goes to `positions[g]` and event `e` is input
/// row `order[e]` (`order` is the inverse of `positions`): [`scatter`]ed when its type
/// allows, else the selected rows are gathered into event order.
pub(super) fn to_event_order(
    parts: &[Part<'_>],
    positions: &[u32],
    order: &[u32],
) -> Result<ArrayRef, ArrowError> {
    if let Some(ordered) = scatter(parts, positions) {
        return Ok(ordered);
    }
    let selected: Vec<ArrayRef> = parts
        .iter()
        .map(|(column, selection)| match selection {
            Some(rows) => arrow::compute::take(column, rows, None),
            None => Ok((*column).clone()),
        })
        .collect::<Result<_, _>>()?;
    let parts: Vec<&dyn Array> = selected.iter().map(|p| p.as_ref()).collect();
    let whole = arrow::compute::concat(&parts)?;
    let order = UInt32Array::from(order.to_vec());
    arrow::compute::take(&whole, &order, None)
}

/// A column of the input batches (`parts`, in input order, through their selections)
/// put in event order by scattering: input row `g` goes to `positions[g]`. Reading the
/// input in order and writing to one cursor per symbol keeps memory access local, where
/// gathering in event order would miss the cache on nearly every row. Primitive and
/// Utf8 columns; `None` for other types (which are gathered).
fn scatter(parts: &[Part<'_>], positions: &[u32]) -> Option<ArrayRef> {
    let data_type = parts.first()?.0.data_type();
    if data_type == &DataType::Utf8 {
        return scatter_utf8(parts, positions).map(|s| Arc::new(s) as ArrayRef);
    }
    if !data_type.is_primitive() {
        return None;
    }
    macro_rules! scatter_as {
        ($t:ty) => {
            Some(Arc::new(scatter_primitive::<$t>(parts, positions)) as ArrayRef)
        };
    }
    use arrow::datatypes::*;
    match data_type {
        DataType::Int8 => scatter_as!(Int8Type),
        DataType::Int16 => scatter_as!(Int16Type),
        DataType::Int32 => scatter_as!(Int32Type),
        DataType::Int64 => scatter_as!(Int64Type),
        DataType::UInt8 => scatter_as!(UInt8Type),
        DataType::UInt16 => scatter_as!(UInt16Type),
        DataType::UInt32 => scatter_as!(UInt32Type),
        DataType::UInt64 => scatter_as!(UInt64Type),
        DataType::Float32 => scatter_as!(Float32Type),
        DataType::Float64 => scatter_as!(Float64Type),
        _ => None,
    }
}

fn scatter_primitive<T: arrow::datatypes::ArrowPrimitiveType>(
    parts: &[Part<'_>],
    positions: &[u32],
) -> arrow::array::PrimitiveArray<T> {
    let mut values = vec![T::Native::default(); positions.len()];
    let mut valid = scattered_validity(parts, positions.len());
    let mut next = 0;
    for (part, selection) in parts {
        let part = part.as_primitive::<T>();
        let part_values = part.values();
        for_each_row(part.len(), *selection, |i| {
            let position = positions[next] as usize;
            values[position] = part_values[i];
            if let Some(valid) = valid.as_mut()
                && part.is_valid(i)
            {
                valid.set_bit(position, true);
            }
            next += 1;
        });
    }
    let nulls = valid.map(|mut valid| arrow::buffer::NullBuffer::new(valid.finish()));
    arrow::array::PrimitiveArray::<T>::new(values.into(), nulls)
        .with_data_type(parts[0].0.data_type().clone())
}

/// The validity of `n` values scattered from `parts`: `None` when no part has a null,
/// else every bit clear until the valid values set theirs.
fn scattered_validity(parts: &[Part<'_>], n: usize) -> Option<arrow::array::BooleanBufferBuilder> {
    parts.iter().any(|(p, _)| p.null_count() > 0).then(|| {
        let mut valid = arrow::array::BooleanBufferBuilder::new(n);
        valid.append_n(n, false);
        valid
    })
}

/// [`scatter`] for strings: the lengths first, then the bytes to their offsets; `None`
/// when the strings need more than 32-bit offsets.
fn scatter_utf8(parts: &[Part<'_>], positions: &[u32]) -> Option<StringArray> {
    let n = positions.len();
    if let Some(width) = fixed_width(parts).filter(|w| w * n <= i32::MAX as usize) {
        // Strings all `width` bytes long: the offsets are multiples of the width.
        let mut bytes = vec![0u8; n * width];
        let nulls = scatter_string_bytes(parts, positions, &mut bytes, |position| position * width);
        let offsets = arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(width, n));
        return Some(StringArray::new(offsets, bytes.into(), nulls));
    }
    let mut lengths = vec![0i32; n];
    let mut next = 0;
    for (part, selection) in parts {
        let part = part.as_string::<i32>();
        let offsets = part.value_offsets();
        for_each_row(part.len(), *selection, |i| {
            lengths[positions[next] as usize] = offsets[i + 1] - offsets[i];
            next += 1;
        });
    }
    let mut offsets = Vec::with_capacity(n + 1);
    let mut end = 0i64;
    offsets.push(0i32);
    for length in &lengths {
        end += i64::from(*length);
        offsets.push(i32::try_from(end).unwrap_or(i32::MAX));
    }
    drop(lengths);
    if end > i64::from(i32::MAX) {
        // Too long for 32-bit offsets: the caller's gather reports it.
        return None;
    }
    let mut bytes = vec![0u8; end as usize];
    let nulls = scatter_string_bytes(parts, positions, &mut bytes, |position| {
        offsets[position] as usize
    });
    let offsets = arrow::buffer::OffsetBuffer::new(offsets.into());
    Some(StringArray::new(offsets, bytes.into(), nulls))
}

/// Copies the bytes of each string of the parts to `bytes[start(position)..]`, where
/// `position` is its row in event order; returns the validity when a value is null.
fn scatter_string_bytes(
    parts: &[Part<'_>],
    positions: &[u32],
    bytes: &mut [u8],
    start: impl Fn(usize) -> usize,
) -> Option<arrow::buffer::NullBuffer> {
    let mut valid = scattered_validity(parts, positions.len());
    let mut next = 0;
    for (part, selection) in parts {
        let part = part.as_string::<i32>();
        let (values, offsets) = (part.value_data(), part.value_offsets());
        for_each_row(part.len(), *selection, |i| {
            let position = positions[next] as usize;
            let (from, to) = (offsets[i] as usize, offsets[i + 1] as usize);
            let start = start(position);
            copy_short(&mut bytes[start..start + (to - from)], &values[from..to]);
            if let Some(valid) = valid.as_mut()
                && part.is_valid(i)
            {
                valid.set_bit(position, true);
            }
            next += 1;
        });
    }
    valid.map(|mut valid| arrow::buffer::NullBuffer::new(valid.finish()))
}

/// The length of every string of the parts (over all their rows), when there is one
/// and it is at most 16 bytes: categorical columns such as a side (`B`/`S`). Null
/// rows count with their (usually zero) length.
fn fixed_width(parts: &[Part<'_>]) -> Option<usize> {
    let mut width = None;
    for (part, _) in parts {
        let offsets = part.as_string::<i32>().value_offsets();
        let first = (offsets.len() > 1).then(|| offsets[1] - offsets[0])?;
        if offsets.windows(2).any(|w| w[1] - w[0] != first) || *width.get_or_insert(first) != first
        {
            return None;
        }
    }
    width.map(|w| w as usize).filter(|w| *w <= 16)
}

/// Copies a string's bytes, a single byte without a call to `memcpy` (categorical
/// columns such as a side are often one byte long).
#[inline(always)]
fn copy_short(to: &mut [u8], from: &[u8]) {
    if let ([t], [f]) = (&mut *to, from) {
        *t = *f;
    } else {
        to.copy_from_slice(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_scatter_equals_a_gather_for_fixed_and_mixed_widths() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let words = [
            vec!["B", "S"],
            vec!["B", "S", "X"],
            vec!["BUY", "SEL"],
            vec!["B", "SELL", ""],
        ];
        for case in 0..40 {
            let pool = &words[case % words.len()];
            let with_nulls = case % 3 == 0;
            // Parts of random strings, each with a random selection (or none).
            let mut parts: Vec<(ArrayRef, Option<UInt32Array>)> = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                let len = rng.random_range(1..50);
                let values: StringArray = (0..len)
                    .map(|_| Some(pool[rng.random_range(0..pool.len())]))
                    .collect();
                // Nulls that keep their strings' widths (a fixed-width column with nulls).
                let values = if with_nulls {
                    let valid: Vec<bool> = (0..len).map(|_| rng.random_range(0..5) > 0).collect();
                    let (offsets, bytes, _) = values.into_parts();
                    StringArray::new(offsets, bytes, Some(valid.into()))
                } else {
                    values
                };
                let selection = (rng.random_range(0..2) == 0).then(|| {
                    (0..len as u32)
                        .filter(|_| rng.random_range(0..3) > 0)
                        .collect::<UInt32Array>()
                });
                parts.push((Arc::new(values), selection));
            }
            let selected: Vec<ArrayRef> = parts
                .iter()
                .map(|(column, selection)| match selection {
                    Some(rows) => arrow::compute::take(column, rows, None).unwrap(),
                    None => column.clone(),
                })
                .collect();
            let refs: Vec<&dyn Array> = selected.iter().map(|a| a.as_ref()).collect();
            let whole = arrow::compute::concat(&refs).unwrap();
            // A random permutation: input row g goes to positions[g].
            let n = whole.len();
            let mut positions: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                positions.swap(i, rng.random_range(0..=i));
            }
            let mut order = vec![0u32; n];
            for (g, p) in positions.iter().enumerate() {
                order[*p as usize] = g as u32;
            }
            let expected = arrow::compute::take(&whole, &UInt32Array::from(order), None).unwrap();
            let part_refs: Vec<Part<'_>> = parts.iter().map(|(c, s)| (c, s.as_ref())).collect();
            let scattered = scatter(&part_refs, &positions).unwrap();
            assert_eq!(
                scattered.as_string::<i32>(),
                expected.as_string::<i32>(),
                "case {case}"
            );
        }
    }
}
