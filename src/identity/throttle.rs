//! The login throttle's rule, pure: given an address's throttle state, the source of an
//! attempt and the time, allow the attempt (and the state that counts it) or refuse it with a
//! retry-after. No I/O, no clock reads, no randomness: `now_ms` and device ids come from the
//! caller; the state is stored and swapped atomically by `store::login_throttle`.
//!
//! The rule (ARCHITECTURE.md, "The login throttle"):
//! - One state per **normalised address** (registered or not: unknown addresses are throttled
//!   alike, so answers do not reveal which addresses exist).
//! - **Every attempt counts before the password is checked** (it is reserved as a failure; a
//!   success then clears it), so parallel attempts cannot outrun the count.
//! - **Per source** (the device cookie of a device that signed in before, else the client IP):
//!   `free_failures` attempts, then each further one only after a block of `first_block ·
//!   2^(k)` (k = failures beyond the free ones), capped at `max_block`. A refused attempt
//!   changes nothing (it neither counts nor extends the block).
//! - **Per address, across unknown sources**: at most `account_failures` attempts per
//!   `account_window` from sources that never signed in to it. Known sources — a known device,
//!   or one of the last addresses that signed in — are exempt from this cap.
//! - A success clears its source and forgets its own reservation on the window; it records the
//!   device and the IP as known.
//!
//! What it guarantees: a stranger who knows only the address can make the owner wait
//! **0 s** on a known device (its own source, never touched by the stranger) or from a known IP
//! the stranger does not share; at most `max_block` per attempt from a source the stranger
//! shares; and from any other source at most `account_window` per window while the stranger
//! keeps the account-wide cap exhausted (which needs `account_failures` guesses per window
//! from many addresses). A guesser gets at most `free_failures` + one per block from each
//! source and `account_failures` per window from new sources in all.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Settings of the throttle (`LOGIN_*` variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// `LOGIN_MAX_FAILURES`: attempts per source before blocks begin (at least 1).
    pub free_failures: u32,
    /// `LOGIN_LOCKOUT_SECS`: the first block; each further failure doubles it.
    pub first_block: Duration,
    /// `LOGIN_LOCKOUT_MAX_SECS`: the longest block.
    pub max_block: Duration,
    /// `LOGIN_ACCOUNT_MAX_FAILURES`: attempts per window from unknown sources, per address.
    pub account_failures: u32,
    /// `LOGIN_ACCOUNT_WINDOW_SECS`.
    pub account_window: Duration,
}

/// Sources remembered per address; beyond it the least recently seen unblocked one goes.
pub const MAX_SOURCES: usize = 64;
/// Devices remembered as known per address.
pub const MAX_KNOWN_DEVICES: usize = 8;
/// Client IPs of the latest successful logins remembered as known per address.
pub const MAX_KNOWN_IPS: usize = 4;

/// The stored state of one address. `version` is the compare-and-swap token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleState {
    pub version: i64,
    pub sources: Vec<SourceEntry>,
    /// Start of the account-wide window (ms since the epoch) and the attempts counted in it.
    pub window_start_ms: i64,
    pub window_attempts: u32,
    /// SHA-256 (hex) of the device ids that signed in, newest first.
    pub known_devices: Vec<String>,
    /// Client IPs of the latest successful logins, newest first.
    pub known_ips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// `d:<device hash>` or `ip:<address>`.
    pub key: String,
    /// Attempts counted since the last success from this source.
    pub failures: u32,
    pub blocked_until_ms: i64,
    pub last_ms: i64,
}

/// Where an attempt comes from: the client IP and the device cookie, if the request had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// [`source_ip`] of the client IP.
    pub ip: String,
    /// [`device_hash`] of the device cookie.
    pub device: Option<String>,
}

/// The throttle's key for a client IP: an IPv4 address as it is, an IPv6 address by its /64
/// (one subscriber usually holds a whole /64, so single addresses would be free new sources).
pub fn source_ip(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(v4) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

/// The stored form of a device id (the cookie value is never stored).
pub fn device_hash(device_id: &str) -> String {
    hex::encode(Sha256::digest(device_id.as_bytes()))
}

/// A device cookie value this service could have issued: 16 to 64 URL-safe characters.
pub fn valid_device_id(raw: &str) -> bool {
    (16..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An attempt the throttle let through; what [`succeed`] needs to undo its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub source_key: String,
    /// The window it was counted in, if it counted on the account-wide cap.
    pub window_start_ms: Option<i64>,
}

/// An attempt refused; nothing changes. HTTP 423 `account_locked` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_secs: u64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn refused(until_ms: i64, now_ms: i64) -> Refused {
    let wait = until_ms.saturating_sub(now_ms).max(0) as u64;
    Refused {
        retry_after_secs: wait.div_ceil(1000).max(1),
    }
}

impl ThrottlePolicy {
    /// The block after the `failures`-th counted attempt of a source (zero within the free ones).
    pub fn block_after(&self, failures: u32) -> Duration {
        let Some(beyond) = failures.checked_sub(self.free_failures) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(beyond.min(31)).unwrap_or(u32::MAX);
        self.first_block
            .checked_mul(factor)
            .unwrap_or(self.max_block)
            .min(self.max_block)
    }
}

impl ThrottleState {
    fn source_key(&self, source: &Source) -> (String, bool) {
        if let Some(device) = &source.device {
            if self.known_devices.contains(device) {
                return (format!("d:{device}"), true);
            }
        }
        let known = self.known_ips.contains(&source.ip);
        (format!("ip:{}", source.ip), known)
    }

    fn entry(&self, key: &str) -> Option<&SourceEntry> {
        self.sources.iter().find(|e| e.key == key)
    }
}

/// Decides an attempt from `source` at `now_ms`: the new state (this attempt counted as a
/// failure) and the reservation, or a refusal (the state stays as it is).
pub fn reserve(
    state: &ThrottleState,
    source: &Source,
    policy: &ThrottlePolicy,
    now_ms: i64,
) -> Result<(ThrottleState, Reservation), Refused> {
    let (key, known) = state.source_key(source);
    if let Some(entry) = state.entry(&key) {
        if entry.blocked_until_ms > now_ms {
            return Err(refused(entry.blocked_until_ms, now_ms));
        }
    }
    let mut next = state.clone();
    next.version = state.version + 1;
    let mut window_start_ms = None;
    if !known {
        let window = millis(policy.account_window);
        if now_ms.saturating_sub(next.window_start_ms) >= window {
            next.window_start_ms = now_ms;
            next.window_attempts = 0;
        }
        if next.window_attempts >= policy.account_failures {
            return Err(refused(next.window_start_ms.saturating_add(window), now_ms));
        }
        next.window_attempts += 1;
        window_start_ms = Some(next.window_start_ms);
    }
    let position = match next.sources.iter().position(|e| e.key == key) {
        Some(position) => position,
        None => {
            if next.sources.len() >= MAX_SOURCES {
                forget_one_source(&mut next.sources, now_ms);
            }
            next.sources.push(SourceEntry {
                key: key.clone(),
                failures: 0,
                blocked_until_ms: 0,
                last_ms: now_ms,
            });
            next.sources.len() - 1
        }
    };
    let entry = &mut next.sources[position];
    entry.failures = entry.failures.saturating_add(1);
    entry.last_ms = now_ms;
    let block = policy.block_after(entry.failures);
    entry.blocked_until_ms = if block.is_zero() {
        0
    } else {
        now_ms.saturating_add(millis(block))
    };
    Ok((
        next,
        Reservation {
            source_key: key,
            window_start_ms,
        },
    ))
}

/// Drops the least recently seen source that is not blocked, else the one whose block ends
/// first.
fn forget_one_source(sources: &mut Vec<SourceEntry>, now_ms: i64) {
    let victim = sources
        .iter()
        .enumerate()
        .min_by_key(|(_, e)| (e.blocked_until_ms > now_ms, e.blocked_until_ms, e.last_ms))
        .map(|(i, _)| i);
    if let Some(i) = victim {
        sources.remove(i);
    }
}

/// After a successful login or step-up: clears the reservation's source, takes its count off
/// the account-wide window, and remembers `ip` and `device` (a [`device_hash`]) as known.
pub fn succeed(
    state: &ThrottleState,
    reservation: &Reservation,
    ip: &str,
    device: Option<&str>,
) -> ThrottleState {
    let mut next = state.clone();
    next.version = state.version + 1;
    next.sources.retain(|e| e.key != reservation.source_key);
    if reservation.window_start_ms == Some(next.window_start_ms) {
        next.window_attempts = next.window_attempts.saturating_sub(1);
    }
    remember(&mut next.known_ips, ip, MAX_KNOWN_IPS);
    if let Some(device) = device {
        remember(&mut next.known_devices, device, MAX_KNOWN_DEVICES);
    }
    next
}

fn remember(list: &mut Vec<String>, value: &str, limit: usize) {
    list.retain(|v| v != value);
    list.insert(0, value.to_owned());
    list.truncate(limit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: ThrottlePolicy = ThrottlePolicy {
        free_failures: 3,
        first_block: Duration::from_secs(60),
        max_block: Duration::from_secs(600),
        account_failures: 10,
        account_window: Duration::from_secs(3600),
    };

    fn ip(last: u8) -> Source {
        Source {
            ip: format!("10.0.0.{last}"),
            device: None,
        }
    }

    const S: i64 = 1000;

    /// Attempts from `source` at `now`, each failing; the refusals' retry-afters.
    fn fail(state: &mut ThrottleState, source: &Source, now: i64) -> Result<(), Refused> {
        let (next, _) = reserve(state, source, &POLICY, now)?;
        *state = next;
        Ok(())
    }

    #[test]
    fn free_attempts_then_doubling_blocks_up_to_the_cap() {
        let mut state = ThrottleState::default();
        for _ in 0..2 {
            fail(&mut state, &ip(1), 0).unwrap();
        }
        // The third counted attempt starts the first block.
        fail(&mut state, &ip(1), 0).unwrap();
        assert_eq!(
            fail(&mut state, &ip(1), S),
            Err(Refused {
                retry_after_secs: 59
            })
        );
        // A refused attempt changes nothing; after the block one attempt, then twice as long.
        fail(&mut state, &ip(1), 60 * S).unwrap();
        assert_eq!(
            fail(&mut state, &ip(1), 60 * S)
                .unwrap_err()
                .retry_after_secs,
            120
        );
        assert_eq!(POLICY.block_after(3), Duration::from_secs(60));
        assert_eq!(POLICY.block_after(6), Duration::from_secs(480));
        assert_eq!(POLICY.block_after(7), Duration::from_secs(600));
        assert_eq!(POLICY.block_after(u32::MAX), Duration::from_secs(600));
        assert_eq!(POLICY.block_after(2), Duration::ZERO);
    }

    #[test]
    fn another_source_is_not_blocked_until_the_account_wide_cap() {
        let mut state = ThrottleState::default();
        for last in 1..=3 {
            for _ in 0..3 {
                fail(&mut state, &ip(last), 0).unwrap();
            }
        }
        fail(&mut state, &ip(4), 0).unwrap();
        // Ten attempts in the window: the eleventh, from a fresh source, waits for the window.
        assert_eq!(
            fail(&mut state, &ip(5), 10 * S),
            Err(Refused {
                retry_after_secs: 3590
            })
        );
        fail(&mut state, &ip(5), 3600 * S).unwrap();
    }

    #[test]
    fn known_devices_and_ips_are_exempt_from_the_cap_and_have_their_own_count() {
        let mut state = ThrottleState::default();
        let device = Source {
            ip: "10.0.0.1".into(),
            device: Some(device_hash("owner-device-0123456789")),
        };
        let (next, reservation) = reserve(&state, &device, &POLICY, 0).unwrap();
        state = succeed(&next, &reservation, "10.0.0.2", device.device.as_deref());
        assert_eq!(state.window_attempts, 0, "a success takes its count back");
        // The stranger uses the device's IP and many others (not the owner's last IP, .2).
        for last in std::iter::once(1).chain(3..=22) {
            for _ in 0..3 {
                let _ = fail(&mut state, &ip(last), 0);
            }
        }
        assert!(fail(&mut state, &ip(1), 0).is_err());
        assert!(fail(&mut state, &ip(30), 0).is_err());
        // The owner's device (from the stranger's IP) and the owner's last IP get in.
        let (next, reservation) = reserve(&state, &device, &POLICY, 0).unwrap();
        assert_eq!(
            reservation.source_key,
            format!("d:{}", device_hash("owner-device-0123456789"))
        );
        state = succeed(&next, &reservation, "10.0.0.1", device.device.as_deref());
        assert!(reserve(&state, &ip(2), &POLICY, 0).is_ok());
        // An unknown device id is just its IP.
        let forged = Source {
            ip: "10.0.0.9".into(),
            device: Some(device_hash("forged-device-id-000000")),
        };
        assert!(reserve(&state, &forged, &POLICY, 0).is_err());
    }

    #[test]
    fn the_sources_stay_bounded() {
        let mut state = ThrottleState::default();
        let policy = ThrottlePolicy {
            account_failures: u32::MAX,
            ..POLICY
        };
        for n in 0..(MAX_SOURCES as u32 + 10) {
            let source = Source {
                ip: format!("10.1.{}.{}", n / 256, n % 256),
                device: None,
            };
            state = reserve(&state, &source, &policy, i64::from(n)).unwrap().0;
        }
        assert_eq!(state.sources.len(), MAX_SOURCES);
        assert_eq!(source_ip("10.0.0.1"), "10.0.0.1");
        assert_eq!(source_ip("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(source_ip("::ffff:10.0.0.1"), "10.0.0.1");
        assert!(valid_device_id("abcdefghijklmnop_-09"));
        assert!(!valid_device_id("short"));
        assert!(!valid_device_id("has space in it 0123"));
    }

    proptest! {
        /// Whatever the attempts (sources, times), a refusal never asks for more than the
        /// longest block or the window, and between two successes a source gets at most the
        /// free attempts plus one per elapsed block.
        #[test]
        fn refusals_are_bounded(attempts in proptest::collection::vec((0u8..6, 0i64..5000), 1..200)) {
            let mut state = ThrottleState::default();
            let mut now = 0i64;
            for (last, step) in attempts {
                now += step * 100;
                match reserve(&state, &ip(last), &POLICY, now) {
                    Ok((next, _)) => {
                        prop_assert_eq!(next.version, state.version + 1);
                        state = next;
                    }
                    Err(refusal) => {
                        prop_assert!(refusal.retry_after_secs >= 1);
                        prop_assert!(refusal.retry_after_secs <= 3600);
                    }
                }
                prop_assert!(state.window_attempts <= POLICY.account_failures);
            }
        }

        #[test]
        fn within_one_instant_at_most_the_free_attempts_pass(n in 1usize..100) {
            let mut state = ThrottleState::default();
            let passed = (0..n).filter(|_| fail(&mut state, &ip(1), 7).is_ok()).count();
            prop_assert_eq!(passed, n.min(3));
        }
    }
}
