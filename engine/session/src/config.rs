//! [`SessionConfig`]: Beaker's session settings, from a map
//! ([`SessionConfig::from_settings`]) or typed setters, checked by
//! [`SessionConfig::build`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use carboy::cache::CacheManager;
use carboy::{Clock, SystemClock};

use crate::error::SessionError;
use crate::keys::MIN_SECRET_LEN;
use crate::sessions::Sessions;

/// The cookie name when `session.key` is not set (Beaker's).
pub const DEFAULT_COOKIE_NAME: &str = "beaker.session.id";
/// The cache namespace that holds server-side sessions.
pub const DEFAULT_NAMESPACE: &str = "sessions";

/// Where sessions live (`session.type`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionType {
    /// Server-side, in the carboy cache backend of this type name
    /// (`memory`, `file`, or any registered backend: `redis`, …); the
    /// cookie carries only the id.
    Backend(String),
    /// Everything in the cookie, signed (HMAC-SHA256) or, with
    /// `encrypt_key`, encrypted and authenticated (AES-256-GCM).
    Cookie,
}

/// When the session cookie expires in the browser (`session.cookie_expires`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieExpires {
    /// With the browser session: no `Max-Age`/`Expires` (`true`, Beaker's default).
    BrowserSession,
    /// `Max-Age` this long (and `Expires` at now + it), re-sent whenever the
    /// session is saved (a whole number of seconds).
    After(Duration),
    /// Practically never: `Expires` in 2038 as Beaker writes it (`false`).
    Never,
}

/// The `SameSite` attribute (`session.samesite`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SameSite {
    /// `SameSite=Lax` (the default).
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None` (browsers require `Secure` with it, so
    /// `session.secure` must be on).
    None,
    /// No `SameSite` attribute (`off`; Beaker's `samesite=None`).
    Omit,
}

/// The settings of a session layer.
///
/// Built from Beaker-style settings ([`from_settings`](Self::from_settings):
/// `session.*` or `beaker.session.*`) or with the setters below, then
/// checked and opened by [`build`](Self::build).
///
/// ## Defaults
///
/// | setting | setter | default | note |
/// |---|---|---|---|
/// | `session.type` | [`session_type`](Self::session_type) | `file` when `data_dir` is set, else `memory` | or `cookie`, or any carboy backend name |
/// | `session.data_dir` | [`data_dir`](Self::data_dir) | none | required by `file` |
/// | `session.lock_dir` | [`lock_dir`](Self::lock_dir) | the data directory | |
/// | `session.lock_timeout` | [`lock_timeout`](Self::lock_timeout) | 60 s ([`carboy::cache::DEFAULT_LOCK_TIMEOUT`]) | how long a request waits for its session's lock |
/// | `session.key` | [`key`](Self::key) | `beaker.session.id` | the cookie name |
/// | `session.secret` | [`secret`](Self::secret) | none | signs the id cookie (HMAC-SHA256); a comma list, newest first |
/// | `session.validate_key` | [`validate_key`](Self::validate_key) | `secret` | signs cookie sessions; required for `cookie` |
/// | `session.encrypt_key` | [`encrypt_key`](Self::encrypt_key) | none | encrypts (AES-256-GCM) cookie sessions, or stored data of server-side ones |
/// | `session.timeout` | [`timeout`](Self::timeout) | none | idle seconds before a session expires (sliding) |
/// | `session.cookie_expires` | [`cookie_expires`](Self::cookie_expires) | `true` (browser session) | `true`, `false` (2038), or seconds |
/// | `session.cookie_domain` | [`cookie_domain`](Self::cookie_domain) | none | |
/// | `session.cookie_path` | [`cookie_path`](Self::cookie_path) | `/` | |
/// | `session.secure` | [`secure`](Self::secure) | `false` | |
/// | `session.httponly` | [`httponly`](Self::httponly) | **`true`** | Beaker's is `false`: scripts have no business reading a session cookie |
/// | `session.samesite` | [`samesite`](Self::samesite) | `Lax` | `Lax`, `Strict`, `None` (needs `secure`), `off` |
/// | `session.save_accessed_time` | [`save_accessed_time`](Self::save_accessed_time) | `true` | store the access time of sessions that were only read |
/// | `session.invalidate_corrupt` | [`invalidate_corrupt`](Self::invalidate_corrupt) | `true` (Beaker's middleware default) | a stored session that no longer decodes becomes a fresh one; off: an error |
///
/// Any other `session.<name>` is handed to the cache backend as
/// `cache.<name>` (`durability` for `file`, `url` for `redis`, …); one the
/// backend does not know is an error naming `session.<name>`. Keys without
/// either prefix are ignored, so a whole application config can be passed.
///
/// Secrets are lists separated by commas, newest first: the newest signs
/// and encrypts, all verify and decrypt (key rotation). Each must be at
/// least 16 bytes; use 32 or more random characters.
///
/// `timeout` does not require `save_accessed_time` (Beaker's rule is
/// lifted): without it, the access time is stored only when the session
/// changes, so the timeout counts from the last change, and read-only
/// requests write nothing.
#[derive(Clone)]
pub struct SessionConfig {
    pub(crate) session_type: Option<SessionType>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) lock_dir: Option<PathBuf>,
    pub(crate) lock_timeout: Option<Option<Duration>>,
    /// Backend settings passed through: (short name, setting as written, value).
    pub(crate) cache_options: Vec<(String, String, String)>,
    pub(crate) manager: Option<CacheManager>,
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) secret: Vec<String>,
    pub(crate) validate_key: Vec<String>,
    pub(crate) encrypt_key: Vec<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) cookie_expires: CookieExpires,
    pub(crate) cookie_domain: Option<String>,
    pub(crate) cookie_path: String,
    pub(crate) secure: bool,
    pub(crate) httponly: bool,
    pub(crate) samesite: SameSite,
    pub(crate) save_accessed_time: bool,
    pub(crate) invalidate_corrupt: bool,
    pub(crate) clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SessionConfig {
    /// Secrets are counted, never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("session_type", &self.session_type)
            .field("data_dir", &self.data_dir)
            .field("key", &self.key)
            .field("secrets", &self.secret.len())
            .field("validate_keys", &self.validate_key.len())
            .field("encrypt_keys", &self.encrypt_key.len())
            .field("timeout", &self.timeout)
            .field("cookie_expires", &self.cookie_expires)
            .finish_non_exhaustive()
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            session_type: None,
            data_dir: None,
            lock_dir: None,
            lock_timeout: None,
            cache_options: Vec::new(),
            manager: None,
            namespace: DEFAULT_NAMESPACE.to_string(),
            key: DEFAULT_COOKIE_NAME.to_string(),
            secret: Vec::new(),
            validate_key: Vec::new(),
            encrypt_key: Vec::new(),
            timeout: None,
            cookie_expires: CookieExpires::BrowserSession,
            cookie_domain: None,
            cookie_path: "/".to_string(),
            secure: false,
            httponly: true,
            samesite: SameSite::Lax,
            save_accessed_time: true,
            invalidate_corrupt: true,
            clock: Arc::new(SystemClock),
        }
    }
}

const PREFIXES: [&str; 2] = ["beaker.session.", "session."];

fn bad(setting: &str, value: &str, reason: impl Into<String>) -> SessionError {
    SessionError::Setting {
        setting: setting.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Beaker's `asbool`.
fn parse_bool(setting: &str, value: &str) -> Result<bool, SessionError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "y" | "t" | "1" => Ok(true),
        "false" | "no" | "off" | "n" | "f" | "0" => Ok(false),
        _ => Err(bad(setting, value, "expected true or false")),
    }
}

fn parse_secs(setting: &str, value: &str) -> Result<Option<Duration>, SessionError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    match v.parse::<u64>() {
        Ok(s) if s > 0 => Ok(Some(Duration::from_secs(s))),
        _ => Err(bad(
            setting,
            value,
            "expected a whole number of seconds above 0, or none",
        )),
    }
}

fn parse_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl SessionConfig {
    /// The defaults (see the table above).
    pub fn new() -> SessionConfig {
        SessionConfig::default()
    }

    /// Settings from a Beaker-style map: `session.<name>` or
    /// `beaker.session.<name>` (see the table above); keys with neither
    /// prefix are ignored. A bad value is a [`SessionError::Setting`]
    /// naming the setting.
    ///
    /// ```
    /// use carboy_session::SessionConfig;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let data_dir = dir.path().display().to_string();
    /// let sessions = SessionConfig::from_settings([
    ///     ("session.type", "file"),
    ///     ("session.data_dir", data_dir.as_str()),
    ///     ("session.secret", "a secret of at least sixteen bytes"),
    ///     ("session.timeout", "1800"),
    /// ])?
    /// .build()?;
    /// # let _ = sessions;
    /// let err = SessionConfig::from_settings([("session.timeout", "soon")]).unwrap_err();
    /// assert!(err.to_string().contains("session.timeout"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_settings<K: AsRef<str>, V: AsRef<str>>(
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Result<SessionConfig, SessionError> {
        SessionConfig::new().settings(settings)
    }

    /// Applies Beaker-style settings on top of these (see
    /// [`from_settings`](Self::from_settings)).
    pub fn settings<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Result<SessionConfig, SessionError> {
        for (k, v) in settings {
            let (setting, value) = (k.as_ref(), v.as_ref());
            let Some(name) = PREFIXES.iter().find_map(|p| setting.strip_prefix(p)) else {
                continue;
            };
            self.set(setting, name, value)?;
        }
        Ok(self)
    }

    fn set(&mut self, setting: &str, name: &str, value: &str) -> Result<(), SessionError> {
        let text = || value.trim().to_string();
        match name {
            "type" => {
                self.session_type = Some(match value.trim() {
                    "" => {
                        return Err(bad(
                            setting,
                            value,
                            "expected file, memory, cookie or a backend name",
                        ));
                    }
                    "cookie" => SessionType::Cookie,
                    other => SessionType::Backend(other.to_string()),
                })
            }
            "data_dir" | "lock_dir" => {
                if value.trim().is_empty() {
                    return Err(bad(setting, value, "expected a directory path"));
                }
                let dir = Some(PathBuf::from(value.trim()));
                if name == "data_dir" {
                    self.data_dir = dir
                } else {
                    self.lock_dir = dir
                }
            }
            "lock_timeout" => self.lock_timeout = Some(parse_secs(setting, value)?),
            "key" => self.key = text(),
            "secret" => self.secret = parse_list(value),
            "validate_key" => self.validate_key = parse_list(value),
            "encrypt_key" => self.encrypt_key = parse_list(value),
            "timeout" => self.timeout = parse_secs(setting, value)?,
            "cookie_expires" => {
                self.cookie_expires = match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => CookieExpires::BrowserSession,
                    "false" | "no" | "off" => CookieExpires::Never,
                    _ => match parse_secs(setting, value) {
                        Ok(Some(d)) => CookieExpires::After(d),
                        _ => {
                            return Err(bad(
                                setting,
                                value,
                                "expected true (browser session), false (never) or seconds above 0",
                            ));
                        }
                    },
                }
            }
            "cookie_domain" => {
                self.cookie_domain = Some(text()).filter(|d| !d.is_empty());
            }
            "cookie_path" => self.cookie_path = text(),
            "secure" => self.secure = parse_bool(setting, value)?,
            "httponly" => self.httponly = parse_bool(setting, value)?,
            "samesite" => {
                self.samesite = match value.trim().to_ascii_lowercase().as_str() {
                    "lax" => SameSite::Lax,
                    "strict" => SameSite::Strict,
                    "none" => SameSite::None,
                    "off" | "" => SameSite::Omit,
                    _ => return Err(bad(setting, value, "expected Lax, Strict, None or off")),
                }
            }
            "save_accessed_time" => self.save_accessed_time = parse_bool(setting, value)?,
            "invalidate_corrupt" => self.invalidate_corrupt = parse_bool(setting, value)?,
            // The backend's own settings; checked when built.
            other => {
                self.cache_options
                    .push((other.to_string(), setting.to_string(), value.to_string()))
            }
        }
        Ok(())
    }

    /// Where sessions live (`session.type`).
    pub fn session_type(mut self, t: SessionType) -> Self {
        self.session_type = Some(t);
        self
    }

    /// `session.data_dir`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// `session.lock_dir`.
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lock_dir = Some(dir.into());
        self
    }

    /// `session.lock_timeout`: how long a request waits for its session's
    /// lock (`None`: forever).
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// Stores server-side sessions in namespace `namespace` of `manager`
    /// instead of a manager built from `type`/`data_dir` (which are then
    /// ignored). For expired sessions to leave storage on their own, the
    /// manager should have `stale_for` set (`cache.stale_for = 0`); see
    /// [`Sessions::cleanup`] otherwise.
    pub fn cache_manager(mut self, manager: CacheManager, namespace: &str) -> Self {
        self.manager = Some(manager);
        self.namespace = namespace.to_string();
        if self.session_type.is_none() {
            self.session_type = Some(SessionType::Backend("given".into()));
        }
        self
    }

    /// `session.key`: the cookie's name.
    pub fn key(mut self, name: &str) -> Self {
        self.key = name.to_string();
        self
    }

    /// `session.secret`: keys that sign the id cookie, newest first.
    pub fn secret<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.secret = keys.into_iter().map(Into::into).collect();
        self
    }

    /// `session.validate_key`: keys that sign cookie sessions, newest first.
    pub fn validate_key<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.validate_key = keys.into_iter().map(Into::into).collect();
        self
    }

    /// `session.encrypt_key`: keys that encrypt, newest first.
    pub fn encrypt_key<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.encrypt_key = keys.into_iter().map(Into::into).collect();
        self
    }

    /// `session.timeout`: idle time after which a session expires.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// `session.cookie_expires`.
    pub fn cookie_expires(mut self, expires: CookieExpires) -> Self {
        self.cookie_expires = expires;
        self
    }

    /// `session.cookie_domain`.
    pub fn cookie_domain(mut self, domain: Option<&str>) -> Self {
        self.cookie_domain = domain.map(str::to_string);
        self
    }

    /// `session.cookie_path`.
    pub fn cookie_path(mut self, path: &str) -> Self {
        self.cookie_path = path.to_string();
        self
    }

    /// `session.secure`.
    pub fn secure(mut self, yes: bool) -> Self {
        self.secure = yes;
        self
    }

    /// `session.httponly`.
    pub fn httponly(mut self, yes: bool) -> Self {
        self.httponly = yes;
        self
    }

    /// `session.samesite`.
    pub fn samesite(mut self, s: SameSite) -> Self {
        self.samesite = s;
        self
    }

    /// `session.save_accessed_time`.
    pub fn save_accessed_time(mut self, yes: bool) -> Self {
        self.save_accessed_time = yes;
        self
    }

    /// `session.invalidate_corrupt`.
    pub fn invalidate_corrupt(mut self, yes: bool) -> Self {
        self.invalidate_corrupt = yes;
        self
    }

    /// The clock for creation and access times, timeouts and `Expires`
    /// (and for the cache manager built here); tests inject a
    /// [`carboy::MockClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The session type this configuration resolves to.
    pub fn resolved_type(&self) -> SessionType {
        self.session_type.clone().unwrap_or_else(|| {
            SessionType::Backend(
                if self.data_dir.is_some() {
                    "file"
                } else {
                    "memory"
                }
                .into(),
            )
        })
    }

    /// Checks every setting and opens the storage.
    pub fn build(self) -> Result<Sessions, SessionError> {
        self.check()?;
        Sessions::open(self)
    }

    fn check(&self) -> Result<(), SessionError> {
        let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
        if self.key.is_empty() || !self.key.chars().all(token) {
            return Err(bad(
                "session.key",
                &self.key,
                "a cookie name is one or more visible ASCII characters without separators",
            ));
        }
        let attr = |c: char| c.is_ascii_graphic() && c != ';';
        if !self.cookie_path.starts_with('/') || !self.cookie_path.chars().all(attr) {
            return Err(bad(
                "session.cookie_path",
                &self.cookie_path,
                "a path starts with / and has no spaces, controls or ';'",
            ));
        }
        if let Some(d) = &self.cookie_domain
            && !d.chars().all(attr)
        {
            return Err(bad(
                "session.cookie_domain",
                d,
                "a domain has no spaces, controls or ';'",
            ));
        }
        if self.samesite == SameSite::None && !self.secure {
            return Err(bad(
                "session.samesite",
                "None",
                "browsers drop SameSite=None cookies without Secure: set session.secure = true",
            ));
        }
        for (setting, keys) in [
            ("session.secret", &self.secret),
            ("session.validate_key", &self.validate_key),
            ("session.encrypt_key", &self.encrypt_key),
        ] {
            if let Some(short) = keys.iter().find(|k| k.len() < MIN_SECRET_LEN) {
                return Err(bad(
                    setting,
                    &format!("<{} bytes>", short.len()),
                    format!(
                        "a key must be at least {MIN_SECRET_LEN} bytes; use 32 or more random characters"
                    ),
                ));
            }
        }
        if self.resolved_type() == SessionType::Cookie
            && self.validate_key.is_empty()
            && self.secret.is_empty()
        {
            return Err(bad(
                "session.validate_key",
                "",
                "cookie sessions are signed: set session.validate_key (or session.secret)",
            ));
        }
        Ok(())
    }
}
