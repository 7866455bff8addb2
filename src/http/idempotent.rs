//! Runs a write handler under the `Idempotency-Key` rules (see `crate::idempotency`).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::idempotency::{request_hash, valid_key, Begin, IdempotencyKeys};
use crate::ledger::service::CommandIds;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The `Idempotency-Key` header of write endpoints.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1 to 255 printable ASCII characters. A repeat with the same key and body answers the
    /// first answer (with `Idempotent-Replayed: true`) and writes nothing; the same key with
    /// another body is 409 `idempotency_conflict`.
    #[serde(rename = "Idempotency-Key")]
    #[param(rename = "Idempotency-Key")]
    pub key: Option<String>,
}

/// Calls `run` at most once per (user, key, request). Without a key, simply calls it.
pub async fn idempotent<F, Fut, R>(
    state: &AppState,
    user: Uuid,
    headers: &HeaderMap,
    route: &str,
    body: &Value,
    run: F,
) -> Response
where
    F: FnOnce(CommandIds) -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, R), ApiError>>,
    R: serde::Serialize,
{
    let key = match headers.get(IDEMPOTENCY_HEADER).map(|raw| raw.to_str()) {
        None => None,
        Some(Ok(key)) if valid_key(key) => Some(key.to_owned()),
        Some(_) => {
            return ApiError::Validation {
                field: "Idempotency-Key".into(),
                message: "must be 1 to 255 printable ASCII characters".into(),
            }
            .into_response()
        }
    };
    idempotent_with_key(state, user, key, route, body, run).await
}

/// [`idempotent`] with the key given (for callers whose key is not the header, such as the
/// payment provider's event id): at most once per (`user`, `key`, request).
pub async fn idempotent_with_key<F, Fut, R>(
    state: &AppState,
    user: Uuid,
    key: Option<String>,
    route: &str,
    body: &Value,
    run: F,
) -> Response
where
    F: FnOnce(CommandIds) -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, R), ApiError>>,
    R: serde::Serialize,
{
    // The answer is kept as JSON text, byte for byte: a body with exact number literals
    // (the predecessor's adapters) must not pass through `serde_json::Value` and its `f64`s.
    let run = async |ids| {
        let (status, body) = run(ids).await?;
        let body = serde_json::to_string(&body).map_err(|e| ApiError::Internal(e.into()))?;
        Ok::<_, ApiError>((status, body))
    };
    let Some(key) = key else {
        return answer(run(CommandIds::fresh()).await);
    };
    let hash = request_hash("POST", route, body);
    let keys = &state.idempotency;
    match keys.begin(user, &key, &hash).await {
        // MongoDB failing is 503 `unavailable` (ApiError's mapping); the key is left free.
        Err(error) => ApiError::from(error).into_response(),
        Ok(Begin::Mismatch) => ApiError::IdempotencyConflict.into_response(),
        Ok(Begin::InProgress) => {
            ApiError::Conflict("a request with this Idempotency-Key is still in progress".into())
                .into_response()
        }
        Ok(Begin::Replay { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = json_text(status, body);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
        Ok(Begin::Run(attempt)) => {
            let mut pending = Pending {
                keys,
                user,
                key: &key,
                attempt,
                settled: false,
            };
            let result = run(CommandIds::from_key(user, &key, &hash)).await;
            let stored = match &result {
                Ok((status, body)) => Some((status.as_u16(), body.clone())),
                Err(error) if error.status().is_client_error() => {
                    // Keep the refusal too: the same request gets the same answer.
                    Some(answer_ref(error))
                }
                // A server error (503 unavailable included): the retry runs it again.
                Err(_) => None,
            };
            let saved = match &stored {
                Some((status, body)) => keys.finish(user, &key, attempt, *status, body).await,
                None => keys.abandon(user, &key, attempt).await,
            };
            if let Err(error) = saved {
                tracing::warn!(%error, "could not settle the idempotency record; retrying in the background");
                keys.settle_in_background(user, &key, attempt, stored);
            }
            pending.settled = true;
            answer(result)
        }
    }
}

/// A keyed run in progress. Dropped before it is settled (the request timed out, or the client
/// went away and the handler was cancelled), it abandons its record in the background, so the
/// key is not held until the record goes stale.
struct Pending<'a> {
    keys: &'a IdempotencyKeys,
    user: Uuid,
    key: &'a str,
    attempt: Uuid,
    settled: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.keys
                .settle_in_background(self.user, self.key, self.attempt, None);
        }
    }
}

fn answer(result: Result<(StatusCode, String), ApiError>) -> Response {
    match result {
        Ok((status, body)) => json_text(status, body),
        Err(error) => error.into_response(),
    }
}

/// A JSON answer from its text (already serialized, or stored).
fn json_text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The status and JSON body an error answers with (for storing).
fn answer_ref(error: &ApiError) -> (u16, String) {
    let body = super::error::error_body(error.code(), &error.to_string());
    let body = serde_json::to_string(&body).expect("an error body serializes");
    (error.status().as_u16(), body)
}
