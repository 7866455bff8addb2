//! Exact JSON numbers. The predecessor's client sends and reads amounts as JSON numbers; this
//! service never lets one pass through a binary float.
//!
//! - In: [`LiteralJson`] deserializes a body straight from its bytes, so an amount field typed
//!   [`Literal`] keeps the number's literal text (`12.50`), which
//!   [`crate::ledger::amount::Assets::amount_literal`] reads digit by digit.
//! - Out: [`JsonNumber`] writes a decimal as a JSON number literal with exactly its digits
//!   (`12.50`, `0.000000000000000001`). Such a body must be serialized straight to text
//!   (`axum::Json`, the idempotency store keeps text): `serde_json::Value` would turn it into an
//!   `f64`.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::http::error::ApiError;
use crate::http::json::{field_of, RawBody};

/// The literal JSON text of one value of a request body, exactly as sent.
pub type Literal = Box<RawValue>;

/// A decimal serialized as a JSON number literal with exactly its digits and scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonNumber(pub Decimal);

impl Serialize for JsonNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `Decimal`'s `Display` is plain notation (`-12.50`), always a valid JSON number.
        let raw = RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl utoipa::PartialSchema for JsonNumber {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "An exact decimal written as a JSON number literal with all its digits.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for JsonNumber {}

/// A decimal already written exactly in plain notation (`12.50`, or a balance of up to 39
/// digits that no `Decimal` holds), serialized as a JSON number literal with those digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonNumberText(String);

impl JsonNumberText {
    /// `text` if it is a plain decimal (`-?digits(.digits)?`), as written by
    /// [`crate::ledger::amount::Assets::format_units`] and `format`.
    pub fn new(text: String) -> Option<Self> {
        let digits = text.strip_prefix('-').unwrap_or(&text);
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (plain(whole) && plain(fraction)).then_some(Self(text))
    }
}

impl Serialize for JsonNumberText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.clone()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl utoipa::PartialSchema for JsonNumberText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        JsonNumber::schema()
    }
}

impl utoipa::ToSchema for JsonNumberText {}

/// The OpenAPI schema of an amount in the predecessor's calls: a JSON number (what the old
/// client sends) or, as in the native API, a decimal string.
pub fn amount_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[0-9]+(\.[0-9]+)?$")),
        )
        .description(Some(
            "A JSON number read exactly from its digits (no exponent), or a decimal string.",
        ))
        .build()
        .into()
}

/// A JSON body deserialized from its bytes (so [`Literal`] fields keep their text), with the
/// rejections of [`crate::http::json::ApiJson`]: no JSON content type or unparseable JSON is
/// 400 `malformed_json`, the wrong shape 422 `validation_error` naming the field, too large 413.
pub struct LiteralJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for LiteralJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .is_some_and(|mime| {
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.len() > 5 && mime[mime.len() - 5..].eq_ignore_ascii_case("+json"))
            });
        if !json {
            return Err(ApiError::MalformedJson(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        parse(&bytes).map(Self)
    }
}

/// `bytes` as `T`, with the rejections of [`LiteralJson`].
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's derive would also take a struct from an array of its fields in order
    // (`[100, "btc"]`), past `deny_unknown_fields` and the declared object schema.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::Validation {
            field: "body".into(),
            message: "body must be a JSON object".into(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let detail = e.to_string();
        match e.inner().classify() {
            serde_json::error::Category::Data => ApiError::Validation {
                field: field_of(&detail),
                message: detail,
            },
            _ => ApiError::MalformedJson(format!("request body is not valid JSON: {detail}")),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        amount: Literal,
        currency: String,
    }

    #[test]
    fn a_number_keeps_its_literal_text_and_goes_out_with_the_same_digits() {
        let body: Body = parse(br#"{"amount": 1.000000000000000001, "currency": "eth"}"#).unwrap();
        assert_eq!(body.amount.get(), "1.000000000000000001");
        assert_eq!(body.currency, "eth");
        let decimal: Decimal = body.amount.get().parse().unwrap();
        let out = serde_json::to_string(&serde_json::json!({ "x": 1 })).unwrap();
        assert_eq!(out, r#"{"x":1}"#);
        #[derive(Serialize)]
        struct Out {
            amount: JsonNumber,
            value: JsonNumber,
        }
        let text = serde_json::to_string(&Out {
            amount: JsonNumber(decimal),
            value: JsonNumber(Decimal::new(-1250, 2)),
        })
        .unwrap();
        assert_eq!(text, r#"{"amount":1.000000000000000001,"value":-12.50}"#);
        // A balance beyond a Decimal's 28 digits keeps every digit too.
        let big = "170141183460.469231731687303715".to_owned();
        let text = serde_json::to_string(&JsonNumberText::new(big.clone()).unwrap()).unwrap();
        assert_eq!(text, big);
        for bad in ["", "-", "1.", ".5", "1e5", "+1", "1,5", "NaN"] {
            assert!(JsonNumberText::new(bad.into()).is_none(), "{bad}");
        }
    }

    #[test]
    fn rejections_name_the_field_or_say_the_json_is_malformed() {
        let shape = parse::<Body>(br#"{"amount": 1, "currency": 3}"#).unwrap_err();
        assert!(
            matches!(&shape, ApiError::Validation { field, .. } if field == "currency"),
            "{shape:?}"
        );
        let unknown = parse::<Body>(br#"{"amount": 1, "currency": "btc", "x": 1}"#).unwrap_err();
        assert!(
            matches!(&unknown, ApiError::Validation { field, .. } if field == "x"),
            "{unknown:?}"
        );
        let missing = parse::<Body>(br#"{"currency": "btc"}"#).unwrap_err();
        assert!(
            matches!(&missing, ApiError::Validation { field, .. } if field == "amount"),
            "{missing:?}"
        );
        let array = parse::<Body>(br#"[1, "btc"]"#).unwrap_err();
        assert!(
            matches!(&array, ApiError::Validation { field, .. } if field == "body"),
            "{array:?}"
        );
        for bad in [
            &b"{"[..],
            b"{\"amount\": 1,}",
            b"{\"amount\": 1, \"currency\": \"btc\"} x",
            b"",
        ] {
            let err = parse::<Body>(bad).unwrap_err();
            assert!(matches!(err, ApiError::MalformedJson(_)), "{err:?}");
        }
    }
}
