//! Cache settings: Beaker's flat `cache.*` strings and the typed builder
//! both become [`Overrides`], resolved per region into [`CacheConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::backend::{BackendConfig, BackendFactory};
use super::key::DEFAULT_KEY_LENGTH;
use super::policy::{DEFAULT_LOCK_TIMEOUT, OnBackendError, OnLockTimeout, Policy};
use super::registry;
use crate::clock::Clock;
use crate::error::{Error, Result};

/// Settings that a region (or the defaults) sets; `None` inherits.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    pub kind: Option<BackendChoice>,
    pub data_dir: Option<PathBuf>,
    pub lock_dir: Option<PathBuf>,
    pub expire: Option<Option<Duration>>,
    pub enabled: Option<bool>,
    pub key_length: Option<usize>,
    pub serve_stale: Option<bool>,
    pub stale_for: Option<Option<Duration>>,
    pub lock_timeout: Option<Option<Duration>>,
    pub on_lock_timeout: Option<OnLockTimeout>,
    pub on_backend_error: Option<OnBackendError>,
    /// Backend-specific settings by short name, with the full setting
    /// name they came from (for error messages).
    pub options: BTreeMap<String, (String, String)>,
}

impl Overrides {
    /// `self` with everything `over` sets on top.
    pub(crate) fn then(&self, over: &Overrides) -> Overrides {
        let mut options = self.options.clone();
        options.extend(over.options.clone());
        Overrides {
            kind: over.kind.clone().or_else(|| self.kind.clone()),
            data_dir: over.data_dir.clone().or_else(|| self.data_dir.clone()),
            lock_dir: over.lock_dir.clone().or_else(|| self.lock_dir.clone()),
            expire: over.expire.or(self.expire),
            enabled: over.enabled.or(self.enabled),
            key_length: over.key_length.or(self.key_length),
            serve_stale: over.serve_stale.or(self.serve_stale),
            stale_for: over.stale_for.or(self.stale_for),
            lock_timeout: over.lock_timeout.or(self.lock_timeout),
            on_lock_timeout: over.on_lock_timeout.or(self.on_lock_timeout),
            on_backend_error: over.on_backend_error.or(self.on_backend_error),
            options,
        }
    }
}

/// Which backend a configuration uses.
#[derive(Clone, Debug)]
pub(crate) enum BackendChoice {
    /// A type name, looked up in the registry when resolved.
    Named(String),
    /// A factory given to the builder, with the type name it goes by in
    /// messages; the registry is not consulted.
    Given(String, Arc<dyn BackendFactory>),
}

/// One resolved configuration: the defaults, or a region.
#[derive(Clone, Debug)]
pub(crate) struct CacheConfig {
    pub backend: BackendConfig,
    pub policy: Policy,
    /// The backend's factory: the one given to the builder, or the one
    /// registered when the configuration was resolved (a later
    /// `register_backend` does not change this manager).
    pub factory: Arc<dyn BackendFactory>,
    /// The backend configuration's identity: namespaces opened under equal
    /// identities are the same stored data.
    pub identity: String,
}

/// Every setting with its prefix removed, parsed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Parsed {
    pub defaults: Overrides,
    pub regions: Vec<(String, Overrides)>,
}

const PREFIXES: [&str; 2] = ["beaker.cache.", "cache."];

fn invalid(setting: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidSetting {
        setting: setting.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Beaker's `asbool`.
fn parse_bool(setting: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "y" | "t" | "1" => Ok(true),
        "false" | "no" | "off" | "n" | "f" | "0" => Ok(false),
        _ => Err(invalid(setting, value, "expected true or false")),
    }
}

/// Seconds, as Beaker's `expire` (a whole number, `0` = always stale), or
/// `none` for no expiry.
fn parse_secs(setting: &str, value: &str) -> Result<Option<Duration>> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(|s| Some(Duration::from_secs(s)))
        .map_err(|_| {
            invalid(
                setting,
                value,
                "expected a whole number of seconds (0 or more), or none",
            )
        })
}

fn parse_dir(setting: &str, value: &str) -> Result<PathBuf> {
    if value.trim().is_empty() {
        return Err(invalid(setting, value, "expected a directory path"));
    }
    Ok(PathBuf::from(value.trim()))
}

/// Sets one option, `name` being the part after the prefix and region.
fn set_option(o: &mut Overrides, setting: &str, name: &str, value: &str) -> Result<()> {
    match name {
        "type" => {
            if value.trim().is_empty() {
                return Err(invalid(setting, value, "expected a backend type name"));
            }
            o.kind = Some(BackendChoice::Named(value.trim().to_string()));
        }
        "data_dir" => o.data_dir = Some(parse_dir(setting, value)?),
        "lock_dir" => o.lock_dir = Some(parse_dir(setting, value)?),
        "expire" => o.expire = Some(parse_secs(setting, value)?),
        "stale_for" => o.stale_for = Some(parse_secs(setting, value)?),
        "lock_timeout" => o.lock_timeout = Some(parse_secs(setting, value)?),
        "on_lock_timeout" => {
            o.on_lock_timeout = Some(match value.trim().to_ascii_lowercase().as_str() {
                "error" => OnLockTimeout::Error,
                "create" => OnLockTimeout::Create,
                _ => return Err(invalid(setting, value, "expected error or create")),
            })
        }
        "on_backend_error" => {
            o.on_backend_error = Some(match value.trim().to_ascii_lowercase().as_str() {
                "error" => OnBackendError::Error,
                "create" => OnBackendError::Create,
                _ => return Err(invalid(setting, value, "expected error or create")),
            })
        }
        "enabled" => o.enabled = Some(parse_bool(setting, value)?),
        "serve_stale" => o.serve_stale = Some(parse_bool(setting, value)?),
        "key_length" => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => o.key_length = Some(n),
            _ => {
                return Err(invalid(
                    setting,
                    value,
                    "expected a whole number of bytes above zero",
                ));
            }
        },
        // Checked against the backend's declared options when resolved.
        other => {
            o.options
                .insert(other.to_string(), (setting.to_string(), value.to_string()));
        }
    }
    Ok(())
}

/// Parses Beaker-style settings. Keys without a `cache.` or
/// `beaker.cache.` prefix belong to something else and are skipped.
pub(crate) fn parse<K: AsRef<str>, V: AsRef<str>>(
    settings: impl IntoIterator<Item = (K, V)>,
) -> Result<Parsed> {
    let mut flat: Vec<(String, String, String)> = Vec::new();
    for (k, v) in settings {
        let k = k.as_ref();
        let Some(rest) = PREFIXES.iter().find_map(|p| k.strip_prefix(p)) else {
            continue;
        };
        flat.push((k.to_string(), rest.to_string(), v.as_ref().to_string()));
    }
    let mut parsed = Parsed::default();
    for (setting, rest, value) in &flat {
        if rest == "regions" {
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name.contains('.') {
                    return Err(invalid(setting, value, "region names cannot contain '.'"));
                }
                if !parsed.regions.iter().any(|(n, _)| n == name) {
                    parsed
                        .regions
                        .push((name.to_string(), Overrides::default()));
                }
            }
        }
    }
    for (setting, rest, value) in &flat {
        if rest == "regions" {
            continue;
        }
        match rest.split_once('.') {
            Some((region, name)) => {
                let Some((_, o)) = parsed.regions.iter_mut().find(|(n, _)| n == region) else {
                    let known: Vec<&str> = parsed.regions.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(invalid(
                        setting,
                        value,
                        format!(
                            "{region:?} is not a region listed in cache.regions (listed: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                };
                set_option(o, setting, name, value)?;
            }
            None => set_option(&mut parsed.defaults, setting, rest, value)?,
        }
    }
    Ok(parsed)
}

/// Resolves `over` on top of `defaults` into a checked configuration.
pub(crate) fn resolve(
    defaults: &Overrides,
    over: &Overrides,
    clock: &Arc<dyn Clock>,
) -> Result<CacheConfig> {
    let o = defaults.then(over);
    let (kind, factory, given) = match o.kind.clone() {
        None => ("memory".to_string(), registry::factory("memory")?, None),
        Some(BackendChoice::Named(kind)) => {
            let factory = registry::factory(&kind)?;
            (kind, factory, None)
        }
        Some(BackendChoice::Given(kind, factory)) => {
            // Two factories given under one name are two backends.
            let at = Arc::as_ptr(&factory).cast::<()>() as usize;
            (kind, factory, Some(at))
        }
    };
    let accepted = factory.options();
    let mut options = BTreeMap::new();
    for (name, (setting, value)) in &o.options {
        if !accepted.contains(&name.as_str()) {
            return Err(invalid(
                setting,
                value,
                format!(
                    "unknown setting for backend {kind:?} (common settings: type, data_dir, \
                     lock_dir, expire, enabled, key_length, serve_stale, stale_for, lock_timeout, \
                     on_lock_timeout, on_backend_error, regions; \
                     this backend also takes: {})",
                    if accepted.is_empty() {
                        "nothing else".to_string()
                    } else {
                        accepted.join(", ")
                    }
                ),
            ));
        }
        options.insert(name.clone(), value.clone());
    }
    let backend = BackendConfig {
        kind,
        data_dir: o.data_dir.clone(),
        lock_dir: o.lock_dir.clone(),
        options,
        clock: Arc::clone(clock),
    };
    factory.check(&backend)?;
    let identity = format!(
        "{}|{:?}|{:?}|{:?}|{:?}",
        backend.kind, given, backend.data_dir, backend.lock_dir, backend.options
    );
    Ok(CacheConfig {
        factory,
        identity,
        backend,
        policy: Policy {
            expire: o.expire.flatten(),
            serve_stale: o.serve_stale.unwrap_or(true),
            stale_for: o.stale_for.flatten(),
            key_length: o.key_length.unwrap_or(DEFAULT_KEY_LENGTH),
            enabled: o.enabled.unwrap_or(true),
            lock_timeout: o.lock_timeout.unwrap_or(Some(DEFAULT_LOCK_TIMEOUT)),
            on_lock_timeout: o.on_lock_timeout.unwrap_or_default(),
            on_backend_error: o.on_backend_error.unwrap_or_default(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_inherit_and_override() {
        let p = parse([
            ("cache.type", "memory"),
            ("beaker.cache.expire", "30"),
            ("cache.regions", "short_term, long_term"),
            ("cache.short_term.expire", "60"),
            ("cache.long_term.expire", "none"),
            ("cache.long_term.enabled", "off"),
            ("session.type", "cookie"),
        ])
        .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(crate::SystemClock);
        let short = resolve(&p.defaults, &p.regions[0].1, &clock).unwrap();
        let long = resolve(&p.defaults, &p.regions[1].1, &clock).unwrap();
        let defaults = resolve(&p.defaults, &Overrides::default(), &clock).unwrap();
        assert_eq!(p.regions[0].0, "short_term");
        assert_eq!(short.policy.expire, Some(Duration::from_secs(60)));
        assert_eq!(long.policy.expire, None);
        assert!(!long.policy.enabled);
        assert_eq!(defaults.policy.expire, Some(Duration::from_secs(30)));
        assert_eq!(defaults.policy.key_length, 250);
        assert_eq!(defaults.policy.lock_timeout, Some(DEFAULT_LOCK_TIMEOUT));
        assert_eq!(defaults.policy.on_lock_timeout, OnLockTimeout::Error);
        let p = parse([
            ("cache.lock_timeout", "5"),
            ("cache.on_lock_timeout", "create"),
            ("cache.regions", "patient"),
            ("cache.patient.lock_timeout", "none"),
        ])
        .unwrap();
        let base = resolve(&p.defaults, &Overrides::default(), &clock).unwrap();
        let patient = resolve(&p.defaults, &p.regions[0].1, &clock).unwrap();
        assert_eq!(base.policy.lock_timeout, Some(Duration::from_secs(5)));
        assert_eq!(base.policy.on_lock_timeout, OnLockTimeout::Create);
        assert_eq!(patient.policy.lock_timeout, None);
        assert_eq!(defaults.policy.on_backend_error, OnBackendError::Error);
        let outage = parse([("cache.on_backend_error", "Create")]).unwrap();
        let outage = resolve(&outage.defaults, &Overrides::default(), &clock).unwrap();
        assert_eq!(outage.policy.on_backend_error, OnBackendError::Create);
        let err = parse([("cache.on_backend_error", "retry")]).unwrap_err();
        assert!(err.to_string().contains("cache.on_backend_error"), "{err}");
        let err = parse([("cache.on_lock_timeout", "shrug")]).unwrap_err();
        assert!(err.to_string().contains("cache.on_lock_timeout"), "{err}");
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let err = parse([("cache.expire", "soon")]).unwrap_err();
        assert!(err.to_string().contains("cache.expire"), "{err}");
        let err = parse([("cache.regions", "a"), ("cache.b.expire", "1")]).unwrap_err();
        assert!(err.to_string().contains("cache.b.expire"), "{err}");
        assert!(err.to_string().contains("listed: a"), "{err}");
        let err = parse([("cache.key_length", "0")]).unwrap_err();
        assert!(err.to_string().contains("cache.key_length"), "{err}");
        let p = parse([("cache.expir", "1")]).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(crate::SystemClock);
        let err = resolve(&p.defaults, &Overrides::default(), &clock).unwrap_err();
        assert!(err.to_string().contains("cache.expir"), "{err}");
        let p = parse([("cache.type", "file")]).unwrap();
        let err = resolve(&p.defaults, &Overrides::default(), &clock).unwrap_err();
        assert!(err.to_string().contains("cache.data_dir"), "{err}");
        let p = parse([("cache.type", "nosuch")]).unwrap();
        let err = resolve(&p.defaults, &Overrides::default(), &clock).unwrap_err();
        assert!(matches!(err, Error::UnknownBackend { .. }), "{err}");
    }
}
