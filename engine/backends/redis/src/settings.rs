//! The backend's settings (`cache.url`, `cache.prefix`, …): parsed and
//! checked from the strings a [`BackendConfig`] carries.

use std::time::Duration;

use carboy::Error;
use carboy::cache::BackendConfig;
use redis::{ConnectionInfo, IntoConnectionInfo};

/// Every setting this backend accepts, by its short name.
pub(crate) const OPTIONS: &[&str] = &[
    "url",
    "cluster",
    "connect_timeout_ms",
    "command_timeout_ms",
    "pool_size",
    "prefix",
    "lock_lease_ms",
    "max_key_length",
];

/// Default `cache.url`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
/// Default `cache.connect_timeout_ms`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Default `cache.command_timeout_ms`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Default `cache.pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default `cache.prefix`.
pub const DEFAULT_PREFIX: &str = "carboy:";
/// Default `cache.lock_lease_ms`.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_millis(30_000);
/// Default `cache.max_key_length` (Beaker's `ext:redis` hashes past 1024 too).
pub const DEFAULT_MAX_KEY_LENGTH: usize = 1024;

/// The parsed settings of one redis backend configuration.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The servers: one (standalone) or the cluster's seed nodes.
    pub nodes: Vec<ConnectionInfo>,
    /// The nodes' addresses (`host:port`, no password), for messages.
    pub display: String,
    /// `cache.url` as given (with any password and database): part of
    /// the identity, never printed.
    pub url: String,
    pub cluster: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub pool_size: usize,
    pub prefix: Vec<u8>,
    pub lock_lease: Duration,
    pub max_key_length: usize,
}

impl Settings {
    /// A text that is equal for two equal configurations (the factory keeps
    /// one connection pool per distinct one).
    pub(crate) fn identity(&self) -> String {
        format!(
            "{}|{}|{:?}|{:?}|{}|{:?}|{:?}|{}",
            self.url,
            self.cluster,
            self.connect_timeout,
            self.command_timeout,
            self.pool_size,
            self.prefix,
            self.lock_lease,
            self.max_key_length
        )
    }
}

fn bad(name: &'static str, value: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidOption {
        name,
        reason: format!("{value:?}: {why}"),
    }
}

fn millis(
    config: &BackendConfig,
    short: &str,
    name: &'static str,
    default: Duration,
) -> carboy::Result<Duration> {
    let Some(v) = config.options.get(short) else {
        return Ok(default);
    };
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
        _ => Err(bad(
            name,
            v,
            "expected a whole number of milliseconds above zero",
        )),
    }
}

fn count(
    config: &BackendConfig,
    short: &str,
    name: &'static str,
    default: usize,
    min: usize,
) -> carboy::Result<usize> {
    let Some(v) = config.options.get(short) else {
        return Ok(default);
    };
    match v.trim().parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(bad(
            name,
            v,
            format!("expected a whole number, at least {min}"),
        )),
    }
}

/// Parses and checks every setting of `config`.
pub(crate) fn parse(config: &BackendConfig) -> carboy::Result<Settings> {
    let url = config
        .options
        .get("url")
        .map(String::as_str)
        .unwrap_or(DEFAULT_URL);
    let mut nodes = Vec::new();
    for part in url.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(bad(
                "cache.url",
                url,
                "expected redis://host:port/db, or several redis://host:port separated by commas (a cluster)",
            ));
        }
        let info = part
            .into_connection_info()
            .map_err(|e| bad("cache.url", part, format!("not a redis URL ({e})")))?;
        nodes.push(info);
    }
    let cluster = match config.options.get("cluster") {
        None => nodes.len() > 1,
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return Err(bad("cache.cluster", v, "expected true or false")),
        },
    };
    if !cluster && nodes.len() > 1 {
        return Err(bad(
            "cache.url",
            url,
            "several servers are listed but cache.cluster is false (a standalone server takes one URL)",
        ));
    }
    if cluster && let Some(n) = nodes.iter().find(|n| n.redis_settings().db() != 0) {
        return Err(bad(
            "cache.url",
            url,
            format!(
                "a redis cluster has only database 0, but {} asks for database {}",
                n.addr(),
                n.redis_settings().db()
            ),
        ));
    }
    let prefix = config
        .options
        .get("prefix")
        .map(String::as_str)
        .unwrap_or(DEFAULT_PREFIX);
    if prefix.contains(['{', '}']) {
        return Err(bad(
            "cache.prefix",
            prefix,
            "cannot contain '{' or '}': the namespace is the key's hash tag",
        ));
    }
    let max_key_length = count(
        config,
        "max_key_length",
        "cache.max_key_length",
        DEFAULT_MAX_KEY_LENGTH,
        128,
    )?;
    let settings = Settings {
        display: nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(","),
        nodes,
        url: url.trim().to_string(),
        cluster,
        connect_timeout: millis(
            config,
            "connect_timeout_ms",
            "cache.connect_timeout_ms",
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        command_timeout: millis(
            config,
            "command_timeout_ms",
            "cache.command_timeout_ms",
            DEFAULT_COMMAND_TIMEOUT,
        )?,
        pool_size: count(config, "pool_size", "cache.pool_size", DEFAULT_POOL_SIZE, 1)?,
        prefix: prefix.as_bytes().to_vec(),
        lock_lease: millis(
            config,
            "lock_lease_ms",
            "cache.lock_lease_ms",
            DEFAULT_LOCK_LEASE,
        )?,
        max_key_length,
    };
    if settings.lock_lease < Duration::from_millis(30) {
        return Err(bad(
            "cache.lock_lease_ms",
            &settings.lock_lease.as_millis().to_string(),
            "a lease under 30 ms cannot be extended in time (it is renewed every third of it)",
        ));
    }
    Ok(settings)
}
