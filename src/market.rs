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
