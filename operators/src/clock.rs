//! The trading clock: a time zone plus ordered sessions, mapping a local wall-clock time to
//! `elapsed_ms`, the trading time since the first session's start (SEMANTICS.md, "parse_time").
//!
//! ```
//! use vizflow_operators::clock::{ClockPosition, Session, TradingClock};
//! let cn = TradingClock::new(
//!     chrono_tz::Asia::Shanghai,
//!     vec![
//!         Session { start_ms: 34_200_000, end_ms: 41_400_000 }, // 09:30-11:30
//!         Session { start_ms: 46_800_000, end_ms: 54_000_000 }, // 13:00-15:00
//!     ],
//! )
//! .unwrap();
//! assert_eq!(cn.locate(46_800_000), ClockPosition::InSession { elapsed_ms: 7_200_000 });
//! assert_eq!(cn.elapsed_ms_clamped(43_800_000), (7_200_000, true)); // 12:10, lunch break
//! ```

use std::fmt;

use chrono_tz::Tz;

/// Latest session end: 48 h, so that a session may run past midnight into the next day.
const MAX_MS: i64 = 48 * 3_600_000;

/// One trading session, as local wall-clock offsets from midnight, in ms. `end_ms` is
/// inclusive. Crypto's 00:00-24:00 is (0, 86_400_000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// Session start, ms after local midnight.
    pub start_ms: i64,
    /// Session end (inclusive), ms after local midnight; up to 48 h for sessions past midnight.
    pub end_ms: i64,
}

impl Session {
    /// Session length in ms.
    pub fn len_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// Local wall-clock time as `HH:MM:SS.mmm` ("09:30:00.500"); hours run past 23 for times on
/// the next day, and times before midnight get a leading `-`.
pub fn format_ms_of_day(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let (hours, minutes) = (ms / 3_600_000, ms / 60_000 % 60);
    let (seconds, millis) = (ms / 1000 % 60, ms % 1000);
    format!("{sign}{hours:02}:{minutes:02}:{seconds:02}.{millis:03}")
}

/// `09:30-11:30`: `HH:MM`, or `HH:MM:SS.mmm` off the whole minute.
impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |ms| {
            let mut text = format_ms_of_day(ms);
            if text.ends_with(":00.000") {
                text.truncate(text.len() - ":00.000".len());
            }
            text
        };
        write!(f, "{}-{}", short(self.start_ms), short(self.end_ms))
    }
}

/// Why a list of sessions does not make a trading clock.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// No session at all.
    #[error("a trading clock needs at least one session")]
    NoSessions,
    /// A session whose start is not before its end.
    #[error("session {index} ({session}) does not end after it starts; give start before end")]
    Reversed {
        /// 0-based position in the session list.
        index: usize,
        /// The session.
        session: Session,
    },
    /// A session outside 00:00-48:00.
    #[error(
        "session {index} ({session}) is outside 00:00-48:00; \
         sessions are local wall-clock times, past 24:00 only for sessions running past midnight"
    )]
    OutOfRange {
        /// 0-based position in the session list.
        index: usize,
        /// The session.
        session: Session,
    },
    /// A session starting before the previous one ends.
    #[error(
        "session {index} ({session}) starts before session {previous_index} ({previous}) ends; \
         list sessions in time order without overlap"
    )]
    Overlap {
        /// 0-based position of the offending session.
        index: usize,
        /// The offending session.
        session: Session,
        /// 0-based position of the session before it.
        previous_index: usize,
        /// The session before it.
        previous: Session,
    },
}

/// Where a local time falls relative to a trading clock's sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockPosition {
    /// Inside a session (ends inclusive), `elapsed_ms` of trading time since the first start.
    InSession {
        /// Trading time since the first session's start.
        elapsed_ms: i64,
    },
    /// Before the first session's start.
    BeforeOpen,
    /// Between two sessions; `clamped_ms` is the elapsed time at the end of the previous one.
    InBreak {
        /// Elapsed trading time at the end of the previous session.
        clamped_ms: i64,
    },
    /// After the last session's end.
    AfterClose,
}

/// A market's trading clock: a time zone and ordered, non-overlapping sessions.
#[derive(Clone, Debug, PartialEq)]
pub struct TradingClock {
    time_zone: Tz,
    sessions: Vec<Session>,
    /// `offsets_ms[i]`: summed length of the sessions before session `i`.
    offsets_ms: Vec<i64>,
    total_ms: i64,
}

impl TradingClock {
    /// Validates the sessions: at least one, each with start < end, within 00:00-48:00, sorted
    /// and not overlapping (one session may start exactly where the previous one ends).
    pub fn new(time_zone: Tz, sessions: Vec<Session>) -> Result<Self, ClockError> {
        if sessions.is_empty() {
            return Err(ClockError::NoSessions);
        }
        for (index, &session) in sessions.iter().enumerate() {
            if session.start_ms >= session.end_ms {
                return Err(ClockError::Reversed { index, session });
            }
            if session.start_ms < 0 || session.end_ms > MAX_MS {
                return Err(ClockError::OutOfRange { index, session });
            }
        }
        for (previous_index, pair) in sessions.windows(2).enumerate() {
            if pair[1].start_ms < pair[0].end_ms {
                let (index, session, previous) = (previous_index + 1, pair[1], pair[0]);
                return Err(ClockError::Overlap {
                    index,
                    session,
                    previous_index,
                    previous,
                });
            }
        }
        let offsets_ms = sessions
            .iter()
            .scan(0, |total, session| {
                let offset = *total;
                *total += session.len_ms();
                Some(offset)
            })
            .collect();
        let total_ms = sessions.iter().map(Session::len_ms).sum();
        Ok(Self {
            time_zone,
            sessions,
            offsets_ms,
            total_ms,
        })
    }

    /// The zone whose local wall-clock time the sessions are given in.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The sessions, in time order.
    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// Total trading ms in a day (CN: 14_400_000).
    pub fn total_ms(&self) -> i64 {
        self.total_ms
    }

    /// Where a local wall-clock offset from the date's midnight falls. Inside session `i`:
    /// `offset_i + (t - start_i)`, ends inclusive, so 11:30:00.000 and 13:00:00.000 are both
    /// in session for CN.
    #[inline]
    pub fn locate(&self, ms_since_midnight: i64) -> ClockPosition {
        for (session, &offset) in self.sessions.iter().zip(&self.offsets_ms) {
            if ms_since_midnight < session.start_ms {
                return if offset == 0 {
                    ClockPosition::BeforeOpen
                } else {
                    ClockPosition::InBreak { clamped_ms: offset }
                };
            }
            if ms_since_midnight <= session.end_ms {
                let elapsed_ms = offset + ms_since_midnight - session.start_ms;
                return ClockPosition::InSession { elapsed_ms };
            }
        }
        ClockPosition::AfterClose
    }

    /// `elapsed_ms` under the clamp policy, and whether the time was clamped: before the open
    /// -> 0, in a break -> the end of the previous session, after the close -> `total_ms`.
    #[inline]
    pub fn elapsed_ms_clamped(&self, ms_since_midnight: i64) -> (i64, bool) {
        match self.locate(ms_since_midnight) {
            ClockPosition::InSession { elapsed_ms } => (elapsed_ms, false),
            ClockPosition::BeforeOpen => (0, true),
            ClockPosition::InBreak { clamped_ms } => (clamped_ms, true),
            ClockPosition::AfterClose => (self.total_ms, true),
        }
    }
}

/// `09:30-11:30, 13:00-15:00 (Asia/Shanghai)`.
impl fmt::Display for TradingClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, session) in self.sessions.iter().enumerate() {
            write!(f, "{}{session}", if i == 0 { "" } else { ", " })?;
        }
        write!(f, " ({})", self.time_zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const M: i64 = 60_000;

    fn session(start_ms: i64, end_ms: i64) -> Session {
        Session { start_ms, end_ms }
    }

    fn cn() -> TradingClock {
        let sessions = vec![
            session(9 * H + 30 * M, 11 * H + 30 * M),
            session(13 * H, 15 * H),
        ];
        TradingClock::new(chrono_tz::Asia::Shanghai, sessions).unwrap()
    }

    #[test]
    fn cn_examples_from_semantics() {
        let clock = cn();
        let at = |h: i64, m: i64, s: i64| clock.elapsed_ms_clamped(h * H + m * M + s * 1000);
        assert_eq!(clock.total_ms(), 14_400_000);
        assert_eq!(at(9, 30, 0), (0, false));
        assert_eq!(at(11, 29, 59), (7_199_000, false));
        assert_eq!(at(11, 30, 0), (7_200_000, false));
        assert_eq!(at(12, 10, 0), (7_200_000, true));
        assert_eq!(at(13, 0, 0), (7_200_000, false));
        assert_eq!(at(15, 0, 0), (14_400_000, false));
        assert_eq!(at(9, 29, 59), (0, true));
        assert_eq!(at(15, 0, 1), (14_400_000, true));
        assert_eq!(clock.elapsed_ms_clamped(-1), (0, true));
    }

    #[test]
    fn positions() {
        let clock = cn();
        assert_eq!(clock.locate(0), ClockPosition::BeforeOpen);
        assert_eq!(
            clock.locate(12 * H),
            ClockPosition::InBreak {
                clamped_ms: 7_200_000
            }
        );
        let in_session = ClockPosition::InSession {
            elapsed_ms: 7_200_001,
        };
        assert_eq!(clock.locate(13 * H + 1), in_session);
        assert_eq!(clock.locate(16 * H), ClockPosition::AfterClose);
        assert_eq!(
            clock.to_string(),
            "09:30-11:30, 13:00-15:00 (Asia/Shanghai)"
        );
    }

    #[test]
    fn crypto_day_and_session_past_midnight() {
        let crypto = TradingClock::new(chrono_tz::UTC, vec![session(0, 24 * H)]).unwrap();
        assert_eq!(crypto.total_ms(), 86_400_000);
        assert_eq!(crypto.elapsed_ms_clamped(24 * H), (86_400_000, false));
        let night = TradingClock::new(chrono_tz::UTC, vec![session(21 * H, 26 * H + 30 * M)]);
        assert_eq!(
            night.unwrap().locate(25 * H),
            ClockPosition::InSession { elapsed_ms: 4 * H }
        );
    }

    #[test]
    fn validation_errors() {
        let error = |sessions| {
            TradingClock::new(chrono_tz::UTC, sessions)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(error(vec![]), "a trading clock needs at least one session");
        assert_eq!(
            error(vec![session(0, H), session(15 * H, 13 * H)]),
            "session 1 (15:00-13:00) does not end after it starts; give start before end"
        );
        assert_eq!(
            error(vec![session(20 * H, 49 * H)]),
            "session 0 (20:00-49:00) is outside 00:00-48:00; sessions are local wall-clock \
             times, past 24:00 only for sessions running past midnight"
        );
        assert_eq!(
            error(vec![
                session(13 * H, 15 * H),
                session(9 * H + 30 * M + 1500, 11 * H)
            ]),
            "session 1 (09:30:01.500-11:00) starts before session 0 (13:00-15:00) ends; \
             list sessions in time order without overlap"
        );
        assert!(TradingClock::new(chrono_tz::UTC, vec![session(0, H), session(H, 2 * H)]).is_ok());
    }
}
