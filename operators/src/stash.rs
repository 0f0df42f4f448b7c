//! A stash that holds each key's data with a capability until the input frontier has
//! passed the key's last time, then hands the keys back in order: the shape of timely's
//! `FrontierNotificator` (hold a capability, act once the frontier passes it), keyed so
//! that each key carries its data.
//!
//! The operators that wait for a date to be complete (the aggregate's pre-aggregation
//! and partials, the engine's per-date reports) use it, instead of a hand-written
//! `BTreeMap` of capabilities each.
//!
//! ```
//! use timely::container::CapacityContainerBuilder;
//! use timely::dataflow::channels::pact::Pipeline;
//! use timely::dataflow::operators::generic::Operator;
//! use timely::dataflow::operators::{Capture, ToStream};
//! use timely::dataflow::operators::capture::Extract;
//! use vizflow_operators::stash::FrontierStash;
//! use vizflow_operators::time::{date_key_of, pack};
//!
//! let captured = timely::example(|scope| {
//!     // Rows at three times of two dates, summed per date.
//!     [(pack(20240102, 5), 1u64), (pack(20240102, 9), 2), (pack(20240103, 1), 4)]
//!         .to_stream(scope)
//!         .container::<Vec<_>>()
//!         .unary_frontier::<CapacityContainerBuilder<Vec<(u32, u64)>>, _, _, _>(
//!             Pipeline,
//!             "SumPerDate",
//!             |_, _| {
//!                 let mut stash = FrontierStash::<u32, u64>::per_date();
//!                 move |(input, frontier), output| {
//!                     input.for_each_time(|time, data| {
//!                         for (t, n) in data.flat_map(|rows| rows.drain(..)) {
//!                             let date_key = date_key_of(t);
//!                             *stash.stash(date_key, *time.time(), &time) += n;
//!                         }
//!                     });
//!                     // Dates in order, once complete, at the time they were held at.
//!                     for (date_key, capability, sum) in stash.ready(frontier) {
//!                         output.session(&capability).give((date_key, sum));
//!                     }
//!                 }
//!             },
//!         )
//!         .capture()
//! });
//! let sums: Vec<(u32, u64)> =
//!     captured.extract().into_iter().flat_map(|(_, rows)| rows).collect();
//! assert_eq!(sums, [(20240102, 3), (20240103, 4)]);
//! ```

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

use crate::time::{Time, date_end};

/// Data per key, each held with a capability for the single output (port 0) of the
/// operator, until the input frontier has passed the key's last time.
///
/// Keys are handed back in their order ([`FrontierStash::ready`]), each with the
/// capability at the earliest time it was stashed at, so an operator emits complete
/// keys in order, at a time of the key's own.
#[derive(Debug)]
pub struct FrontierStash<K, V> {
    pending: BTreeMap<K, (Capability<Time>, V)>,
    /// A key's last time: once the frontier has passed it, the key is complete.
    last_time: fn(&K) -> Time,
}

impl<V> FrontierStash<u32, V> {
    /// A stash keyed by date key (`YYYYMMDD`): a date is complete once the frontier
    /// has passed its [`date_end`].
    pub fn per_date() -> Self {
        FrontierStash::new(|date_key| date_end(*date_key))
    }
}

impl<V> FrontierStash<Time, V> {
    /// A stash keyed by timely time: a time is complete once the frontier has passed
    /// it.
    pub fn per_time() -> Self {
        FrontierStash::new(|time| *time)
    }
}

impl<K: Ord + Copy, V> FrontierStash<K, V> {
    /// A stash whose key `k` is complete once the frontier has passed `last_time(&k)`.
    pub fn new(last_time: fn(&K) -> Time) -> Self {
        FrontierStash {
            pending: BTreeMap::new(),
            last_time,
        }
    }

    /// The data of `key` (its default when new), held with a capability at time `at`
    /// minted from `capability` (the input's, with `at` not before its time), unless
    /// the key already holds one at `at` or earlier: a key keeps the earliest time it
    /// was stashed at.
    pub fn stash(&mut self, key: K, at: Time, capability: &InputCapability<Time>) -> &mut V
    where
        V: Default,
    {
        let (held, value) = self
            .pending
            .entry(key)
            .or_insert_with(|| (capability.delayed(&at, 0), V::default()));
        if at < *held.time() {
            *held = capability.delayed(&at, 0);
        }
        value
    }

    /// The complete keys (the input `frontier` has passed their last time), removed
    /// from the stash in key order, each with its capability and data. Stops at the
    /// first key not complete: keys come out in order even if a later one is complete.
    pub fn ready<'a>(
        &'a mut self,
        frontier: &'a MutableAntichain<Time>,
    ) -> impl Iterator<Item = (K, Capability<Time>, V)> + 'a {
        std::iter::from_fn(move || {
            let entry = self.pending.first_entry()?;
            if frontier.less_equal(&(self.last_time)(entry.key())) {
                return None;
            }
            let (key, (capability, value)) = entry.remove_entry();
            Some((key, capability, value))
        })
    }

    /// Moves every held capability up to the input `frontier` where it is behind it
    /// and the key is not complete: for data emitted only once its key is complete,
    /// so that holding it does not hold back the times before (a date held until its
    /// end would otherwise pin the output at its first time).
    pub fn follow(&mut self, frontier: &MutableAntichain<Time>) {
        let Some(front) = frontier.frontier().iter().min().copied() else {
            return;
        };
        for (key, (capability, _)) in self.pending.iter_mut() {
            if front > *capability.time() && front <= (self.last_time)(key) {
                capability.downgrade(&front);
            }
        }
    }

    /// The data of `key`, when it is held.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.pending.get_mut(key).map(|(_, value)| value)
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}
