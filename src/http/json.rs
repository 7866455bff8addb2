//! `ApiJson<T>`: axum's JSON extractor with rejections in the shared error shape — unparseable
//! bodies are 400 `malformed_json`, well-formed JSON of the wrong shape is 422
//! `validation_error` naming the field, oversized bodies 413 `payload_too_large`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

/// The raw body (for handlers whose body is optional), with the size limit's rejection in the
/// shared error shape: 413 `payload_too_large`; any other read failure 400 `malformed_json`.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::body::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(rejection) => Err(ApiError::MalformedJson(format!(
                "request body could not be read: {}",
                rejection.body_text()
            ))),
        }
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(map_rejection(rejection)),
        }
    }
}

fn map_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field: "missing field `email`", or
            // "email: invalid type: integer `3`, expected a string".
            let detail = e.body_text();
            let detail = detail
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&detail)
                .to_owned();
            let field = field_of(&detail);
            ApiError::Validation {
                field,
                message: detail,
            }
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::MalformedJson(
            "expected a JSON body with Content-Type: application/json".into(),
        ),
        other => ApiError::MalformedJson(format!(
            "request body is not valid JSON: {}",
            other.body_text()
        )),
    }
}

/// `body` (a JSON value already read) as the typed request `T`, with the rejections of
/// [`ApiJson`]: 422 `validation_error` naming the field (an unknown one too, where `T` denies
/// unknown fields).
pub fn typed_body<T: DeserializeOwned>(body: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let detail = e.to_string();
        ApiError::Validation {
            field: field_of(&detail),
            message: detail,
        }
    })
}

/// The field a serde error message is about: the path before `: `, or the name in
/// "missing field `x`" / "unknown field `x`".
pub fn field_of(detail: &str) -> String {
    for marker in ["missing field `", "unknown field `"] {
        if let Some(rest) = detail.split(marker).nth(1) {
            return rest.split('`').next().unwrap_or("body").to_owned();
        }
    }
    match detail.split_once(": ") {
        Some((path, _)) if !path.contains(' ') => path.to_owned(),
        _ => "body".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn the_field_is_found_in_serde_messages() {
        assert_eq!(
            field_of("missing field `email` at line 1 column 2"),
            "email"
        );
        assert_eq!(
            field_of("email: invalid type: integer `3`, expected a string at line 1"),
            "email"
        );
        assert_eq!(
            field_of("invalid type: sequence, expected struct Body"),
            "body"
        );
    }
}
