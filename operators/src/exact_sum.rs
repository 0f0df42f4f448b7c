//! Exact summation of `f64` values.
//!
//! Floating-point addition is not associative, so a plain `f64` sum depends on the order
//! of its terms, and with it on the number of workers, the batch sizes and the input
//! order. [`ExactSum`] accumulates the *exact* real sum of its terms in a fixed-point
//! "superaccumulator" wide enough for the whole `f64` range (the technique of Neal's
//! xsum): 67 signed 64-bit chunks, each holding 32 bits of the sum plus headroom for
//! carries. Rounding happens once, in [`ExactSum::value`], so a sum is bit-identical
//! whatever the order or grouping of its terms. Adding a term touches three chunks.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const CHUNKS: usize = 67;
const CHUNK_BITS: u32 = 32;
const CHUNK_MASK: i64 = (1 << CHUNK_BITS) - 1;
/// Terms that may be added between carry propagations: each changes a chunk by less
/// than 2^32, so 2^30 of them keep every chunk far from `i64` overflow.
const ADDS_BEFORE_CARRY: u32 = 1 << 30;

/// The exact sum of finite `f64` values; see the module docs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExactSum {
    /// `value = sum(chunks[k] * 2^(32k - 1074))`.
    chunks: [i64; CHUNKS],
    pending: u32,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            chunks: [0; CHUNKS],
            pending: 0,
        }
    }
}

impl std::fmt::Debug for ExactSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExactSum({:e})", self.value())
    }
}

impl ExactSum {
    /// An empty sum (zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a finite value. Non-finite values are the caller's to filter out (VizFlow
    /// treats them as missing and counts them); here they are ignored.
    #[inline]
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        // Zeros (of either sign) add nothing below: no branch for them either.
        let bits = x.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as u32;
        let fraction = bits & ((1 << 52) - 1);
        // Position of the mantissa's lowest bit, counted from 2^-1074: normal numbers
        // have an implicit leading bit and exponent - 1; subnormals neither.
        let normal = u32::from(exponent != 0);
        let mantissa = fraction | (u64::from(normal) << 52);
        let position = exponent - normal;
        let chunk = (position / CHUNK_BITS) as usize;
        let wide = (mantissa as u128) << (position % CHUNK_BITS);
        // Negative terms are subtracted without a branch (signs are unpredictable):
        // `(part ^ sign) - sign` is `part` for `sign == 0` and `-part` for `sign == -1`.
        let sign = (bits as i64) >> 63;
        let parts = [
            (wide as i64) & CHUNK_MASK,
            ((wide >> 32) as i64) & CHUNK_MASK,
            (wide >> 64) as i64,
        ];
        let chunks = &mut self.chunks[chunk..chunk + 3];
        for (slot, part) in chunks.iter_mut().zip(parts) {
            *slot += (part ^ sign) - sign;
        }
        self.pending += 1;
        if self.pending >= ADDS_BEFORE_CARRY {
            self.carry();
        }
    }

    /// Adds another exact sum.
    pub fn add_sum(&mut self, other: &ExactSum) {
        if self.pending.saturating_add(other.pending) >= ADDS_BEFORE_CARRY {
            self.carry();
        }
        let mut other = other.clone();
        if other.pending >= ADDS_BEFORE_CARRY / 2 {
            other.carry();
        }
        for (mine, theirs) in self.chunks.iter_mut().zip(other.chunks.iter()) {
            *mine += theirs;
        }
        self.pending += other.pending + 1;
    }

    /// Negates the sum.
    pub fn negate(&mut self) {
        for chunk in self.chunks.iter_mut() {
            *chunk = -*chunk;
        }
    }

    /// True when the exact sum is zero.
    pub fn is_zero(&self) -> bool {
        let mut normal = self.clone();
        normal.carry();
        normal.chunks.iter().all(|c| *c == 0)
    }

    /// Propagates carries so that every chunk but the top one is in `[0, 2^32)`; the
    /// value is unchanged.
    fn carry(&mut self) {
        for k in 0..CHUNKS - 1 {
            let carry = self.chunks[k] >> CHUNK_BITS;
            self.chunks[k] -= carry << CHUNK_BITS;
            self.chunks[k + 1] += carry;
        }
        self.pending = 0;
    }

    /// The sum rounded to the nearest `f64` (ties to even). Correctly rounded unless the
    /// result is subnormal (below 2.2e-308 in magnitude); overflow gives an infinity.
    pub fn value(&self) -> f64 {
        let mut normal = self.clone();
        normal.carry();
        let negative = normal.chunks[CHUNKS - 1] < 0;
        if negative {
            normal.negate();
            normal.carry();
        }
        let Some(high) = normal.chunks.iter().rposition(|c| *c != 0) else {
            return 0.0;
        };
        let chunk = |k: isize| {
            if k >= 0 {
                normal.chunks[k as usize] as u128
            } else {
                0
            }
        };
        let high = high as isize;
        // The top three chunks hold at least 65 significant bits; any lower non-zero bit
        // is folded into a sticky bit below the rounding position.
        let mut mantissa = (chunk(high) << 64) | (chunk(high - 1) << 32) | chunk(high - 2);
        let sticky = (0..(high - 2).max(0)).any(|k| normal.chunks[k as usize] != 0);
        mantissa |= sticky as u128;
        let magnitude = scale_by_power_of_two(mantissa as f64, 32 * (high as i32 - 2) - 1074);
        if negative { -magnitude } else { magnitude }
    }
}

/// `x * 2^exponent`, in steps that stay within the normal range.
fn scale_by_power_of_two(mut x: f64, mut exponent: i32) -> f64 {
    let power = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    while exponent > 1000 {
        x *= power(1000);
        exponent -= 1000;
    }
    while exponent < -1000 {
        x *= power(-1000);
        exponent += 1000;
    }
    x * power(exponent)
}

/// Serialized compactly: the carried chunks without leading and trailing zeros.
impl Serialize for ExactSum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut normal = self.clone();
        normal.carry();
        let first = normal.chunks.iter().position(|c| *c != 0).unwrap_or(0);
        let last = normal
            .chunks
            .iter()
            .rposition(|c| *c != 0)
            .map_or(0, |l| l + 1);
        (first as u8, normal.chunks[first..last.max(first)].to_vec()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ExactSum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (first, chunks) = <(u8, Vec<i64>)>::deserialize(deserializer)?;
        let first = first as usize;
        if first + chunks.len() > CHUNKS {
            return Err(serde::de::Error::custom("exact sum wider than 67 chunks"));
        }
        let mut sum = ExactSum::default();
        sum.chunks[first..first + chunks.len()].copy_from_slice(&chunks);
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sum_of(values: &[f64]) -> f64 {
        let mut s = ExactSum::new();
        values.iter().for_each(|v| s.add(*v));
        s.value()
    }

    #[test]
    fn cancellation_is_exact() {
        assert_eq!(sum_of(&[1e100, 1.0, -1e100]), 1.0);
        // The exact sum of the binary values 0.1 + 0.2 - 0.3 is 2^-55.
        assert_eq!(sum_of(&[0.1, 0.2, -0.3]), 2f64.powi(-55));
        assert_eq!(sum_of(&[]), 0.0);
        assert_eq!(sum_of(&[-2.5]), -2.5);
        assert_eq!(sum_of(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(
            sum_of(&[f64::MIN_POSITIVE, -f64::MIN_POSITIVE, 5e-324]),
            5e-324
        );
    }

    #[test]
    fn zero_detection() {
        let mut s = ExactSum::new();
        s.add(3.25);
        s.add(-1.0);
        s.add(-2.25);
        assert!(s.is_zero());
        s.add(1e-300);
        assert!(!s.is_zero());
    }

    #[test]
    fn serde_round_trip() {
        let round_trip = |s: &ExactSum| {
            let bytes = bincode::serialize(s).unwrap();
            (
                bincode::deserialize::<ExactSum>(&bytes).unwrap(),
                bytes.len(),
            )
        };
        let mut wide = ExactSum::new();
        [1.5, -7e-20, 3e15, 1e-310]
            .iter()
            .for_each(|v| wide.add(*v));
        assert_eq!(round_trip(&wide).0.value(), wide.value());
        // Only the chunks in use are encoded: values between 1e-20 and 1e16 need 5.
        let mut narrow = ExactSum::new();
        [1.5, -7e-20, 3e15].iter().for_each(|v| narrow.add(*v));
        let (back, len) = round_trip(&narrow);
        assert_eq!(back.value(), narrow.value());
        assert!(len < 80, "compact encoding, got {len} bytes");
        let too_wide = bincode::serialize(&(60u8, vec![1i64; 10])).unwrap();
        assert!(bincode::deserialize::<ExactSum>(&too_wide).is_err());
    }

    proptest! {
        /// The exact sum of values that are integer multiples of 2^-40 equals the
        /// integer sum computed in i128, and does not depend on the order of terms.
        #[test]
        fn matches_integer_oracle(values in prop::collection::vec(-(1i64 << 50)..(1i64 << 50), 0..200), seed in 0u64..1000) {
            let scale = (2.0f64).powi(-40);
            let floats: Vec<f64> = values.iter().map(|v| *v as f64 * scale).collect();
            let exact: i128 = values.iter().map(|v| *v as i128).sum();
            let expected = exact as f64 * scale; // i128 -> f64 rounds correctly
            prop_assert_eq!(sum_of(&floats), expected);
            let mut shuffled = floats.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize * 31 + i * 17) % n.max(1)); }
            prop_assert_eq!(sum_of(&shuffled), expected);
            // Split into two partial sums and merge: same bits.
            let (a, b) = floats.split_at(n / 2);
            let mut left = ExactSum::new(); a.iter().for_each(|v| left.add(*v));
            let mut right = ExactSum::new(); b.iter().for_each(|v| right.add(*v));
            left.add_sum(&right);
            prop_assert_eq!(left.value(), expected);
        }

        /// Any finite values: order independence and agreement with a compensated sum.
        #[test]
        fn order_independent(values in prop::collection::vec(-1e6f64..1e6, 0..100)) {
            let forward = sum_of(&values);
            let mut reversed = values.clone();
            reversed.reverse();
            prop_assert_eq!(forward.to_bits(), sum_of(&reversed).to_bits());
            let naive: f64 = values.iter().sum();
            prop_assert!((forward - naive).abs() <= 1e-6 * values.iter().map(|v| v.abs()).sum::<f64>().max(1.0));
        }
    }
}
