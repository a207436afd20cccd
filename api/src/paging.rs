//! Keyset pagination shared by every list: `?limit=` (1–100) and an opaque `?cursor=` that names
//! the last item of the previous page (`{created_at µs}_{id}`), so pages never skip or repeat rows.

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

impl ListParams {
    pub fn page(&self) -> ApiResult<PageRequest> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                "limit must be between 1 and 100",
            ));
        }
        let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this API issued");
        let (after_time, after_id) = match &self.cursor {
            Some(cursor) => {
                let (micros, id) = cursor
                    .split_once('_')
                    .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_owned())))
                    .ok_or_else(bad)?;
                (
                    Some(DateTime::from_timestamp_micros(micros).ok_or_else(bad)?),
                    Some(id),
                )
            }
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
    /// The id bound as a UUID, for tables keyed by one (a malformed cursor matches nothing).
    pub fn after_uuid(&self) -> Option<uuid::Uuid> {
        self.after_id.as_deref().and_then(|id| id.parse().ok())
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
                format!("{}_{id}", at.timestamp_micros())
            })
        } else {
            None
        }
    }
}
