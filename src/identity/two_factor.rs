//! Two-factor authentication: enrolment (setup, then verify with a first code) and disable.
//! Every code is accepted once (RFC 6238 §5.2): its time step is recorded atomically with
//! `Sessions::use_totp_step` before it counts — here and in `Identity::login`.
//! Setup and disable are sensitive changes: they need a step-up (`Identity::step_up`: the
//! current password, and for disable the current code), so an access token alone can neither
//! enrol an attacker's secret nor turn 2FA off.

use uuid::Uuid;

use super::service::{unix_now, Identity, IdentityError, RequestMeta};
use super::totp;
use crate::store::sessions::EndReason;

impl Identity {
    /// Starts 2FA enrolment after a step-up with `current_password`: a new secret, pending
    /// until confirmed by [`Self::totp_verify`].
    pub async fn totp_setup(
        &self,
        user_id: Uuid,
        current_password: &str,
        device: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<(String, String), IdentityError> {
        let user = self.user(user_id).await?;
        if user.totp_enabled {
            return Err(IdentityError::InvalidState(
                "two-factor authentication is already enabled",
            ));
        }
        self.step_up(&user, current_password, None, device, meta)
            .await?;
        let secret = totp::new_secret();
        let url = totp::otpauth_url(&secret, &user.email)
            .ok_or_else(|| anyhow::anyhow!("could not build the otpauth URL"))?;
        self.sessions.put_pending_totp(user_id, &secret).await?;
        Ok((secret, url))
    }

    /// Accepts `code` once: valid now, and its time step not used before (RFC 6238 §5.2).
    async fn use_totp_code(
        &self,
        user_id: Uuid,
        secret: &str,
        code: &str,
    ) -> Result<(), IdentityError> {
        match totp::matching_step(secret, code, unix_now()) {
            Some(step) if self.sessions.use_totp_step(user_id, step).await? => Ok(()),
            _ => Err(IdentityError::InvalidTotp),
        }
    }

    /// Confirms enrolment with a valid code; from then on login needs a code, and every other
    /// session of the user (opened without the second factor) ends: its access tokens, refresh
    /// tokens and sockets. `current_session` (the caller's) goes on.
    pub async fn totp_verify(
        &self,
        user_id: Uuid,
        current_session: Uuid,
        code: &str,
        meta: &RequestMeta,
    ) -> Result<(), IdentityError> {
        let Some((secret, _)) = self.sessions.totp_secret(user_id).await? else {
            return Err(IdentityError::InvalidState("call 2fa/setup first"));
        };
        self.use_totp_code(user_id, &secret, code).await?;
        let metadata = meta.metadata(Some(user_id.to_string()));
        self.change_user(user_id, &metadata, |user| Ok(user.enable_two_factor()?))
            .await?;
        self.sessions.confirm_totp(user_id).await?;
        self.end_other_sessions(user_id, current_session, EndReason::TwoFactorEnabled)
            .await?;
        Ok(())
    }

    /// Turns 2FA off after a step-up: the current password and a valid unused current code.
    pub async fn totp_disable(
        &self,
        user_id: Uuid,
        current_password: &str,
        code: &str,
        device: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<(), IdentityError> {
        let user = self.user(user_id).await?;
        if !user.totp_enabled {
            return Err(IdentityError::InvalidState(
                "two-factor authentication is not enabled",
            ));
        }
        self.step_up(&user, current_password, Some(code), device, meta)
            .await?;
        let metadata = meta.metadata(Some(user_id.to_string()));
        self.change_user(user_id, &metadata, |user| Ok(user.disable_two_factor()?))
            .await?;
        self.sessions.delete_totp(user_id).await?;
        Ok(())
    }
}
