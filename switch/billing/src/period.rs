//! The period an invoice covers: `[from, to)`, in UTC.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::BillingError;

/// `[from_ms, until_ms)` in milliseconds since the Unix epoch: a call at
/// `to` belongs to the next period, so consecutive periods never bill a call
/// twice or miss one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ms: u64,
    pub until_ms: u64,
}

impl Period {
    /// Reads `from` and `to`, each a calendar date (`2026-11-01`, midnight
    /// UTC) or an RFC 3339 time (`2026-11-01T12:00:00+01:00`).
    pub fn parse(from: &str, to: &str) -> Result<Period, BillingError> {
        let from_ms = parse_time("from", from)?;
        let until_ms = parse_time("to", to)?;
        if until_ms <= from_ms {
            return Err(BillingError::EmptyPeriod {
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
        Ok(Period { from_ms, until_ms })
    }

    pub fn contains(&self, at_ms: u64) -> bool {
        (self.from_ms..self.until_ms).contains(&at_ms)
    }

    /// `from` as RFC 3339 in UTC, to the millisecond when it has them.
    pub fn from_text(&self) -> String {
        format_ms(self.from_ms)
    }

    pub fn to_text(&self) -> String {
        format_ms(self.until_ms)
    }
}

fn parse_time(field: &'static str, given: &str) -> Result<u64, BillingError> {
    let bad = || BillingError::BadTime {
        field,
        given: given.chars().take(64).collect(),
    };
    let at = match OffsetDateTime::parse(given, &Rfc3339) {
        Ok(at) => at,
        Err(_) => {
            let date = Date::parse(given, format_description!("[year]-[month]-[day]"))
                .map_err(|_| bad())?;
            PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_offset(UtcOffset::UTC)
        }
    };
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| bad())
}

/// An instant as RFC 3339 in UTC; whole seconds print without a fraction.
pub fn format_ms(at_ms: u64) -> String {
    let at = i128::from(at_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(at)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| at_ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_midnight_utc_and_times_keep_their_offset() {
        let period = Period::parse("2026-11-01", "2026-12-01").unwrap();
        assert_eq!(period.from_ms, 1_793_491_200_000);
        assert_eq!(period.until_ms, 1_796_083_200_000);
        assert_eq!(period.from_text(), "2026-11-01T00:00:00Z");
        let shifted =
            Period::parse("2026-11-01T01:00:00+01:00", "2026-11-01T00:00:00.250Z").unwrap();
        assert_eq!(shifted.from_ms, 1_793_491_200_000);
        assert_eq!(shifted.until_ms, 1_793_491_200_250);
        assert_eq!(shifted.to_text(), "2026-11-01T00:00:00.25Z");
        assert!(shifted.contains(1_793_491_200_249));
        assert!(!shifted.contains(1_793_491_200_250), "`to` is exclusive");
    }

    #[test]
    fn a_bad_or_empty_period_says_which_end() {
        assert_eq!(
            Period::parse("2026-13-01", "2026-12-01"),
            Err(BillingError::BadTime {
                field: "from",
                given: "2026-13-01".into()
            })
        );
        assert!(matches!(
            Period::parse("2026-11-01", "yesterday"),
            Err(BillingError::BadTime { field: "to", .. })
        ));
        assert!(matches!(
            Period::parse("2026-12-01", "2026-12-01"),
            Err(BillingError::EmptyPeriod { .. })
        ));
        assert!(matches!(
            Period::parse("1969-12-31", "2026-12-01"),
            Err(BillingError::BadTime { field: "from", .. })
        ));
    }
}
