//! Serving HTTP/1.1 connections: the accept loop that `axum::serve` would be, plus what it does
//! not offer (issue 14, finding 7):
//! - a header-read timeout (`HTTP_HEADER_TIMEOUT_SECS`): hyper's, counted from the moment the
//!   server waits for a request head — the accept for the first request, the end of the
//!   previous answer on a keep-alive connection — so a half-sent request and an idle keep-alive
//!   connection alike are closed once it passes;
//! - an inactivity timeout (`HTTP_IDLE_TIMEOUT_SECS`): a connection on which no byte moved in
//!   either direction for that long is closed (a trickled body, an answer the client does not
//!   read). It is longer than `REQUEST_TIMEOUT_SECS` (config checks), so a handler that thinks
//!   without I/O is never cut off by it. Upgraded WebSockets are not subject to it (the
//!   sockets have their own liveness);
//! - bounds on open connections: `MAX_CONNECTIONS` in all and `MAX_CONNECTIONS_PER_CLIENT` per
//!   peer address (IPv6 per /64). A connection over a bound is closed at once, unread, and
//!   counted in `http_connections_refused_total{reason}`. Connections from `TRUSTED_PROXIES`
//!   count only against the global bound (a proxy carries many clients; the rate limits see
//!   those by their forwarded address). A WebSocket holds its place until it closes.
//!
//! HTTP/1.1 only, as `axum::serve` without axum's `http2` feature served before. hyper's
//! `http1::Builder` rather than hyper-util's `auto::Builder`: the latter's protocol detection
//! reads the first bytes without any timer, so a connection that sends nothing would be held.
//!
//! Handlers see the peer as `ConnectInfo<SocketAddr>` (the client IP comes from it); graceful
//! shutdown stops accepting and lets every open connection finish its request, as
//! `axum::serve` did (hyper-util's `graceful` does not take hyper's upgradeable HTTP/1
//! connection, so the same two watch channels axum uses).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use crate::config::{EdgeSettings, TrustedProxies};

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &EdgeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limits = Arc::new(ConnectionLimits::new(settings));
    // Shutdown: `signal` tells every connection task to drain; each holds a `close` receiver,
    // and the server returns once all are dropped (as `axum::serve` does).
    let (signal_tx, signal_rx) = watch::channel(());
    let (close_tx, close_rx) = watch::channel(());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true);
    let idle_timeout = settings.idle_timeout;
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    accept_error(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(permit) = limits.admit(peer.ip()) else {
            // Closed at once, unread: a refused connection costs no task and no buffer.
            drop(stream);
            continue;
        };
        let activity = Activity::default();
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
            _permit: permit,
        });
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.map(Body::new)
                });
        let connection = builder
            .serve_connection(io, TowerToHyperService::new(service))
            .with_upgrades();
        let (mut signal, close) = (signal_rx.clone(), close_rx.clone());
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let mut idle = pin!(activity.idle_for(idle_timeout));
            let mut draining = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            if error.is_timeout() {
                                metrics::counter!("http_connections_closed_total", "reason" => "header_timeout").increment(1);
                            }
                            tracing::debug!(%error, %peer, "connection ended with an error");
                        }
                        break;
                    }
                    () = &mut idle => {
                        metrics::counter!("http_connections_closed_total", "reason" => "idle").increment(1);
                        tracing::debug!(%peer, "connection closed: no traffic within HTTP_IDLE_TIMEOUT_SECS");
                        break;
                    }
                    _ = signal.changed(), if !draining => {
                        // Finish the request in flight, then close (keep-alive ends).
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(close);
        });
    }
    drop(listener);
    drop(close_rx);
    let _ = signal_tx.send(());
    close_tx.closed().await;
}

/// As `axum::serve`: errors of one connection are ignored; others (too many open files) are
/// logged and accepting pauses for a second rather than spinning.
async fn accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// What one connection counts against: the global bound and, unless it comes from a trusted
/// proxy, its client's.
struct ConnectionLimits {
    global: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max_per_client: usize,
    trusted: TrustedProxies,
}

impl ConnectionLimits {
    fn new(settings: &EdgeSettings) -> Self {
        Self {
            global: Arc::new(Semaphore::new(settings.max_connections)),
            per_client: Mutex::new(HashMap::new()),
            max_per_client: settings.max_connections_per_client,
            trusted: settings.trusted_proxies.clone(),
        }
    }

    /// A place for a connection from `ip`, or `None` (counted) when a bound is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let refuse = |reason: &'static str| {
            metrics::counter!("http_connections_refused_total", "reason" => reason).increment(1);
            tracing::debug!(%ip, reason, "connection refused");
            None
        };
        let Ok(global) = self.global.clone().try_acquire_owned() else {
            return refuse("global");
        };
        let ip = ip.to_canonical();
        let key = (!self.trusted.contains(ip)).then(|| client_key(ip));
        if let Some(key) = key {
            let mut open = self
                .per_client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = open.entry(key).or_insert(0);
            if *count >= self.max_per_client {
                return refuse("per_client");
            }
            *count += 1;
        }
        metrics::gauge!("http_connections_open").increment(1.0);
        Some(Permit {
            limits: self.clone(),
            key,
            _global: global,
        })
    }
}

/// The per-client key: the address; for IPv6 its /64 (one subscriber's usual allocation).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
    }
}

/// A connection's place; given back when the connection (or its WebSocket) is dropped.
struct Permit {
    limits: Arc<ConnectionLimits>,
    key: Option<IpAddr>,
    _global: OwnedSemaphorePermit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        metrics::gauge!("http_connections_open").decrement(1.0);
        if let Some(key) = self.key {
            let mut open = self
                .limits
                .per_client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = open.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since [`epoch`].
#[derive(Clone, Default)]
struct Activity(Arc<AtomicU64>);

fn epoch() -> tokio::time::Instant {
    static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

impl Activity {
    fn touch(&self) {
        let now = epoch().elapsed().as_millis() as u64;
        self.0.store(now, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        self.touch();
        loop {
            let last = epoch() + Duration::from_millis(self.0.load(Ordering::Relaxed));
            let deadline = last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The TCP stream, recording activity and holding the connection's place.
struct Tracked {
    inner: TcpStream,
    activity: Activity,
    _permit: Permit,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(global: usize, per_client: usize, trusted: &str) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            global: Arc::new(Semaphore::new(global)),
            per_client: Mutex::new(HashMap::new()),
            max_per_client: per_client,
            trusted: TrustedProxies::parse(trusted).unwrap(),
        })
    }

    #[test]
    fn each_client_gets_its_bound_and_places_come_back_when_connections_drop() {
        let limits = limits(10, 2, "");
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.admit(a).expect("first");
        let _second = limits.admit(a).expect("second");
        assert!(limits.admit(a).is_none(), "third from one client");
        assert!(limits.admit(b).is_some(), "another client");
        drop(first);
        let _third = limits.admit(a).expect("a place came back");
        // The IPv4-mapped form is the same client.
        assert!(limits.admit("::ffff:192.0.2.1".parse().unwrap()).is_none());
    }

    #[test]
    fn the_global_bound_holds_for_everyone_and_trusted_proxies_only_count_there() {
        let limits = limits(3, 1, "10.0.0.0/8");
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| limits.admit(proxy).expect("proxy"))
            .collect();
        assert!(
            limits.admit("192.0.2.9".parse().unwrap()).is_none(),
            "global"
        );
        drop(held);
        assert!(limits.per_client.lock().unwrap().is_empty());
        assert!(limits.admit("192.0.2.9".parse().unwrap()).is_some());
    }

    #[tokio::test]
    async fn the_idle_timer_fires_only_after_a_quiet_spell_and_traffic_postpones_it() {
        let activity = Activity::default();
        let idle = Duration::from_millis(300);
        let started = tokio::time::Instant::now();
        let timer = activity.idle_for(idle);
        let toucher = async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                activity.touch();
            }
        };
        let ((), ()) = tokio::join!(timer, toucher);
        // The last byte moved at ~450 ms; quiet for 300 ms after that.
        assert!(
            started.elapsed() >= Duration::from_millis(740),
            "{:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_ipv4_by_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }
}
