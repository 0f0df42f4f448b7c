//! The state of a group: one [`Accumulator`] per component, summed exactly, the
//! difference type of the aggregate's differential collection.

use differential_dataflow::difference::{IsZero, Monoid, Semigroup};
use serde::{Deserialize, Serialize};

use crate::exact_sum::ExactSum;

/// The accumulated value of one component for one group: the difference type of the
/// differential collection, summed with [`Semigroup::plus_equals`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Accumulator {
    /// A count.
    Count(i64),
    /// An integer sum.
    IntSum(i128),
    /// An exact float sum (boxed: it is 544 bytes).
    FloatSum(Box<ExactSum>),
    /// An integer minimum.
    IntMin(Option<i64>),
    /// An integer maximum.
    IntMax(Option<i64>),
    /// A float minimum, as order-preserving bits (see [`float_key`]).
    FloatMin(Option<i64>),
    /// A float maximum, as order-preserving bits.
    FloatMax(Option<i64>),
}

/// Maps a finite float to an `i64` with the same order (and back with [`float_of_key`]).
pub fn float_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    if bits < 0 { bits ^ i64::MAX } else { bits }
}

/// The inverse of [`float_key`].
pub fn float_of_key(key: i64) -> f64 {
    f64::from_bits(if key < 0 { key ^ i64::MAX } else { key } as u64)
}

pub(super) fn merge_option(a: &mut Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64) {
    *a = match (*a, b) {
        (Some(x), Some(y)) => Some(pick(x, y)),
        (x, y) => x.or(y),
    };
}

impl Accumulator {
    fn plus_equals(&mut self, other: &Accumulator) {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (Accumulator::IntSum(a), Accumulator::IntSum(b)) => *a += b,
            (Accumulator::FloatSum(a), Accumulator::FloatSum(b)) => a.add_sum(b),
            (Accumulator::IntMin(a), Accumulator::IntMin(b))
            | (Accumulator::FloatMin(a), Accumulator::FloatMin(b)) => merge_option(a, *b, i64::min),
            (Accumulator::IntMax(a), Accumulator::IntMax(b))
            | (Accumulator::FloatMax(a), Accumulator::FloatMax(b)) => merge_option(a, *b, i64::max),
            (mine, theirs) => {
                unreachable!("accumulators of one plan line up: {mine:?} vs {theirs:?}")
            }
        }
    }

    fn is_zero(&self) -> bool {
        match self {
            Accumulator::Count(c) => *c == 0,
            Accumulator::IntSum(s) => *s == 0,
            Accumulator::FloatSum(s) => s.is_zero(),
            Accumulator::IntMin(m)
            | Accumulator::IntMax(m)
            | Accumulator::FloatMin(m)
            | Accumulator::FloatMax(m) => m.is_none(),
        }
    }
}

/// The state of one group: one accumulator per component of the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AggState(pub Vec<Accumulator>);

impl IsZero for AggState {
    fn is_zero(&self) -> bool {
        self.0.iter().all(Accumulator::is_zero)
    }
}

impl Semigroup for AggState {
    fn plus_equals(&mut self, rhs: &Self) {
        if self.0.is_empty() {
            self.0 = rhs.0.clone();
        } else {
            for (mine, theirs) in self.0.iter_mut().zip(rhs.0.iter()) {
                mine.plus_equals(theirs);
            }
        }
    }
}

impl Monoid for AggState {
    fn zero() -> Self {
        AggState(Vec::new())
    }
}
