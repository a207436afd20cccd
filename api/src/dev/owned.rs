//! The developer's own resources as extractors. A handler that acts on one draft, submission,
//! payment intent or ticket takes `OwnedDraft` (…) and receives it loaded and authorised: the
//! row is selected by its typed path id *and* the developer, so someone else's resource is as
//! absent as a missing one (404 `not_found` either way, and a malformed id the same).

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sqlx::types::Uuid;

use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::error::{ApiError, ApiPath, ApiResult, PathParam};

/// A resource of the calling developer, with the developer.
pub struct Owned<T> {
    pub developer: DeveloperAuth,
    pub item: T,
}

/// A row a developer owns, found by its path id.
pub trait OwnedResource: Sized + Send {
    type Id: PathParam + Send;
    /// As in "draft not found".
    const NAME: &'static str;
    /// The row with this id, if `developer` owns it.
    fn load(
        state: &AppState,
        developer: Uuid,
        id: Self::Id,
    ) -> impl Future<Output = ApiResult<Option<Self>>> + Send;
}

impl<T: OwnedResource> FromRequestParts<AppState> for Owned<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        // The credential first: without one the answer is 401 whatever the id.
        let developer = DeveloperAuth::from_request_parts(parts, state).await?;
        let ApiPath(id) = ApiPath::<T::Id>::from_request_parts(parts, state).await?;
        let item = T::load(state, developer.developer_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found(T::NAME))?;
        Ok(Self { developer, item })
    }
}
