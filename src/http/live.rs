//! Live data: `GET /api/prices`, WebSocket `/ws/prices`, and WebSocket `/ws/account`, which
//! pushes the signed-in user's balance and transaction updates as the projectors apply events.
//!
//! `/ws/prices` is public. Every connection gets the snapshot of `GET /api/prices` as a JSON
//! text frame on connect and at every change (a frame without `type`: the native frame). It
//! also speaks the predecessor web client's protocol, to connections that ask for it: a
//! connection that sends the text frame `{"type":"ping"}` (that client does on open and every
//! 30 s) is answered `{"type":"pong","timestamp"}`, then once `{"type":"status","status":
//! "connected","source","degraded","timestamp"}`, and from then on, after every native
//! snapshot and in answer to every ping, `{"type":"price_update","prices":{"btc":"64250.12",
//! …},"source","timestamp"}` ([`PriceUpdate`]: every quote of the snapshot keyed by its
//! lower-case asset code, exact decimal *strings*; `timestamp` the snapshot's RFC 3339
//! instant). A connection that never pings never receives a frame with a `type`. Any client
//! frame is answered with the current native snapshot (as before the typed frames existed);
//! beyond that, frames other than a ping (unparseable, unknown types, binary, larger than
//! [`MAX_CLIENT_FRAME`]) are ignored. A client message over [`MAX_CLIENT_MESSAGE`] closes the
//! socket (1009, message too big): no client of this socket sends one.
//!
//! `/ws/account` is authenticated like any request (the `access_token` cookie — from an allowed
//! `Origin` only, see [`allowed_origin`] — or `Authorization: Bearer`); it filters every applied event down to the ones whose ledger
//! entries or history rows belong to the caller, so no other user's data is ever sent.
//! A socket closes (code 1008) when its access token expires or its session ends on any
//! instance (logout, password change, refresh-token reuse, 2FA enabled; the socket reads its
//! session record every [`SESSION_CHECK`], one primary-key read per open socket per second).
//! Messages are JSON text frames:
//! `{"type":"balance","balances":[…],"position":N}` and
//! `{"type":"transaction","transaction":{…},"position":N}`.

use std::collections::{BTreeMap, HashSet};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use cryptovault_events::ledger::{postings, Account};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::history::{history_change, HistoryChange};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::AuthUser;
use super::views::ErrorBody;
use super::AppState;
use crate::prices::PriceSnapshot;
use crate::store::sessions::SessionState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(prices))
        .routes(routes!(ws_prices))
        .routes(routes!(ws_account))
}

/// The latest quote of every asset.
#[utoipa::path(
    get,
    path = "/api/prices",
    tag = "live",
    responses((status = 200, description = "Quotes in USD.", body = PriceSnapshot))
)]
async fn prices(State(state): State<AppState>) -> Json<PriceSnapshot> {
    Json((*state.prices.latest()).clone())
}

/// WebSocket: the price snapshot (as `GET /api/prices`) as a JSON text frame on connect and at
/// every change; the predecessor client's typed frames to a connection that sends
/// `{"type":"ping"}` (module docs).
#[utoipa::path(
    get,
    path = "/ws/prices",
    tag = "live",
    responses(
        (status = 101, description = "Switching Protocols: a WebSocket of JSON text frames \
            shaped as `GET /api/prices`, on connect and at every change. A client that sends the \
            text frame `{\"type\":\"ping\"}` (the predecessor's web client) is answered \
            `{\"type\":\"pong\",\"timestamp\"}`, then once `{\"type\":\"status\",\"status\":\"connected\",\
            \"source\",\"degraded\",\"timestamp\"}`, and from then on, at every change and in answer \
            to every ping, also `{\"type\":\"price_update\",\"prices\":{\"btc\":\"64250.12\",…},\
            \"source\",\"timestamp\"}` (lower-case asset codes, exact decimal strings, RFC 3339). \
            A client that never pings receives no frame with a `type`; other client frames are \
            ignored."),
        (status = 400, description = "Not a WebSocket handshake (axum's rejection).", content_type = "text/plain", body = String),
        (status = 426, description = "The connection cannot be upgraded.", content_type = "text/plain", body = String),
    )
)]
async fn ws_prices(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| push_prices(state, socket))
}

/// Client frames longer than this (bytes) are ignored without being parsed: a ping is 15.
pub const MAX_CLIENT_FRAME: usize = 1024;

/// The largest client message `/ws/prices` receives (bytes); a larger one closes the socket.
pub const MAX_CLIENT_MESSAGE: usize = 64 << 10;

/// The one thing read from a client's text frame: its `type`, if any. Other keys are ignored.
#[derive(Debug, Deserialize)]
struct ClientFrame {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// Whether `text` is the predecessor client's `{"type":"ping"}` (other keys allowed; an
/// object, not serde's other forms of a struct).
fn is_ping(text: &str) -> bool {
    text.len() <= MAX_CLIENT_FRAME
        && text.trim_start().starts_with('{')
        && serde_json::from_str::<ClientFrame>(text)
            .is_ok_and(|frame| frame.kind.as_deref() == Some("ping"))
}

/// The predecessor client's frames (module docs), written as `{"type":"…",…}`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LegacyFrame {
    /// The answer to `{"type":"ping"}`.
    Pong {
        timestamp: DateTime<Utc>,
    },
    /// Once, after the first pong.
    Status {
        /// `connected`.
        status: &'static str,
        source: &'static str,
        degraded: bool,
        timestamp: DateTime<Utc>,
    },
    PriceUpdate(PriceUpdate),
}

/// `{"type":"price_update",…}`: one snapshot's quotes.
#[derive(Debug, Serialize)]
struct PriceUpdate {
    /// Lower-case asset code → the exact quote in USD as a decimal string.
    prices: BTreeMap<String, String>,
    /// The snapshot's `source`.
    source: &'static str,
    /// The snapshot's `as_of`.
    timestamp: DateTime<Utc>,
}

impl From<&PriceSnapshot> for PriceUpdate {
    fn from(snapshot: &PriceSnapshot) -> Self {
        Self {
            prices: snapshot
                .prices
                .iter()
                .map(|q| (q.asset.to_ascii_lowercase(), q.usd.to_string()))
                .collect(),
            source: snapshot.source,
            timestamp: snapshot.as_of,
        }
    }
}

async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn send_legacy(socket: &mut WebSocket, frame: &LegacyFrame) -> bool {
    match serde_json::to_string(frame) {
        Ok(text) => send_text(socket, text).await,
        Err(_) => false,
    }
}

async fn push_prices(state: AppState, mut socket: WebSocket) {
    let mut prices = state.prices.watch();
    // Set by the first `{"type":"ping"}`: from then on the typed frames too.
    let mut legacy = false;
    let mut snapshot = prices.borrow_and_update().clone();
    // What the next turn sends: the native frame (on connect, at every change and, as ever,
    // after any client frame) and the typed price update (at every change once `legacy`, and
    // after every ping).
    let (mut native_due, mut update_due) = (true, false);
    loop {
        if native_due && !send_text(&mut socket, json!(*snapshot).to_string()).await {
            return;
        }
        if update_due
            && !send_legacy(&mut socket, &LegacyFrame::PriceUpdate((&*snapshot).into())).await
        {
            return;
        }
        tokio::select! {
            changed = prices.changed() => {
                if changed.is_err() {
                    return;
                }
                (native_due, update_due) = (true, legacy);
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) if is_ping(text.as_str()) => {
                    if !send_legacy(&mut socket, &LegacyFrame::Pong { timestamp: Utc::now() }).await {
                        return;
                    }
                    if !legacy {
                        legacy = true;
                        let status = LegacyFrame::Status {
                            status: "connected",
                            source: snapshot.source,
                            degraded: snapshot.degraded,
                            timestamp: Utc::now(),
                        };
                        if !send_legacy(&mut socket, &status).await {
                            return;
                        }
                    }
                    (native_due, update_due) = (true, true);
                }
                // Anything else is not read; answered with the snapshot as before.
                Some(Ok(_)) => (native_due, update_due) = (true, false),
            },
        }
        let latest = prices.borrow_and_update().clone();
        if !std::sync::Arc::ptr_eq(&latest, &snapshot) {
            // A change that came while a client frame was handled: the update is due too.
            (native_due, update_due) = (true, update_due || legacy);
            snapshot = latest;
        }
    }
}

/// WebSocket: the caller's balance and transaction updates (see the module docs for the
/// messages). A cookie-authenticated socket is accepted only from this site, `CORS_ORIGINS` or
/// `APP_URL`.
#[utoipa::path(
    get,
    path = "/ws/account",
    tag = "live",
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching Protocols: JSON text frames `{\"type\":\"balance\",…}`, `{\"type\":\"transaction\",…}`, `{\"type\":\"resync\",…}`."),
        (status = 400, description = "Not a WebSocket handshake (axum's rejection).", content_type = "text/plain", body = String),
        (status = 403, description = "`forbidden`: a cookie-authenticated socket from another origin.", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded.", content_type = "text/plain", body = String),
    )
)]
async fn ws_account(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if user.via_cookie && !allowed_origin(&state, &headers) {
        return Err(ApiError::Forbidden(
            "a cookie-authenticated WebSocket must be opened from this site or an origin in CORS_ORIGINS"
                .into(),
        ));
    }
    let session = Session {
        user: user.user_id(),
        sid: user.claims.sid,
        expires_at: user.claims.exp,
    };
    Ok(upgrade.on_upgrade(move |socket| push_account(state, session, socket)))
}

/// The credentials a socket was opened with: it lives no longer than they do.
#[derive(Debug, Clone, Copy)]
struct Session {
    user: Uuid,
    /// The session (`sid`) of the access token.
    sid: Uuid,
    /// The access token's `exp` (seconds since the Unix epoch).
    expires_at: i64,
}

/// How often an open `/ws/account` checks that its session is still live: a session ended on
/// any instance closes its sockets within this (plus one read).
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Cross-site WebSocket hijacking guard. WebSocket handshakes are not subject to CORS and a
/// browser attaches cookies to them, so a cookie-authenticated socket is accepted only from the
/// same origin (the `Origin` names the `Host` the request came to), an origin in
/// `CORS_ORIGINS`, or `APP_URL`. Without an `Origin` header the client is not a browser (a
/// browser always sends one) and cannot be a confused deputy.
fn allowed_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return !headers.contains_key(header::ORIGIN);
    };
    let origin = origin.trim_end_matches('/');
    let same_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| {
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        });
    let config = &state.config;
    same_host
        || config
            .cors_origins
            .iter()
            .chain(config.app_url.iter())
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Whether any of `events` moves `user`'s money.
fn touches_balance(events: &[EventEnvelope], user: Uuid) -> bool {
    events.iter().any(|e| {
        postings(e)
            .iter()
            .any(|p| matches!(p.account, Account::Available(u) | Account::Held(u) if u == user))
    })
}

/// The history rows of `events` that belong to `user` (ids, for a lookup of their state).
fn own_transactions(events: &[EventEnvelope], user: Uuid) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter_map(|e| match history_change(e)? {
            HistoryChange::Insert(row) if row.user_id == user => Some(row.id),
            HistoryChange::Status { user_id, id, .. } if user_id == user => Some(id),
            _ => None,
        })
        .filter(|id| seen.insert(*id))
        .collect()
}

async fn send_json(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

async fn balance_message(state: &AppState, user: Uuid) -> Result<Value, ApiError> {
    let balance = super::read_models::current_balance(state, user).await?;
    let mut balance = serde_json::to_value(balance).map_err(|e| ApiError::Internal(e.into()))?;
    balance["type"] = json!("balance");
    Ok(balance)
}

async fn push_account(state: AppState, session: Session, mut socket: WebSocket) {
    let user = session.user;
    let expiry = std::time::Duration::from_secs(
        u64::try_from(session.expires_at - chrono::Utc::now().timestamp()).unwrap_or(0),
    );
    let expired = tokio::time::sleep(expiry);
    tokio::pin!(expired);
    let mut session_check = tokio::time::interval(SESSION_CHECK);
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut balances = state.balances.applied();
    let mut history = state.transactions.applied();
    let Ok(first) = balance_message(&state, user).await else {
        return;
    };
    if !send_json(&mut socket, first).await {
        return;
    }
    loop {
        tokio::select! {
            applied = balances.recv() => match applied {
                Ok(events) if !touches_balance(&events, user) => {}
                Ok(_) | Err(RecvError::Lagged(_)) => match balance_message(&state, user).await {
                    Ok(message) => if !send_json(&mut socket, message).await { return },
                    Err(_) => return,
                },
                Err(RecvError::Closed) => return,
            },
            applied = history.recv() => match applied {
                Ok(events) => {
                    for id in own_transactions(&events, user) {
                        let Ok(row) = super::read_models::transaction(&state, user, id).await else { return };
                        let Some(row) = row else { continue };
                        let message = json!({ "type": "transaction", "transaction": row, "position": state.transactions.position() });
                        if !send_json(&mut socket, message).await { return }
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let message = json!({ "type": "resync", "message": "updates were missed; reload the transaction list" });
                    if !send_json(&mut socket, message).await { return }
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            () = &mut expired => {
                close(&mut socket, "access token expired; reconnect with a fresh one".into()).await;
                return;
            }
            _ = session_check.tick() => {
                match state.identity.sessions.session(session.sid, chrono::Utc::now()).await {
                    Ok(SessionState::Live { user_id, .. }) if user_id == user => {}
                    Ok(SessionState::Ended { reason }) => {
                        close(&mut socket, format!("session ended: {reason}")).await;
                        return;
                    }
                    Ok(_) => {
                        close(&mut socket, "session ended: unknown or expired".into()).await;
                        return;
                    }
                    // Fail closed: a session that cannot be checked is not trusted.
                    Err(_) => {
                        close(&mut socket, "session could not be checked; reconnect".into()).await;
                        return;
                    }
                }
            }
        }
    }
}

/// Closes with code 1008 (policy violation) and a reason the client can show.
async fn close(socket: &mut WebSocket, reason: String) {
    let frame = axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::POLICY,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::Quote;

    #[test]
    fn only_a_ping_is_a_ping_and_nothing_a_client_sends_is_an_error() {
        assert!(is_ping(r#"{"type":"ping"}"#));
        assert!(is_ping(r#" {"type": "ping", "at": 1} "#));
        for other in [
            r#"{"type":"pong"}"#,
            r#"{"type":"PING"}"#,
            r#"{"type":1}"#,
            r#"{"kind":"ping"}"#,
            r#"["ping"]"#,
            "ping",
            "{",
            "",
            "\u{0}\u{ffff}",
        ] {
            assert!(!is_ping(other), "{other:?}");
        }
        let padded = format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_CLIENT_FRAME)
        );
        assert!(!is_ping(&padded), "an oversized frame is not read");
    }

    #[test]
    fn the_typed_frames_have_the_predecessors_shape() {
        let as_of = DateTime::from_timestamp(1_700_000_000, 120_000_000).unwrap();
        let snapshot = PriceSnapshot {
            source: "simulated",
            degraded: false,
            as_of,
            prices: vec![
                Quote {
                    asset: "BTC".into(),
                    usd: "64250.12".parse().unwrap(),
                },
                Quote {
                    asset: "USD".into(),
                    usd: rust_decimal::Decimal::ONE,
                },
            ],
        };
        let update = serde_json::to_string(&LegacyFrame::PriceUpdate((&snapshot).into())).unwrap();
        assert_eq!(
            update,
            r#"{"type":"price_update","prices":{"btc":"64250.12","usd":"1"},"source":"simulated","timestamp":"2023-11-14T22:13:20.120Z"}"#
        );
        let pong = serde_json::to_string(&LegacyFrame::Pong { timestamp: as_of }).unwrap();
        assert_eq!(
            pong,
            r#"{"type":"pong","timestamp":"2023-11-14T22:13:20.120Z"}"#
        );
        let status = serde_json::to_string(&LegacyFrame::Status {
            status: "connected",
            source: "coincap",
            degraded: false,
            timestamp: as_of,
        })
        .unwrap();
        assert_eq!(
            status,
            r#"{"type":"status","status":"connected","source":"coincap","degraded":false,"timestamp":"2023-11-14T22:13:20.120Z"}"#
        );
    }
}
