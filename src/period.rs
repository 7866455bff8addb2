//! Periods and instants given by clients (`from`, `to`, `as_of`): RFC 3339 text in, UTC
//! instants out. Shared by the HTTP layer, the
//! statement writer and the command line.

use chrono::{DateTime, Utc};

use crate::identity::domain::InvalidInput;

/// An RFC 3339 instant (`2026-11-28T10:00:00Z`). A `+` offset that arrived as a space (an
/// unencoded `+` in a query string) is accepted.
pub fn parse_instant(raw: &str, field: &'static str) -> Result<DateTime<Utc>, InvalidInput> {
    DateTime::parse_from_rfc3339(&raw.trim().replace(' ', "+"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| InvalidInput {
            field,
            message: "must be an RFC 3339 date-time, e.g. 2026-11-28T10:00:00Z".into(),
        })
}

/// Optional `(from, to)` bounds of a period.
pub type Period = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Optional `from` / `to` bounds (`from` inclusive, `to` exclusive), `from` before `to`.
pub fn period(from: Option<&str>, to: Option<&str>) -> Result<Period, InvalidInput> {
    let from = from.map(|raw| parse_instant(raw, "from")).transpose()?;
    let to = to.map(|raw| parse_instant(raw, "to")).transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            return Err(InvalidInput {
                field: "to",
                message: "must be after from".into(),
            });
        }
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_periods() {
        assert!(parse_instant("2026-11-28T10:00:00 01:00", "as_of").is_ok());
        assert_eq!(
            parse_instant("yesterday", "as_of").unwrap_err().field,
            "as_of"
        );
        assert_eq!(
            period(Some("2026-11-28T10:00:00Z"), Some("2026-11-28T09:00:00Z"))
                .unwrap_err()
                .field,
            "to"
        );
    }
}
