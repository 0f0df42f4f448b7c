//! Markets: named trading clocks, from presets or custom sessions.
//!
//! | preset | time zone | sessions | what |
//! |---|---|---|---|
//! | `CN` | Asia/Shanghai | 09:30-11:30, 13:00-15:00 | SSE/SZSE A-shares, continuous trading |
//! | `hkex_northbound` | Asia/Shanghai | 09:30-11:30, 13:00-15:00 | Stock Connect northbound trading of SSE/SZSE shares from Hong Kong: the A-share sessions |
//! | `HK` | Asia/Hong_Kong | 09:30-12:00, 13:00-16:00 | HKEX securities market, continuous trading |
//! | `KR` | Asia/Seoul | 09:00-15:30 | KRX regular session |
//! | `JP` | Asia/Tokyo | 09:00-11:30, 12:30-15:30 | TSE; the close moved from 15:00 to 15:30 on 2024-11-05, use a custom market for older dates |
//! | `US` | America/New_York | 09:30-16:00 | NYSE/Nasdaq regular hours |
//! | `crypto` | UTC | 00:00-24:00 | round-the-clock venues, one UTC day per date |
//!
//! Auctions (pre-open, closing call) fall outside the sessions and are clamped by default.
//!
//! ```
//! use vizflow::market::Market;
//! let cn = Market::preset("cn").unwrap();
//! assert_eq!((cn.name.as_str(), cn.clock.total_ms()), ("CN", 14_400_000));
//! let night = Market::custom("night", "Asia/Shanghai", &[("21:00", "26:30")]).unwrap();
//! assert_eq!(night.clock.total_ms(), 5 * 3_600_000 + 1_800_000);
//! ```

use chrono_tz::Tz;
use serde::Deserialize;
use vizflow_operators::clock::{ClockError, Session, TradingClock};

/// Sessions as (start, end) local wall-clock times.
type SessionTimes = &'static [(&'static str, &'static str)];

/// Presets: name, IANA time zone, sessions (see the module docs).
const PRESETS: &[(&str, &str, SessionTimes)] = &[
    (
        "CN",
        "Asia/Shanghai",
        &[("09:30", "11:30"), ("13:00", "15:00")],
    ),
    ("KR", "Asia/Seoul", &[("09:00", "15:30")]),
    (
        "HK",
        "Asia/Hong_Kong",
        &[("09:30", "12:00"), ("13:00", "16:00")],
    ),
    (
        "hkex_northbound",
        "Asia/Shanghai",
        &[("09:30", "11:30"), ("13:00", "15:00")],
    ),
    (
        "JP",
        "Asia/Tokyo",
        &[("09:00", "11:30"), ("12:30", "15:30")],
    ),
    ("US", "America/New_York", &[("09:30", "16:00")]),
    ("crypto", "UTC", &[("00:00", "24:00")]),
];

/// Why a market could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// A name that is no preset.
    #[error(
        "unknown market {name:?}; presets are {}, or give time_zone and sessions for a custom market",
        Market::preset_names().join(", ")
    )]
    UnknownPreset {
        /// The name given.
        name: String,
    },
    /// A time zone that is not an IANA name.
    #[error("unknown time zone {zone:?} for market {market:?}; {hint}")]
    UnknownTimeZone {
        /// The market's name.
        market: String,
        /// The zone given.
        zone: String,
        /// A suggestion.
        hint: String,
    },
    /// A session time that is not `HH:MM` or `HH:MM:SS`.
    #[error(
        "invalid session time {value:?} for market {market:?}; \
         expected HH:MM or HH:MM:SS with hours 00-48, e.g. \"09:30\" or \"24:00\""
    )]
    InvalidTime {
        /// The market's name.
        market: String,
        /// The text given.
        value: String,
    },
    /// Sessions that make no trading clock.
    #[error("market {market:?}: {source}")]
    Clock {
        /// The market's name.
        market: String,
        /// What is wrong with the sessions.
        source: ClockError,
    },
    /// A config that names neither a preset nor a custom market.
    #[error(
        "market config needs a preset name ({}) or both time_zone and sessions",
        Market::preset_names().join(", ")
    )]
    Incomplete,
}

/// A named market: a trading clock plus its name.
#[derive(Clone, Debug, PartialEq)]
pub struct Market {
    /// Preset or user-given name, used in messages and reports.
    pub name: String,
    /// Time zone and sessions.
    pub clock: TradingClock,
}

impl Market {
    /// A preset by name, case-insensitively (`cn`, `CN`, `HKEX_Northbound`, ...).
    pub fn preset(name: &str) -> Result<Market, MarketError> {
        let (preset, zone, sessions) = PRESETS
            .iter()
            .find(|(preset, ..)| preset.eq_ignore_ascii_case(name))
            .ok_or_else(|| MarketError::UnknownPreset {
                name: name.to_string(),
            })?;
        Market::custom(preset, zone, sessions)
    }

    /// A custom market: an IANA time zone and sessions as `("09:30", "11:30")` pairs of local
    /// wall-clock times (`HH:MM` or `HH:MM:SS`, ends inclusive; `24:00` and later for
    /// sessions running past midnight, up to `48:00`).
    pub fn custom(
        name: &str,
        time_zone: &str,
        sessions: &[(&str, &str)],
    ) -> Result<Market, MarketError> {
        let sessions = sessions.iter().map(|&(start, end)| {
            Ok(Session {
                start_ms: parse_time(name, start)?,
                end_ms: parse_time(name, end)?,
            })
        });
        Market::new(
            name,
            parse_time_zone(name, time_zone)?,
            sessions.collect::<Result<_, _>>()?,
        )
    }

    /// The preset names, as spelled in reports.
    pub fn preset_names() -> &'static [&'static str] {
        const NAMES: [&str; PRESETS.len()] = {
            let mut names = [""; PRESETS.len()];
            let mut i = 0;
            while i < names.len() {
                names[i] = PRESETS[i].0;
                i += 1;
            }
            names
        };
        &NAMES
    }

    fn new(name: &str, time_zone: Tz, sessions: Vec<Session>) -> Result<Market, MarketError> {
        let clock =
            TradingClock::new(time_zone, sessions).map_err(|source| MarketError::Clock {
                market: name.to_string(),
                source,
            })?;
        Ok(Market {
            name: name.to_string(),
            clock,
        })
    }
}

/// The `[market]` table of a pipeline config: a preset (`name = "CN"`), a custom market
/// (`time_zone` and `sessions`, with an optional `name`), or a preset with its time zone or
/// sessions overridden.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    /// A preset name, or the custom market's name.
    pub name: Option<String>,
    /// IANA time zone, e.g. "Asia/Shanghai".
    pub time_zone: Option<String>,
    /// Sessions as `[start, end]` pairs, e.g. `[["09:30", "11:30"], ["13:00", "15:00"]]`.
    pub sessions: Option<Vec<[String; 2]>>,
}

impl MarketConfig {
    /// The market this config describes.
    pub fn build(&self) -> Result<Market, MarketError> {
        let base = match (&self.name, &self.time_zone, &self.sessions) {
            (Some(name), Some(_), Some(_)) => Market::preset(name).ok(),
            (Some(name), _, _) => Some(Market::preset(name)?),
            (None, Some(_), Some(_)) => None,
            (None, _, _) => return Err(MarketError::Incomplete),
        };
        let name = match &base {
            Some(preset) => preset.name.clone(),
            None => self.name.clone().unwrap_or_else(|| "custom".to_string()),
        };
        let time_zone = match (&self.time_zone, &base) {
            (Some(zone), _) => parse_time_zone(&name, zone)?,
            (None, Some(preset)) => preset.clock.time_zone(),
            (None, None) => return Err(MarketError::Incomplete),
        };
        let sessions = match (&self.sessions, base) {
            (Some(sessions), _) => sessions
                .iter()
                .map(|[start, end]| {
                    let (start_ms, end_ms) = (parse_time(&name, start)?, parse_time(&name, end)?);
                    Ok(Session { start_ms, end_ms })
                })
                .collect::<Result<_, MarketError>>()?,
            (None, Some(preset)) => preset.clock.sessions().to_vec(),
            (None, None) => return Err(MarketError::Incomplete),
        };
        Market::new(&name, time_zone, sessions)
    }
}

fn parse_time_zone(market: &str, zone: &str) -> Result<Tz, MarketError> {
    zone.parse().map_err(|_| {
        let wanted = zone.trim().replace(' ', "_");
        let suggestion = chrono_tz::TZ_VARIANTS.iter().find(|tz| {
            let name = tz.name();
            name.eq_ignore_ascii_case(&wanted)
                || name
                    .rsplit('/')
                    .next()
                    .is_some_and(|city| city.eq_ignore_ascii_case(&wanted))
        });
        let hint = match suggestion {
            Some(tz) => format!("did you mean {:?}?", tz.name()),
            None => "use an IANA name such as \"Asia/Shanghai\" or \"America/New_York\"".into(),
        };
        MarketError::UnknownTimeZone {
            market: market.into(),
            zone: zone.into(),
            hint,
        }
    })
}

/// `HH:MM` or `HH:MM:SS` in ms; hours up to 48, which chrono's `NaiveTime` cannot hold.
fn parse_time(market: &str, text: &str) -> Result<i64, MarketError> {
    let number = |field: &str| {
        let digits =
            !field.is_empty() && field.len() <= 2 && field.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| field.parse::<i64>().ok()).flatten()
    };
    let fields: Option<Vec<i64>> = text.split(':').map(number).collect();
    let ms = match fields.as_deref() {
        Some(&[hour, minute]) => Some((hour, minute, 0)),
        Some(&[hour, minute, second]) => Some((hour, minute, second)),
        _ => None,
    }
    .filter(|&(hour, minute, second)| hour <= 48 && minute < 60 && second < 60)
    .map(|(hour, minute, second)| ((hour * 60 + minute) * 60 + second) * 1000);
    ms.filter(|&ms| ms <= 48 * 3_600_000)
        .ok_or_else(|| MarketError::InvalidTime {
            market: market.into(),
            value: text.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vizflow_operators::clock::ClockPosition;

    const H: i64 = 3_600_000;

    fn spans(market: &Market) -> Vec<(i64, i64)> {
        market
            .clock
            .sessions()
            .iter()
            .map(|s| (s.start_ms, s.end_ms))
            .collect()
    }

    #[test]
    fn presets() {
        for name in Market::preset_names() {
            assert_eq!(&Market::preset(&name.to_uppercase()).unwrap().name, name);
        }
        let cn = Market::preset("cn").unwrap();
        assert_eq!(cn.clock.time_zone(), chrono_tz::Asia::Shanghai);
        assert_eq!(
            spans(&cn),
            [(9 * H + H / 2, 11 * H + H / 2), (13 * H, 15 * H)]
        );
        let jp = Market::preset("JP").unwrap();
        assert_eq!(
            spans(&jp),
            [(9 * H, 11 * H + H / 2), (12 * H + H / 2, 15 * H + H / 2)]
        );
        let northbound = Market::preset("HKEX_Northbound").unwrap();
        assert_eq!(northbound.clock.sessions(), cn.clock.sessions());
        assert_eq!(
            Market::preset("HK").unwrap().clock.total_ms(),
            5 * H + H / 2
        );
        assert_eq!(
            Market::preset("KR").unwrap().clock.total_ms(),
            6 * H + H / 2
        );
        let us = Market::preset("us").unwrap();
        assert_eq!(us.clock.time_zone(), chrono_tz::America::New_York);
        assert_eq!(us.clock.total_ms(), 6 * H + H / 2);
        assert_eq!(spans(&Market::preset("Crypto").unwrap()), [(0, 24 * H)]);
    }

    /// Local wall-clock `(hour, minute)`.
    type LocalTime = (i64, i64);

    /// A market's hours as the exchange publishes them, written out here independently of
    /// `PRESETS`: the IANA zone, its UTC offset (none of these zones has had daylight saving
    /// time since 1988), and the sessions in local wall-clock time.
    struct PublishedHours {
        preset: &'static str,
        zone: &'static str,
        utc_offset_hours: i64,
        sessions: &'static [(LocalTime, LocalTime)],
    }

    /// HKEX securities market, continuous trading: 09:30-12:00 and 13:00-16:00 HKT (UTC+8).
    const HKEX: PublishedHours = PublishedHours {
        preset: "HK",
        zone: "Asia/Hong_Kong",
        utc_offset_hours: 8,
        sessions: &[((9, 30), (12, 0)), ((13, 0), (16, 0))],
    };

    /// KRX regular session: 09:00-15:30 KST (UTC+9), no lunch break.
    const KRX: PublishedHours = PublishedHours {
        preset: "KR",
        zone: "Asia/Seoul",
        utc_offset_hours: 9,
        sessions: &[((9, 0), (15, 30))],
    };

    /// TSE since 2024-11-05: 09:00-11:30 and 12:30-15:30 JST (UTC+9); the afternoon closed
    /// at 15:00 before.
    const TSE: PublishedHours = PublishedHours {
        preset: "JP",
        zone: "Asia/Tokyo",
        utc_offset_hours: 9,
        sessions: &[((9, 0), (11, 30)), ((12, 30), (15, 30))],
    };

    fn date(year: i32, month: u32, day: u32) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(year, month, day).unwrap()
    }

    /// The instant of local wall-clock `(hour, minute)` plus `ms` on `date`, in epoch ms,
    /// by the fixed UTC offset (not through a time zone database).
    fn utc_ms(
        date: chrono::NaiveDate,
        offset_hours: i64,
        (hour, minute): LocalTime,
        ms: i64,
    ) -> i64 {
        let midnight_utc_ms = date
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        midnight_utc_ms + (hour - offset_hours) * H + minute * 60_000 + ms
    }

    /// `elapsed_ms` of the instants (epoch ms) under the drop policy: `None` out of session.
    fn elapsed_of_instants(
        market: &Market,
        date: chrono::NaiveDate,
        instants: &[i64],
    ) -> Vec<Option<i64>> {
        use vizflow_operators::parse_time::{OutOfSession, TimestampFormat, elapsed_ms};
        let column = arrow::array::Int64Array::from(instants.to_vec());
        let times = elapsed_ms(
            &column,
            TimestampFormat::EpochMillis,
            &market.clock,
            date,
            OutOfSession::Drop,
        )
        .unwrap();
        (0..instants.len())
            .map(|i| {
                let kept = times.keep.as_ref().is_none_or(|keep| keep.value(i));
                kept.then(|| times.elapsed_ms.value(i))
            })
            .collect()
    }

    /// Checks a preset against its published hours on `dates`: the zone, and for each
    /// session the last ms before it, its first ms, its last ms and the first ms after it,
    /// both as local wall-clock times and as UTC instants.
    fn check_published_hours(hours: &PublishedHours, dates: &[chrono::NaiveDate]) {
        let market = Market::preset(hours.preset).unwrap();
        assert_eq!(
            market.clock.time_zone().name(),
            hours.zone,
            "{}",
            hours.preset
        );
        let sessions = market.clock.sessions().len();
        assert_eq!(sessions, hours.sessions.len(), "{}", hours.preset);
        let local_ms = |(hour, minute): LocalTime| hour * H + minute * 60_000;
        let mut offset_ms = 0;
        for (i, &(start, end)) in hours.sessions.iter().enumerate() {
            let length_ms = local_ms(end) - local_ms(start);
            // (local time, ms from it, expected elapsed_ms; None: out of session)
            let cases = [
                (start, -1, None),
                (start, 0, Some(offset_ms)),
                (start, 1, Some(offset_ms + 1)),
                (end, -1, Some(offset_ms + length_ms - 1)),
                (end, 0, Some(offset_ms + length_ms)),
                (end, 1, None),
            ];
            for &(time, ms, expected) in &cases {
                let at = format!("{} session {i}, {time:?} {ms:+} ms", hours.preset);
                let position = market.clock.locate(local_ms(time) + ms);
                let elapsed = match position {
                    ClockPosition::InSession { elapsed_ms } => Some(elapsed_ms),
                    _ => None,
                };
                assert_eq!(elapsed, expected, "{at} local: {position:?}");
                for &day in dates {
                    let instant = utc_ms(day, hours.utc_offset_hours, time, ms);
                    let from_utc = elapsed_of_instants(&market, day, &[instant]);
                    assert_eq!(
                        from_utc,
                        [expected],
                        "{at} on {day}, instant {instant} ms UTC"
                    );
                }
            }
            offset_ms += length_ms;
        }
        assert_eq!(market.clock.total_ms(), offset_ms, "{}", hours.preset);
    }

    /// A winter and a summer date (no daylight saving time in any of these zones), and the
    /// first day of the TSE's 15:30 close.
    fn sample_dates() -> [chrono::NaiveDate; 3] {
        [date(2025, 1, 6), date(2024, 7, 1), date(2024, 11, 5)]
    }

    #[test]
    fn hk_preset_has_the_hkex_hours() {
        check_published_hours(&HKEX, &sample_dates());
        let hk = Market::preset("HK").unwrap();
        let day = date(2025, 1, 6);
        // 09:30 HKT is 01:30 UTC; 12:00 HKT 04:00 UTC; 13:00 HKT 05:00 UTC; 16:00 HKT 08:00 UTC.
        let utc = |hour: i64, minute: i64| utc_ms(day, 0, (hour, minute), 0);
        assert_eq!(
            elapsed_of_instants(
                &hk,
                day,
                &[
                    utc(1, 29),
                    utc(1, 30),
                    utc(4, 0),
                    utc(4, 30),
                    utc(5, 0),
                    utc(8, 0),
                    utc(8, 1)
                ]
            ),
            [
                None,
                Some(0),
                Some(9_000_000),
                None,
                Some(9_000_000),
                Some(19_800_000),
                None
            ]
        );
        // Clamped, the lunch break is the end of the morning.
        assert_eq!(
            hk.clock.elapsed_ms_clamped(12 * H + 30 * 60_000),
            (9_000_000, true)
        );
    }

    #[test]
    fn kr_preset_has_the_krx_hours() {
        check_published_hours(&KRX, &sample_dates());
        let kr = Market::preset("KR").unwrap();
        let day = date(2025, 1, 6);
        // 09:00 KST is 00:00 UTC of the same date; 15:30 KST 06:30 UTC. The last ms of the
        // previous UTC day is 08:59:59.999 KST, before the open.
        let utc = |hour: i64, minute: i64, ms: i64| utc_ms(day, 0, (hour, minute), ms);
        assert_eq!(
            elapsed_of_instants(
                &kr,
                day,
                &[utc(0, 0, -1), utc(0, 0, 0), utc(6, 30, 0), utc(6, 30, 1)]
            ),
            [None, Some(0), Some(23_400_000), None]
        );
        // Midday is trading time: no lunch break.
        assert_eq!(kr.clock.elapsed_ms_clamped(12 * H), (3 * H, false));
    }

    #[test]
    fn jp_preset_has_the_tse_hours_since_november_2024() {
        check_published_hours(&TSE, &sample_dates());
        let jp = Market::preset("JP").unwrap();
        let day = date(2024, 11, 5);
        // 09:00 JST is 00:00 UTC; the lunch break 11:30-12:30 JST is 02:30-03:30 UTC; the
        // close 15:30 JST is 06:30 UTC.
        let utc = |hour: i64, minute: i64, ms: i64| utc_ms(day, 0, (hour, minute), ms);
        assert_eq!(
            elapsed_of_instants(
                &jp,
                day,
                &[
                    utc(0, 0, 0),
                    utc(2, 30, 0),
                    utc(2, 30, 1),
                    utc(3, 0, 0),
                    utc(3, 30, 0),
                    utc(6, 0, 1),
                    utc(6, 30, 0),
                    utc(6, 30, 1),
                ]
            ),
            [
                Some(0),
                Some(9_000_000),
                None,
                None,
                Some(9_000_000),
                Some(18_000_001),
                Some(19_800_000),
                None
            ]
        );
        // The preset does not depend on the date: before 2024-11-05, when the TSE closed at
        // 15:00, it still counts 15:00-15:30 as trading time, as its docs warn; those dates
        // take the preset with the old sessions.
        let before = date(2024, 11, 1);
        let after_old_close = utc_ms(before, 9, (15, 0), 1);
        assert_eq!(
            elapsed_of_instants(&jp, before, &[after_old_close]),
            [Some(18_000_001)]
        );
        let old = toml::from_str::<MarketConfig>(
            "name = \"JP\"\nsessions = [[\"09:00\", \"11:30\"], [\"12:30\", \"15:00\"]]",
        )
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(
            elapsed_of_instants(
                &old,
                before,
                &[utc_ms(before, 9, (15, 0), 0), after_old_close]
            ),
            [Some(18_000_000), None]
        );
    }

    #[test]
    fn custom_market() {
        let market = Market::custom(
            "cn_auction",
            "Asia/Shanghai",
            &[("09:15:00", "11:30"), ("13:00", "15:00")],
        );
        let market = market.unwrap();
        assert_eq!(market.name, "cn_auction");
        assert_eq!(market.clock.total_ms(), 4 * H + H / 4);
    }

    #[test]
    fn error_texts() {
        let error = |result: Result<Market, MarketError>| result.unwrap_err().to_string();
        assert_eq!(
            error(Market::preset("NYSE")),
            "unknown market \"NYSE\"; presets are CN, KR, HK, hkex_northbound, JP, US, crypto, \
             or give time_zone and sessions for a custom market"
        );
        assert_eq!(
            error(Market::custom("x", "shanghai", &[("09:30", "11:30")])),
            "unknown time zone \"shanghai\" for market \"x\"; did you mean \"Asia/Shanghai\"?"
        );
        assert_eq!(
            error(Market::custom("x", "New York", &[("09:30", "11:30")])),
            "unknown time zone \"New York\" for market \"x\"; did you mean \"America/New_York\"?"
        );
        assert_eq!(
            error(Market::custom("x", "Mars/Olympus", &[("09:30", "11:30")])),
            "unknown time zone \"Mars/Olympus\" for market \"x\"; \
             use an IANA name such as \"Asia/Shanghai\" or \"America/New_York\""
        );
        for bad in [
            "9h30",
            "09:60",
            "49:00",
            "48:00:01",
            "09:30:00.5",
            "",
            "093000",
        ] {
            assert_eq!(
                error(Market::custom("x", "UTC", &[(bad, "23:00")])),
                format!(
                    "invalid session time {bad:?} for market \"x\"; expected HH:MM or HH:MM:SS \
                     with hours 00-48, e.g. \"09:30\" or \"24:00\""
                )
            );
        }
        assert_eq!(
            error(Market::custom(
                "x",
                "UTC",
                &[("13:00", "15:00"), ("09:30", "11:30")]
            )),
            "market \"x\": session 1 (09:30-11:30) starts before session 0 (13:00-15:00) ends; \
             list sessions in time order without overlap"
        );
    }

    #[test]
    fn config() {
        let parse = |text: &str| toml::from_str::<MarketConfig>(text).unwrap().build();
        assert_eq!(
            parse("name = \"cn\"").unwrap(),
            Market::preset("CN").unwrap()
        );
        let custom = parse("time_zone = \"Asia/Tokyo\"\nsessions = [[\"09:00\", \"15:00\"]]");
        let custom = custom.unwrap();
        assert_eq!(
            (custom.name.as_str(), custom.clock.total_ms()),
            ("custom", 6 * H)
        );
        let named = parse(
            "name = \"tse_old\"\ntime_zone = \"Asia/Tokyo\"\nsessions = [[\"09:00\", \"15:00\"]]",
        );
        assert_eq!(named.unwrap().name, "tse_old");
        let overridden =
            parse("name = \"JP\"\nsessions = [[\"09:00\", \"11:30\"], [\"12:30\", \"15:00\"]]");
        let overridden = overridden.unwrap();
        assert_eq!(
            (overridden.name.as_str(), overridden.clock.total_ms()),
            ("JP", 5 * H)
        );
        assert_eq!(overridden.clock.time_zone(), chrono_tz::Asia::Tokyo);
        let shanghai_days = parse("name = \"crypto\"\ntime_zone = \"Asia/Shanghai\"").unwrap();
        assert_eq!(shanghai_days.clock.time_zone(), chrono_tz::Asia::Shanghai);
        assert_eq!(
            parse("time_zone = \"UTC\"").unwrap_err().to_string(),
            "market config needs a preset name (CN, KR, HK, hkex_northbound, JP, US, crypto) \
             or both time_zone and sessions"
        );
        assert!(parse("name = \"mars\"\ntime_zone = \"UTC\"").is_err());
        let unknown = toml::from_str::<MarketConfig>("zone = \"UTC\"")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `zone`"), "{unknown}");
    }
}
