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

impl ExactSum {
    /// The sum as bytes, for a partial's `sum(x).exact` column: a byte with the sign
    /// (the top bit) and the index of the first non-zero chunk of the magnitude, then
    /// the magnitude's carried chunks up to the last non-zero one, each 4 bytes
    /// little-endian (a few chunks for sums of similar magnitudes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut magnitude = self.clone();
        magnitude.carry();
        let negative = magnitude.chunks[CHUNKS - 1] < 0;
        if negative {
            magnitude.negate();
            magnitude.carry();
        }
        let Some(first) = magnitude.chunks.iter().position(|c| *c != 0) else {
            return vec![0];
        };
        let last = magnitude
            .chunks
            .iter()
            .rposition(|c| *c != 0)
            .unwrap_or(first);
        let mut bytes = Vec::with_capacity(1 + 4 * (last + 1 - first));
        bytes.push(first as u8 | if negative { 0x80 } else { 0 });
        for chunk in &magnitude.chunks[first..=last] {
            // Carried: every chunk of a magnitude is in [0, 2^32).
            bytes.extend_from_slice(&(*chunk as u32).to_le_bytes());
        }
        bytes
    }

    /// Adds a sum given as [`ExactSum::to_bytes`] bytes; `None` (nothing added) when
    /// they are not such bytes.
    pub fn add_bytes(&mut self, bytes: &[u8]) -> Option<()> {
        let (&head, chunks) = bytes.split_first()?;
        let (negative, first) = (head & 0x80 != 0, (head & 0x7f) as usize);
        if chunks.len() % 4 != 0 || first + chunks.len() / 4 > CHUNKS {
            return None;
        }
        // Each stored chunk is below 2^32: adding them counts as one term towards the
        // next carry.
        if self.pending >= ADDS_BEFORE_CARRY - 1 {
            self.carry();
        }
        let sign = if negative { -1 } else { 1 };
        for (slot, chunk) in self.chunks[first..].iter_mut().zip(chunks.chunks_exact(4)) {
            *slot += sign * i64::from(u32::from_le_bytes(chunk.try_into().ok()?));
        }
        self.pending += 1;
        Some(())
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
    fn bytes_add_back_exactly() {
        let mut a = ExactSum::new();
        [1e100, 0.1, -3.5e-300, 7.0].iter().for_each(|v| a.add(*v));
        let mut b = ExactSum::new();
        [-1e100, 0.2, 2.5].iter().for_each(|v| b.add(*v));
        let mut merged = ExactSum::new();
        merged.add_bytes(&a.to_bytes()).unwrap();
        merged.add_bytes(&b.to_bytes()).unwrap();
        let mut all = a.clone();
        all.add_sum(&b);
        assert_eq!(merged.value(), all.value());
        assert_eq!(merged.to_bytes(), all.to_bytes());
        assert_eq!(ExactSum::new().to_bytes(), vec![0]);
        // A negative sum is as short as its magnitude.
        let mut negative = ExactSum::new();
        negative.add(-2.5);
        let mut positive = ExactSum::new();
        positive.add(2.5);
        assert_eq!(negative.to_bytes().len(), positive.to_bytes().len());
        assert_eq!(negative.to_bytes()[0], positive.to_bytes()[0] | 0x80);
        assert!(merged.add_bytes(&[]).is_none());
        assert!(merged.add_bytes(&[66, 1, 2, 3, 4, 5, 6, 7, 8]).is_none());
        assert!(merged.add_bytes(&[0, 1, 2, 3]).is_none());
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

    /// Hand-computed roundings: exact ties go to even, and any non-zero bit far below the
    /// last place breaks the tie; the same at the top of the range, where rounding up is an
    /// overflow to infinity.
    #[test]
    fn rounds_once_to_nearest_even() {
        let two_53 = 2f64.powi(53);
        // 2^53 + 1 lies halfway between 2^53 and 2^53 + 2: even is 2^53.
        assert_eq!(sum_of(&[two_53, 1.0]), two_53);
        assert_eq!(sum_of(&[two_53, 1.0, 2f64.powi(-1000)]), two_53 + 2.0);
        assert_eq!(sum_of(&[two_53, 1.0, -2f64.powi(-1000)]), two_53);
        assert_eq!(sum_of(&[two_53, 3.0]), two_53 + 4.0);
        assert_eq!(sum_of(&[-two_53, -1.0, -5e-324]), -two_53 - 2.0);
        // f64::MAX has an odd last place (2^971): MAX + 2^970 is the tie, rounding to the
        // even 2^1024, an overflow.
        let half_ulp = 2f64.powi(970);
        assert_eq!(sum_of(&[f64::MAX, half_ulp]), f64::INFINITY);
        assert_eq!(sum_of(&[f64::MAX, half_ulp, -5e-324]), f64::MAX);
        assert_eq!(sum_of(&[-f64::MAX, -half_ulp]), f64::NEG_INFINITY);
        assert_eq!(sum_of(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        // Subnormal results are exact: they are integer multiples of 2^-1074.
        assert_eq!(
            sum_of(&[f64::MIN_POSITIVE, -5e-324]),
            f64::MIN_POSITIVE - 5e-324
        );
        assert_eq!(sum_of(&[1e300, 5e-324, -1e300]), 5e-324);
        assert_eq!(sum_of(&[1e300, -5e-324, -1e300]), -5e-324);
        // Non-finite terms are ignored (module docs): even +inf and -inf together, or NaN.
        let ignored = sum_of(&[f64::INFINITY, 1.5, f64::NEG_INFINITY, f64::NAN, 2.0]);
        assert_eq!(ignored, 3.5);
        // An exact zero is +0.0, even from negative zeros.
        assert_eq!(sum_of(&[-0.0, -0.0]).to_bits(), 0.0f64.to_bits());
        assert_eq!(sum_of(&[-2.5, 2.5]).to_bits(), 0.0f64.to_bits());
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

        /// Any doubles (every exponent, subnormals, zeros of both signs, exact
        /// cancellations, infinities and NaN), in several orders and partitionings: always the
        /// correctly rounded exact sum of the finite terms, bit for bit.
        #[test]
        fn any_order_and_partitioning_gives_the_correctly_rounded_exact_sum(
            values in prop::collection::vec(term(), 0..60),
            cancelled in prop::collection::vec(any::<bool>(), 60),
            seed in any::<u64>(),
        ) {
            let terms = with_cancellations(values, &cancelled);
            check_every_grouping(&terms, seed)?;
        }

        /// Terms near the bottom of the range, so that results are often subnormal, where the
        /// rounding is easiest to get wrong.
        #[test]
        fn tiny_sums_are_exact(
            values in prop::collection::vec(tiny(), 0..40),
            cancelled in prop::collection::vec(any::<bool>(), 40),
            seed in any::<u64>(),
        ) {
            let terms = with_cancellations(values, &cancelled);
            check_every_grouping(&terms, seed)?;
        }

        /// Terms within a few powers of two of `f64::MAX`: sums that overflow to an infinity
        /// and sums that come back below it.
        #[test]
        fn huge_sums_round_to_infinity_exactly_when_the_exact_sum_does(
            values in prop::collection::vec(huge(), 0..20),
            cancelled in prop::collection::vec(any::<bool>(), 20),
            seed in any::<u64>(),
        ) {
            let terms = with_cancellations(values, &cancelled);
            check_every_grouping(&terms, seed)?;
        }

        /// The reference itself: for two terms IEEE 754 addition is correctly rounded, so it
        /// must agree with `a + b` (an exact zero is +0.0 in the reference).
        #[test]
        fn reference_agrees_with_ieee_addition_of_two_terms(a in finite(), b in finite()) {
            prop_assert_eq!(reference_sum(&[a, b]).to_bits(), (a + b + 0.0).to_bits(), "{:e} + {:e}", a, b);
        }
    }

    /// The exact sum of the finite terms, as an independent reference: every finite double
    /// is `m * 2^(s - 1074)` with an integer `m < 2^53` and `0 <= s < 2046` (IEEE 754
    /// binary64), so the sum is an integer count of units of 2^-1074, kept here as two
    /// unsigned big integers (positive and negative terms) in 64-bit limbs, least significant
    /// first, and rounded once to nearest, ties to even.
    fn reference_sum(values: &[f64]) -> f64 {
        let (mut positive, mut negative) = (Vec::new(), Vec::new());
        for &x in values.iter().filter(|x| x.is_finite()) {
            let bits = x.to_bits();
            let biased_exponent = (bits >> 52) & 0x7ff;
            let fraction = bits & ((1 << 52) - 1);
            let (m, s) = match biased_exponent {
                0 => (fraction, 0),
                e => (fraction | (1 << 52), e - 1),
            };
            let target = if x < 0.0 {
                &mut negative
            } else {
                &mut positive
            };
            add_shifted(target, m, s as usize);
        }
        let (negative_result, magnitude) = match compare(&positive, &negative) {
            std::cmp::Ordering::Less => (true, subtract(&negative, &positive)),
            _ => (false, subtract(&positive, &negative)),
        };
        let Some(top) = (0..magnitude.len() * 64)
            .rev()
            .find(|&i| bit(&magnitude, i))
        else {
            return 0.0;
        };
        // Below 2^53 units the sum is a subnormal or the smallest normal binade: exact, and
        // its bit pattern is the integer itself.
        let rounded_bits = if top < 53 {
            magnitude[0]
        } else {
            // 53 significant bits; the bits below decide the rounding. The bit pattern of a
            // normal `M * 2^(shift - 1074)` with 2^52 <= M < 2^53 is `(shift << 52) + M`, and
            // a rounding carry out of M moves into the exponent as it should.
            let shift = top - 52;
            let mantissa = (0..53).fold(0u64, |m, i| {
                m | (u64::from(bit(&magnitude, shift + i)) << i)
            });
            let half = bit(&magnitude, shift - 1);
            let sticky = (0..shift - 1).any(|i| bit(&magnitude, i));
            let up = half && (sticky || mantissa & 1 == 1);
            ((shift as u64) << 52) + mantissa + u64::from(up)
        };
        let magnitude = f64::from_bits(rounded_bits.min(f64::INFINITY.to_bits()));
        if negative_result {
            -magnitude
        } else {
            magnitude
        }
    }

    /// `number += m * 2^shift`.
    fn add_shifted(number: &mut Vec<u64>, m: u64, shift: usize) {
        let (limb, offset) = (shift / 64, shift % 64);
        let wide = u128::from(m) << offset;
        let mut carry = 0u128;
        let mut parts = [wide as u64, (wide >> 64) as u64].into_iter();
        let mut k = limb;
        loop {
            let part = parts.next();
            if part.is_none() && carry == 0 {
                break;
            }
            if number.len() <= k {
                number.resize(k + 1, 0);
            }
            let sum = u128::from(number[k]) + u128::from(part.unwrap_or(0)) + carry;
            number[k] = sum as u64;
            carry = sum >> 64;
            k += 1;
        }
    }

    fn bit(number: &[u64], i: usize) -> bool {
        number
            .get(i / 64)
            .is_some_and(|limb| (limb >> (i % 64)) & 1 == 1)
    }

    fn compare(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
        let len = a.len().max(b.len());
        let limb = |n: &[u64], k: usize| n.get(k).copied().unwrap_or(0);
        (0..len)
            .rev()
            .map(|k| limb(a, k).cmp(&limb(b, k)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }

    /// `a - b` for `a >= b`.
    fn subtract(a: &[u64], b: &[u64]) -> Vec<u64> {
        let mut borrow = 0u64;
        a.iter()
            .enumerate()
            .map(|(k, &limb)| {
                let (d1, o1) = limb.overflowing_sub(b.get(k).copied().unwrap_or(0));
                let (d2, o2) = d1.overflowing_sub(borrow);
                borrow = u64::from(o1 || o2);
                d2
            })
            .collect()
    }

    /// Every finite double, its exponent uniform: 1e-308 and 1e308 as likely as 1.
    fn finite() -> impl Strategy<Value = f64> {
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |x| x.is_finite())
    }

    /// A subnormal or one of the smallest normal doubles, either sign.
    fn tiny() -> impl Strategy<Value = f64> {
        (any::<bool>(), 0u64..3 << 52)
            .prop_map(|(negative, bits)| f64::from_bits(bits | (u64::from(negative) << 63)))
    }

    /// Within a factor of 8 of `f64::MAX`, either sign.
    fn huge() -> impl Strategy<Value = f64> {
        (any::<bool>(), 0x7fcu64 << 52..0x7ff << 52)
            .prop_map(|(negative, bits)| f64::from_bits(bits | (u64::from(negative) << 63)))
    }

    /// A term of a sum: mostly finite values of every kind, sometimes a non-finite one.
    fn term() -> impl Strategy<Value = f64> {
        prop_oneof![
            6 => finite(),
            2 => tiny(),
            2 => -1e6f64..1e6,
            1 => huge(),
            1 => prop::sample::select(vec![
                0.0,
                -0.0,
                f64::MAX,
                -f64::MAX,
                f64::MIN_POSITIVE,
                5e-324,
                1.0,
                2f64.powi(53),
            ]),
            1 => prop::sample::select(vec![
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                -f64::NAN,
                f64::from_bits(0x7ff0_0000_dead_beef), // a NaN with a payload
            ]),
        ]
    }

    /// `values`, plus `-x` for each `x` whose flag is set: exact cancellations.
    fn with_cancellations(mut values: Vec<f64>, cancelled: &[bool]) -> Vec<f64> {
        let negations: Vec<f64> = values
            .iter()
            .zip(cancelled)
            .filter(|(_, cancel)| **cancel)
            .map(|(x, _)| -x)
            .collect();
        values.extend(negations);
        values
    }

    /// Sums `terms` in three shuffled orders, and split into random parts that are summed
    /// apart, some sent through serde, and merged with `add_sum` in a random order (the
    /// order of terms within and across workers, dates and processes); each must give the
    /// reference's bits, and `is_zero` must say whether the exact sum is zero.
    ///
    /// SEMANTICS.md ("Reduce": float sums exact, rounded once) and the module docs, which
    /// leave non-finite values to the caller and have `add` ignore them: the expected value
    /// is the sum of the finite terms alone, so `+inf` and `-inf` together, or a NaN, change
    /// nothing. An exact zero is `+0.0`, whatever the signs of the zero terms.
    fn check_every_grouping(terms: &[f64], seed: u64) -> Result<(), TestCaseError> {
        use rand::seq::SliceRandom;
        use rand::{RngExt, SeedableRng};
        let expected = reference_sum(terms);
        // A non-zero exact sum is at least 2^-1074 in magnitude, which rounds to itself.
        let exact_zero = expected == 0.0;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut order = terms.to_vec();
        for round in 0..3 {
            order.shuffle(&mut rng);
            let mut sum = ExactSum::new();
            order.iter().for_each(|x| sum.add(*x));
            prop_assert_eq!(
                sum.value().to_bits(),
                expected.to_bits(),
                "order {} of {:?}: {:e}, expected {:e}",
                round,
                order,
                sum.value(),
                expected
            );
            prop_assert_eq!(sum.is_zero(), exact_zero, "is_zero of {:?}", order);

            let mut parts = Vec::new();
            let mut rest = &order[..];
            while !rest.is_empty() {
                let (part, tail) = rest.split_at(rng.random_range(1..=rest.len()));
                let mut partial = ExactSum::new();
                part.iter().for_each(|x| partial.add(*x));
                if rng.random_bool(0.3) {
                    partial = bincode::deserialize(&bincode::serialize(&partial).unwrap()).unwrap();
                }
                parts.push(partial);
                rest = tail;
            }
            parts.push(ExactSum::new()); // an empty partial (a worker with no rows)
            parts.shuffle(&mut rng);
            let mut merged = ExactSum::new();
            parts.iter().for_each(|part| merged.add_sum(part));
            prop_assert_eq!(
                merged.value().to_bits(),
                expected.to_bits(),
                "{} parts of {:?}: {:e}, expected {:e}",
                parts.len(),
                order,
                merged.value(),
                expected
            );
            prop_assert_eq!(merged.is_zero(), exact_zero);
        }
        Ok(())
    }
}
