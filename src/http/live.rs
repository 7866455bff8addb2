//! Live data: `GET /api/prices`, WebSocket `/ws/prices`, and WebSocket `/ws/account`, which
//! pushes the signed-in user's balance and transaction updates as the projectors apply events.
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

use std::collections::HashSet;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Json;
use cryptovault_events::ledger::{postings, Account};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::history::{history_change, HistoryChange};
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
/// every change.
#[utoipa::path(
    get,
    path = "/ws/prices",
    tag = "live",
    responses(
        (status = 101, description = "Switching Protocols: a WebSocket of JSON text frames shaped as `GET /api/prices`."),
        (status = 400, description = "Not a WebSocket handshake (axum's rejection).", content_type = "text/plain", body = String),
        (status = 426, description = "The connection cannot be upgraded.", content_type = "text/plain", body = String),
    )
)]
async fn ws_prices(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| push_prices(state, socket))
}

async fn push_prices(state: AppState, mut socket: WebSocket) {
    let mut prices = state.prices.watch();
    loop {
        let snapshot = prices.borrow_and_update().clone();
        let text = json!(*snapshot).to_string();
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
        tokio::select! {
            changed = prices.changed() => if changed.is_err() { return },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
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
