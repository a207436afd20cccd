//! Keyset pagination shared by every list, on every plane: `?limit=` (1–100) and an opaque
//! `?cursor=` that names the last item of the previous page (its time and id), so pages never
//! skip or repeat rows. A cursor this API did not issue is 400 `invalid_cursor`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A checked page request: fetch `limit + 1` rows after `after` to learn whether more follow.
pub struct PageRequest {
    pub limit: i64,
    pub after_time: Option<DateTime<Utc>>,
    pub after_id: Option<String>,
}

pub fn bad_cursor() -> ApiError {
    ApiError::bad_request("invalid_cursor", "cursor is not one this API issued")
}

/// The one cursor format: base64url of `{time in µs}_{id}`. Opaque to clients; ids never
/// contain `_` before the first one, so the split is unambiguous.
pub fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}_{id}", at.timestamp_micros()))
}

fn decode_cursor(raw: &str) -> ApiResult<(DateTime<Utc>, String)> {
    let text = URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(bad_cursor)?;
    let (micros, id) = text.split_once('_').ok_or_else(bad_cursor)?;
    let at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad_cursor)?;
    if id.is_empty() {
        return Err(bad_cursor());
    }
    Ok((at, id.to_owned()))
}

impl ListParams {
    pub fn page(&self) -> ApiResult<PageRequest> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be a whole number from 1 to 100, not {limit}"),
            ));
        }
        // `?cursor=` with nothing after it asks for the first page, as no cursor does.
        let cursor = self.cursor.as_deref().filter(|c| !c.trim().is_empty());
        let (after_time, after_id) = match cursor.map(decode_cursor).transpose()? {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        Ok(PageRequest {
            limit,
            after_time,
            after_id,
        })
    }
}

impl PageRequest {
    /// The cursor's id as the key type of the list (a malformed one is 400).
    pub fn after_key<T: std::str::FromStr>(&self) -> ApiResult<Option<T>> {
        self.after_id
            .as_deref()
            .map(|id| id.parse().map_err(|_| bad_cursor()))
            .transpose()
    }

    /// The id bound as a UUID, for tables keyed by one.
    pub fn after_uuid(&self) -> ApiResult<Option<uuid::Uuid>> {
        self.after_key()
    }

    /// The id as a sequence number, for tables keyed by one.
    pub fn after_i64(&self) -> ApiResult<Option<i64>> {
        self.after_key()
    }

    /// Trims the extra row and returns the cursor of the next page, if there is one.
    pub fn finish<T>(
        &self,
        items: &mut Vec<T>,
        key: impl Fn(&T) -> (DateTime<Utc>, String),
    ) -> Option<String> {
        if items.len() as i64 > self.limit {
            items.truncate(self.limit as usize);
            items.last().map(|item| {
                let (at, id) = key(item);
                encode_cursor(at, &id)
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        let raw = encode_cursor(at, "97e79d874a12451fabeca6ab");
        let page = ListParams {
            limit: Some(5),
            cursor: Some(raw),
        }
        .page()
        .unwrap();
        assert_eq!(page.after_time, Some(at));
        assert_eq!(page.after_id.as_deref(), Some("97e79d874a12451fabeca6ab"));
        assert!(page.after_uuid().is_err(), "not a UUID key");
        // An empty cursor asks for the first page, as no cursor does.
        let first = ListParams {
            limit: None,
            cursor: Some(String::new()),
        }
        .page()
        .unwrap();
        assert!(first.after_time.is_none() && first.after_id.is_none());
        for bad in [
            "%%%",
            "bm90LWEtY3Vyc29y",
            "MTox",
            "9223372036854775807_x",
            "nonsense",
        ] {
            let params = ListParams {
                limit: None,
                cursor: Some(bad.into()),
            };
            assert!(params.page().is_err(), "{bad}");
        }
        for limit in [0, 101, -1] {
            let params = ListParams {
                limit: Some(limit),
                cursor: None,
            };
            assert!(params.page().is_err(), "{limit}");
        }
    }
}
