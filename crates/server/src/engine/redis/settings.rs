//! Where the Redis engine connects: [`RedisSettings`], and the `redis::Client` made from
//! them, directly or through Sentinel.

use std::fmt;

use redis::IntoConnectionInfo;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use super::super::StoreError;

/// Where the Redis engine connects.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`, or with Sentinel the master's db and
    /// credentials (`redis://:password@/db`): used as is when `sentinels` is empty.
    pub url: String,
    /// Prefix of every key and pub/sub channel (default "switchboard").
    pub prefix: String,
    /// Sentinel addresses (`host:port`); empty: no Sentinel.
    pub sentinels: Vec<String>,
    /// The master's name at the Sentinels (default "mymaster").
    pub master: String,
}

impl Default for RedisSettings {
    /// A Redis on this machine's default port, database 0, no Sentinel.
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "switchboard".into(),
            sentinels: Vec::new(),
            master: "mymaster".into(),
        }
    }
}

impl RedisSettings {
    /// The settings of `[engine]` in the server's configuration.
    pub fn from_config(engine: &crate::config::EngineConfig) -> RedisSettings {
        RedisSettings {
            url: engine.redis_url.clone(),
            prefix: engine.prefix.clone(),
            sentinels: engine.sentinels.clone(),
            master: engine.master.clone(),
        }
    }

    /// A client for the master: `url` as is, or, with Sentinel, the master the Sentinels
    /// name now (ask again after a failover). For connections of one's own, such as the
    /// node's pub/sub connection. Errors never print the password.
    pub async fn client(&self) -> Result<redis::Client, StoreError> {
        open_client(self).await
    }
}

/// Written by hand: the url's password stays out of logs and error messages.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted(&self.url))
            .field("prefix", &self.prefix)
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .finish()
    }
}

/// `url` with its password replaced by `(set)`: `redis://user:(set)@host:port/db`. A
/// user part without a colon may be a password written in the wrong place, so it is
/// hidden whole.
pub(super) fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    // The last `@`: a password written without percent-encoding may hold one.
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (credentials, host) = (&rest[..at], &rest[at + 1..]);
    let shown = match credentials.split_once(':') {
        Some((user, _)) => format!("{user}:(set)"),
        None => "(set)".to_owned(),
    };
    if scheme.is_empty() {
        format!("{shown}@{host}")
    } else {
        format!("{scheme}://{shown}@{host}")
    }
}

fn failed(what: &str, err: redis::RedisError) -> StoreError {
    StoreError::Failed(format!("redis: {what}: {err}"))
}

/// The client for the master: `url` as is, or the master the Sentinels name now, with
/// the url's db and credentials. Errors never print the password.
pub(super) async fn open_client(settings: &RedisSettings) -> Result<redis::Client, StoreError> {
    let shown = redacted(&settings.url);
    if settings.sentinels.is_empty() {
        return redis::Client::open(settings.url.as_str())
            .map_err(|e| failed(&format!("invalid url {shown}"), e));
    }
    let node =
        master_settings(&settings.url).map_err(|e| failed(&format!("invalid url {shown}"), e))?;
    let sentinels: Vec<String> = settings
        .sentinels
        .iter()
        .map(|address| format!("redis://{address}"))
        .collect();
    let mut sentinel = SentinelClient::build(
        sentinels,
        settings.master.clone(),
        Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(node)),
        SentinelServerType::Master,
    )
    .map_err(|e| failed("invalid sentinel addresses", e))?;
    sentinel.async_get_client().await.map_err(|e| {
        failed(
            &format!(
                "no master {:?} from the sentinels {:?}",
                settings.master, settings.sentinels
            ),
            e,
        )
    })
}

/// The db and credentials of a Sentinel-mode url, whose host may be left out
/// (`redis://:password@/db`): the Sentinels give the host.
pub(super) fn master_settings(url: &str) -> redis::RedisResult<redis::RedisConnectionInfo> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // A placeholder host, so the url parses; only its db and credentials are used.
    let authority = if authority.is_empty() || authority.ends_with('@') {
        format!("{authority}localhost")
    } else {
        authority.to_owned()
    };
    let info = format!("{scheme}://{authority}{path}").into_connection_info()?;
    Ok(info.redis_settings().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let settings = RedisSettings {
            url: "redis://app:hunter2@redis.internal:6380/2".into(),
            ..RedisSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("redis://app:(set)@redis.internal:6380/2"),
            "{shown}"
        );
        assert_eq!(redacted("redis://:p@ss@/0"), "redis://:(set)@/0");
        assert_eq!(redacted("redis://secret@host/0"), "redis://(set)@host/0");
        assert_eq!(
            redacted("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }

    #[test]
    fn sentinel_urls_give_db_and_credentials() {
        let info = master_settings("redis://:hunter2@/3").unwrap();
        assert_eq!(info.db(), 3);
        assert_eq!(info.password(), Some("hunter2"));
        let info = master_settings("redis://app:pw@/1").unwrap();
        assert_eq!(
            (info.username(), info.password()),
            (Some("app"), Some("pw"))
        );
        assert_eq!(master_settings("redis:///5").unwrap().db(), 5);
        assert_eq!(master_settings("redis://").unwrap().db(), 0);
    }

    #[test]
    fn settings_deserialize_with_defaults() {
        let settings: RedisSettings = toml::from_str(r#"url = "redis://h:1/0""#).unwrap();
        assert_eq!(settings.prefix, "switchboard");
        assert_eq!(settings.master, "mymaster");
        assert!(settings.sentinels.is_empty());
    }
}
