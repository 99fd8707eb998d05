//! The backend's settings (`cache.url`, `cache.timeout`, …), parsed from
//! a [`BackendConfig`]'s options, each with its default.

use std::time::Duration;

use carboy::Error;
use carboy::cache::BackendConfig;

/// The settings this backend accepts beyond carboy's common ones, by their
/// short name (`cache.<name>` in a settings map).
pub const OPTIONS: &[&str] = &[
    "url",
    "timeout",
    "pool_size",
    "max_connections",
    "key_prefix",
    "lock_lease",
    "item_size_max",
];

/// `cache.max_connections` when not set: enough for a burst to go on
/// without waiting at a loopback round trip's speed, far below
/// memcached's own 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// memcached's default port, for a server given without one.
pub const DEFAULT_PORT: u16 = 11211;

/// The longest key prefix accepted, in bytes (so that every key, hashed
/// or not, fits memcached's 250 bytes).
pub const MAX_PREFIX: usize = 64;

/// The settings of one backend configuration.
///
/// ## Defaults
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `cache.url` | required | `host:port;host:port` (Beaker's form; the port defaults to 11211) |
/// | `cache.timeout` | `1` (seconds, decimals allowed) | connecting to a server, and each exchange with it |
/// | `cache.pool_size` | `8` | idle connections kept per server |
/// | `cache.max_connections` | `64` | connections in use at once per server, by the blocking client and by each runtime's async client: at the cap a call waits for one to be returned, up to `cache.timeout`, then fails with a timeout naming the server. `0`: no cap, and a burst of concurrent calls dials one connection each (memcached refuses connections past its own `-c`, 1024 by default) |
/// | `cache.key_prefix` | empty | put before every key: printable ASCII, no spaces, at most 64 bytes; end it with a separator (`app1:`) so that one prefix never reads as the start of another's namespace |
/// | `cache.lock_lease` | `30` (whole seconds, at least 2) | how long a creation lock outlives a holder that died |
/// | `cache.item_size_max` | `1m` | the servers' `-I` (bytes, or with `k`/`m`): larger values are refused before they are sent |
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Settings {
    /// The servers, as `host:port`, in the order given.
    pub servers: Vec<String>,
    /// Connect timeout and per-exchange timeout.
    pub timeout: Duration,
    /// Idle connections kept per server.
    pub pool_size: usize,
    /// Connections in use at once per server and client; `None`: no cap.
    pub max_connections: Option<usize>,
    /// Put before every key.
    pub key_prefix: String,
    /// The creation lock's lease: the lock's TTL on the server, renewed
    /// every third of it while its holder runs.
    pub lock_lease: Duration,
    /// The servers' item size limit, in bytes.
    pub item_size_max: usize,
}

impl Settings {
    /// The settings of `config`; a bad or missing one is
    /// [`Error::InvalidOption`] naming it.
    pub fn from_config(config: &BackendConfig) -> carboy::Result<Settings> {
        let get = |name: &str| config.options.get(name).map(|v| v.trim());
        let url = get("url").ok_or_else(|| Error::InvalidOption {
            name: "cache.url",
            reason: "required: the memcached servers, as host:port;host:port".into(),
        })?;
        Ok(Settings {
            servers: parse_servers(url)?,
            timeout: match get("timeout") {
                Some(v) => parse_timeout(v)?,
                None => Duration::from_secs(1),
            },
            pool_size: match get("pool_size") {
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if (1..=1024).contains(&n) => n,
                    _ => {
                        return Err(invalid(
                            "cache.pool_size",
                            v,
                            "a whole number from 1 to 1024",
                        ));
                    }
                },
                None => 8,
            },
            max_connections: match get("max_connections") {
                Some(v) => match v.parse::<usize>() {
                    Ok(0) => None,
                    Ok(n) if n <= 65_536 => Some(n),
                    _ => {
                        return Err(invalid(
                            "cache.max_connections",
                            v,
                            "a whole number from 0 (no cap) to 65536",
                        ));
                    }
                },
                None => Some(DEFAULT_MAX_CONNECTIONS),
            },
            key_prefix: match get("key_prefix") {
                Some(v) => parse_prefix(v)?,
                None => String::new(),
            },
            lock_lease: match get("lock_lease") {
                Some(v) => match v.parse::<u32>() {
                    Ok(n) if n >= 2 => Duration::from_secs(u64::from(n)),
                    _ => {
                        return Err(invalid(
                            "cache.lock_lease",
                            v,
                            "a whole number of seconds, at least 2 (memcached's TTLs count \
                             in whole seconds)",
                        ));
                    }
                },
                None => Duration::from_secs(30),
            },
            item_size_max: match get("item_size_max") {
                Some(v) => parse_size(v)?,
                None => 1 << 20,
            },
        })
    }
}

fn invalid(name: &'static str, value: &str, expected: &str) -> Error {
    Error::InvalidOption {
        name,
        reason: format!("{value:?}: expected {expected}"),
    }
}

/// Beaker's `url`: servers separated by `;` (`,` is taken too).
fn parse_servers(url: &str) -> carboy::Result<Vec<String>> {
    let mut servers = Vec::new();
    for part in url
        .split([';', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let part = part.strip_prefix("memcache://").unwrap_or(part);
        let bad = || {
            invalid(
                "cache.url",
                url,
                "host:port;host:port (IPv6 in brackets: [::1]:11211)",
            )
        };
        let (host, port) = if let Some(rest) = part.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
            let host = &part[..inside.len() + 2];
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else {
            match part.split_once(':') {
                None => (part, None),
                Some((_, port)) if port.contains(':') => return Err(bad()),
                Some((host, port)) => (host, Some(port)),
            }
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                invalid("cache.url", url, "host:port with a port from 1 to 65535")
            })?,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(invalid("cache.url", url, "host:port;host:port"));
        }
        servers.push(format!("{host}:{port}"));
    }
    if servers.is_empty() {
        return Err(invalid("cache.url", url, "at least one host:port"));
    }
    Ok(servers)
}

fn parse_timeout(v: &str) -> carboy::Result<Duration> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            invalid(
                "cache.timeout",
                v,
                "seconds above 0 and at most 3600, like 0.5",
            )
        })
}

fn parse_prefix(v: &str) -> carboy::Result<String> {
    if v.len() > MAX_PREFIX || !v.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(invalid(
            "cache.key_prefix",
            v,
            "printable ASCII without spaces, at most 64 bytes",
        ));
    }
    Ok(v.to_string())
}

/// Bytes, or with a `k`/`m` suffix (as memcached's `-I` takes them).
fn parse_size(v: &str) -> carboy::Result<usize> {
    let lower = v.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('m') {
        Some(d) => (d, 1 << 20),
        None => match lower.strip_suffix('k') {
            Some(d) => (d, 1 << 10),
            None => (lower.as_str(), 1),
        },
    };
    digits
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| (1024..=1 << 30).contains(n))
        .ok_or_else(|| {
            invalid(
                "cache.item_size_max",
                v,
                "a size from 1k to 1024m, in bytes or with k or m, like 1m",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BackendConfig {
        let mut c = BackendConfig::new("memcached");
        for (k, v) in pairs {
            c.options.insert(k.to_string(), v.to_string());
        }
        c
    }

    #[test]
    fn defaults_and_beakers_url() {
        let s =
            Settings::from_config(&config(&[("url", "127.0.0.1:11300; cache2 ;[::1]:7")])).unwrap();
        assert_eq!(s.servers, ["127.0.0.1:11300", "cache2:11211", "[::1]:7"]);
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.pool_size, s.key_prefix.as_str()), (8, ""));
        assert_eq!(s.lock_lease, Duration::from_secs(30));
        assert_eq!(s.item_size_max, 1 << 20);
        assert_eq!(s.max_connections, Some(DEFAULT_MAX_CONNECTIONS));
        let capped = Settings::from_config(&config(&[("url", "h"), ("max_connections", "16")]));
        assert_eq!(capped.unwrap().max_connections, Some(16));
        let zero = Settings::from_config(&config(&[("url", "h"), ("max_connections", "0")]));
        assert_eq!(zero.unwrap().max_connections, None);
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cases = [
            (vec![], "cache.url"),
            (vec![("url", " ; ")], "cache.url"),
            (vec![("url", "h:0")], "cache.url"),
            (vec![("url", "h:99999")], "cache.url"),
            (vec![("url", "h"), ("timeout", "0")], "cache.timeout"),
            (vec![("url", "h"), ("timeout", "soon")], "cache.timeout"),
            (vec![("url", "h"), ("pool_size", "0")], "cache.pool_size"),
            (
                vec![("url", "h"), ("max_connections", "-1")],
                "cache.max_connections",
            ),
            (
                vec![("url", "h"), ("max_connections", "many")],
                "cache.max_connections",
            ),
            (
                vec![("url", "h"), ("key_prefix", "a b")],
                "cache.key_prefix",
            ),
            (vec![("url", "h"), ("lock_lease", "1")], "cache.lock_lease"),
            (
                vec![("url", "h"), ("item_size_max", "2g")],
                "cache.item_size_max",
            ),
        ];
        for (pairs, want) in cases {
            match Settings::from_config(&config(&pairs)) {
                Err(Error::InvalidOption { name, .. }) => assert_eq!(name, want, "{pairs:?}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        let s = Settings::from_config(&config(&[
            ("url", "h:1"),
            ("timeout", "0.25"),
            ("item_size_max", "2m"),
            ("key_prefix", "app1:"),
            ("lock_lease", "5"),
            ("pool_size", "3"),
        ]))
        .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.item_size_max, 2 << 20);
        assert_eq!((s.key_prefix.as_str(), s.pool_size), ("app1:", 3));
        assert_eq!(s.lock_lease, Duration::from_secs(5));
    }
}
