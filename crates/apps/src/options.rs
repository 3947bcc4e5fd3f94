//! The apps' settings: the `[apps]` table of the configuration file, with every limit and
//! its documented default.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::assets::Asset;

/// Who may create an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signup {
    /// Anyone who reaches the server.
    Open,
    /// Only with an invite (`switchboard invite create`, or the first admin's link).
    Invite,
    /// Open when the server listens on a loopback address (only this machine reaches
    /// it), invite-only otherwise. The default.
    #[default]
    Auto,
}

/// `[apps]`: what the built-in apps do.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsOptions {
    /// Whether `switchboard serve` mounts the apps (pages, `/auth/*`, the `chat.` rpc
    /// methods). Default true.
    pub enabled: bool,
    /// Who may create an account: `open`, `invite` or `auto` (default).
    pub signup: Signup,
    /// Whether people may sign in as guests (a display name, no account). Default true.
    pub guests: bool,
    /// Accept only tokens minted by the application's own backend: the sign-in
    /// endpoints and the token endpoint are off (404 `external_tokens`), the pages still
    /// serve. Implied when the server verifies RS256 or ES256 tokens, whose private key
    /// it does not hold. Default false.
    pub external_tokens_only: bool,
    /// Limits on what clients can make the apps hold or do.
    pub limits: AppsLimits,
    /// `[apps.monitor]`: the monitoring dashboard's stale timeout, thresholds, webhook.
    pub monitor: crate::MonitorOptions,
    /// The files served as pages and under `/apps/`. Default: `crates/apps/web/`, as
    /// embedded ([`crate::assets::FILES`]); an embedder or a test may serve others.
    #[serde(skip)]
    pub assets: &'static [Asset],
}

impl Default for AppsOptions {
    fn default() -> Self {
        AppsOptions {
            enabled: true,
            signup: Signup::Auto,
            guests: true,
            external_tokens_only: false,
            limits: AppsLimits::default(),
            monitor: crate::MonitorOptions::default(),
            assets: crate::assets::FILES,
        }
    }
}

/// `[apps.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsLimits {
    /// Sign-in attempts from one address per minute (a burst of this many, refilled over
    /// the minute). Past it: 429 `rate_limited`. Default 20.
    pub signin_per_ip_per_minute: u32,
    /// Failed sign-ins of one account per hour, from anywhere; past it the account's
    /// sign-ins get 429 `rate_limited` (even with the right password) until the bucket
    /// refills. Default 10.
    pub signin_failures_per_account_per_hour: u32,
    /// Accounts created from one address per hour. Default 10.
    pub signups_per_ip_per_hour: u32,
    /// Guest sign-ins from one address per hour. Default 30.
    pub guests_per_ip_per_hour: u32,
    /// Token requests from one address per minute. Default 120.
    pub tokens_per_ip_per_minute: u32,
    /// Sessions one account keeps (devices, browsers); a new one evicts the oldest.
    /// Default 50.
    pub sessions_per_account: usize,
    /// How long an account's session lasts. Default 30 days.
    #[serde(deserialize_with = "duration")]
    pub session_ttl: Duration,
    /// How long a guest's session lasts. Default 1 day.
    #[serde(deserialize_with = "duration")]
    pub guest_session_ttl: Duration,
    /// How long a connection token lives. Default 10 minutes.
    #[serde(deserialize_with = "duration")]
    pub token_ttl: Duration,
    /// How long an invite stays usable. Default 7 days.
    #[serde(deserialize_with = "duration")]
    pub invite_ttl: Duration,
    /// Password hashes computed at once (each takes 19 MiB and tens of milliseconds);
    /// more wait, up to 10 s, then 503 `busy`. Default 2.
    pub hash_concurrency: usize,
    /// Rooms on the server. Default 500.
    pub rooms_total: usize,
    /// Rooms one user may create. Default 10.
    pub rooms_per_user: usize,
    /// Longest message (room or direct), in characters. Default 2000.
    pub text_max: usize,
    /// Posts (messages, topics, direct messages) one user may make per second, over
    /// time. Default 2.
    pub posts_per_second: u32,
    /// Posts one user may make in a burst. Default 10.
    pub post_burst: u32,
    /// Shortest time between two typing notices of one user. Default 2 s.
    #[serde(deserialize_with = "duration")]
    pub typing_interval: Duration,
    /// Messages one direct conversation keeps; older ones are deleted. Default 10,000.
    pub dm_keep: usize,
    /// Keys (addresses, accounts, users) each rate limit tracks at once; past it the
    /// limit refuses new keys until old ones expire. Default 100,000.
    pub max_tracked: usize,
}

impl Default for AppsLimits {
    fn default() -> Self {
        AppsLimits {
            signin_per_ip_per_minute: 20,
            signin_failures_per_account_per_hour: 10,
            signups_per_ip_per_hour: 10,
            guests_per_ip_per_hour: 30,
            tokens_per_ip_per_minute: 120,
            sessions_per_account: 50,
            session_ttl: Duration::from_secs(30 * 86_400),
            guest_session_ttl: Duration::from_secs(86_400),
            token_ttl: Duration::from_secs(600),
            invite_ttl: Duration::from_secs(7 * 86_400),
            hash_concurrency: 2,
            rooms_total: 500,
            rooms_per_user: 10,
            text_max: 2000,
            posts_per_second: 2,
            post_burst: 10,
            typing_interval: Duration::from_secs(2),
            dm_keep: 10_000,
            max_tracked: 100_000,
        }
    }
}

impl AppsOptions {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.monitor.validate()?;
        let l = &self.limits;
        for (name, value) in [
            (
                "signin_per_ip_per_minute",
                l.signin_per_ip_per_minute as usize,
            ),
            (
                "signin_failures_per_account_per_hour",
                l.signin_failures_per_account_per_hour as usize,
            ),
            (
                "signups_per_ip_per_hour",
                l.signups_per_ip_per_hour as usize,
            ),
            ("guests_per_ip_per_hour", l.guests_per_ip_per_hour as usize),
            (
                "tokens_per_ip_per_minute",
                l.tokens_per_ip_per_minute as usize,
            ),
            ("sessions_per_account", l.sessions_per_account),
            ("hash_concurrency", l.hash_concurrency),
            ("rooms_total", l.rooms_total),
            ("text_max", l.text_max),
            ("posts_per_second", l.posts_per_second as usize),
            ("post_burst", l.post_burst as usize),
            ("dm_keep", l.dm_keep),
            ("max_tracked", l.max_tracked),
        ] {
            if value == 0 {
                return Err(format!("apps.limits.{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("session_ttl", l.session_ttl),
            ("guest_session_ttl", l.guest_session_ttl),
            ("token_ttl", l.token_ttl),
            ("invite_ttl", l.invite_ttl),
        ] {
            if value.is_zero() {
                return Err(format!("apps.limits.{name} must be longer than 0"));
            }
        }
        Ok(())
    }
}

impl AppsOptions {
    /// Reads `[apps]` from any serde form (the binary hands over the TOML table) and
    /// checks it.
    pub fn from_value<'de, D: Deserializer<'de>>(value: D) -> Result<AppsOptions, String> {
        let options = AppsOptions::deserialize(value).map_err(|e| format!("[apps]: {e}"))?;
        options.validate()?;
        Ok(options)
    }
}

/// Durations written as the server's configuration writes them (`25s`, `10m`, `7d`, or a
/// number of seconds).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    switchboard_server::config::duration::deserialize(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_table() {
        let options = AppsOptions::from_value(serde_json::json!({
            "signup": "invite",
            "guests": false,
            "limits": {"session_ttl": "1h", "rooms_per_user": 3}
        }))
        .unwrap();
        assert_eq!(options.signup, Signup::Invite);
        assert!(!options.guests && options.enabled);
        assert_eq!(options.limits.session_ttl, Duration::from_secs(3600));
        assert_eq!(options.limits.rooms_per_user, 3);
        assert_eq!(options.limits.text_max, 2000);
        let err = AppsOptions::from_value(serde_json::json!({"signup": "maybe"})).unwrap_err();
        assert!(err.contains("signup") || err.contains("variant"), "{err}");
        let err = AppsOptions::from_value(serde_json::json!({"sigup": "open"})).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        let err =
            AppsOptions::from_value(serde_json::json!({"limits": {"text_max": 0}})).unwrap_err();
        assert!(err.contains("text_max"), "{err}");
    }
}
