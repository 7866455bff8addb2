//! Access tokens: short-lived JWTs (HS256/384/512 from `JWT_ALGORITHM`, key `JWT_SECRET`) with
//! issuer, audience, expiry, a unique id (`jti`) and the session (`sid`, the refresh-token
//! family) they belong to. A valid signature is not enough: `http::extract::AuthUser` also
//! needs the session to be live (`store::sessions`), and takes the caller's roles from the
//! session record, so `roles` here only tells a client what it had when the token was issued.

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::domain::Role;

pub const AUDIENCE: &str = "cryptovault-api";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The roles at issue time. Informational for clients: after `AuthUser` the session's
    /// current roles replace them.
    pub roles: Vec<Role>,
    pub iss: String,
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    pub iat: i64,
    /// Unique token id.
    pub jti: Uuid,
    /// Session (refresh-token family) id: the key of the session record that decides whether
    /// the token is accepted.
    pub sid: Uuid,
}

#[derive(Clone)]
pub struct AccessTokens {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    pub ttl: Duration,
}

impl AccessTokens {
    /// `algorithm` was validated by the configuration (HS256, HS384 or HS512).
    pub fn new(
        secret: &str,
        algorithm: &str,
        issuer: String,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            algorithm: Algorithm::from_str(algorithm)?,
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            issuer,
            ttl,
        })
    }

    pub fn issue(
        &self,
        user_id: Uuid,
        roles: Vec<Role>,
        session_id: Uuid,
        now: i64,
    ) -> anyhow::Result<(String, Claims)> {
        let claims = Claims {
            sub: user_id,
            roles,
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            exp: now + self.ttl.as_secs() as i64,
            iat: now,
            jti: Uuid::now_v7(),
            sid: session_id,
        };
        let token = encode(&Header::new(self.algorithm), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm (only the configured one; `none` never), issuer, audience
    /// and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}
