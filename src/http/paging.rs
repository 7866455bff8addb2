//! Opaque cursors and shared query-parameter parsing for list endpoints.
//!
//! Lists are ordered newest first by a key that never changes once a row exists (the event
//! position that created it). New rows always get a larger key than every existing row, so a
//! cursor "rows with key below K" is stable under concurrent inserts: no row is skipped or
//! repeated across pages.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::Collection;

use crate::identity::domain::InvalidInput;
pub use crate::period::{parse_instant, period, range, Period};

const CURSOR_PREFIX: &str = "v1:";

/// The cursor that continues a listing after the row with `key`.
pub fn encode_cursor(key: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{key}"))
}

/// The key a cursor continues after.
pub fn decode_cursor(cursor: &str) -> Result<u64, InvalidInput> {
    URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(CURSOR_PREFIX)?.parse().ok())
        .ok_or_else(|| InvalidInput {
            field: "cursor",
            message: "is not a cursor returned by this API".into(),
        })
}

/// An optional non-negative integer parameter. (Query strings are taken as text and parsed
/// here, so that the error names the parameter.)
pub fn number(raw: Option<&str>, field: &'static str) -> Result<Option<u64>, InvalidInput> {
    raw.map(|raw| {
        raw.trim().parse().map_err(|_| InvalidInput {
            field,
            message: "must be a non-negative integer".into(),
        })
    })
    .transpose()
}

/// Page size: `limit` (default `default`), 1 to `max`.
pub fn page_size(raw: Option<&str>, default: u64, max: u64) -> Result<u64, InvalidInput> {
    match number(raw, "limit")? {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(InvalidInput {
            field: "limit",
            message: format!("must be between 1 and {max}"),
        }),
    }
}

/// One page of `collection` newest first by the Int64 field `key` (a key that never changes
/// and only grows for new rows, see the module docs): the rows matching `filter` below the
/// `cursor`'s key, at most `limit`, and the cursor of the next page if there is one.
pub async fn newest_first(
    collection: &Collection<Document>,
    mut filter: Document,
    key: &str,
    cursor: Option<&str>,
    limit: u64,
) -> Result<(Vec<Document>, Option<String>), PageError> {
    if let Some(cursor) = cursor {
        let below = i64::try_from(decode_cursor(cursor)?).unwrap_or(i64::MAX);
        filter.insert(key, doc! { "$lt": below });
    }
    let mut rows: Vec<Document> = collection
        .find(filter)
        .sort(doc! { key: -1 })
        .limit(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
        .await?
        .try_collect()
        .await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more
        .then(|| rows.last().and_then(|r| r.get_i64(key).ok()))
        .flatten()
        .map(|k| encode_cursor(k.max(0) as u64));
    Ok((rows, next))
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Cursor(#[from] InvalidInput),
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
}

impl From<PageError> for super::error::ApiError {
    fn from(e: PageError) -> Self {
        match e {
            PageError::Cursor(invalid) => invalid.into(),
            PageError::Mongo(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cursors_round_trip(key in any::<u64>()) {
            prop_assert_eq!(decode_cursor(&encode_cursor(key)).unwrap(), key);
        }

        #[test]
        fn any_text_is_answered_without_panicking(text in "\\PC{0,40}") {
            let _ = decode_cursor(&text);
        }
    }
}
