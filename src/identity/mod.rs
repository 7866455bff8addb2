//! Identity and access: event-sourced users, passwords, sessions, CSRF, TOTP, roles.
//!
//! `domain` holds the pure rules; `service` runs the commands against the event store and the
//! session collections (`two_factor` the 2FA ones); `password`, `tokens`, `csrf`, `totp` wrap
//! the crates that do the cryptography. The HTTP side is `crate::http::auth`.

pub mod csrf;
pub mod domain;
#[cfg(test)]
mod given;
pub mod password;
pub mod service;
pub mod throttle;
pub mod tokens;
pub mod totp;
pub mod two_factor;

pub use domain::Role;
pub use service::{Identity, IdentityError, IdentitySettings, RequestMeta, Session};
