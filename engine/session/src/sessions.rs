//! [`Sessions`]: an opened session configuration — the storage, the keys,
//! the cookie attributes — shared by every request of a layer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use carboy::cache::{AsyncCache, CacheManager};
use cookie::Cookie;
use cookie::time::{Duration as CookieDuration, OffsetDateTime};
use serde::{Deserialize, Serialize};

use crate::config::{CookieExpires, SameSite, SessionConfig, SessionType};
use crate::error::SessionError;
use crate::keys::KeyRing;
use crate::layer::SessionLayer;
use crate::session::Session;

/// A session's data: keys to JSON values.
pub type SessionMap = BTreeMap<String, serde_json::Value>;

/// How long stored sessions outlive their timeout in storage (Beaker's
/// 120 s): room for clocks of several processes that differ a little.
pub const STORAGE_GRACE: Duration = Duration::from_secs(120);

/// The largest `Set-Cookie` value (name, value and attributes) a session
/// may send: what every browser keeps (RFC 6265, section 6.1).
pub const COOKIE_LIMIT: usize = 4096;

/// `Expires` of a cookie that never expires: Beaker's 0x7FFFFFFF.
const NEVER_UNIX: i64 = 0x7FFF_FFFF;

/// What a server-side session is stored as (postcard, by the cache's
/// default codec): plain numbers and a string, nothing executable.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct StoredSession {
    pub created_ms: u64,
    pub accessed_ms: u64,
    /// `data` is sealed with `session.encrypt_key` (AES-256-GCM, bound to
    /// the session id), not JSON.
    pub sealed: bool,
    /// The JSON of the session map, or its sealed form.
    pub data: String,
}

/// What a cookie session's cookie carries (JSON, then signed or sealed).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct CookiePayload {
    /// The session id.
    pub i: String,
    /// Created (Unix ms).
    pub c: u64,
    /// Last accessed (Unix ms).
    pub a: u64,
    /// The data.
    pub d: SessionMap,
}

pub(crate) enum Storage {
    /// Server-side, in this cache namespace.
    Server(AsyncCache),
    /// In the cookie.
    Cookie,
}

pub(crate) struct Shared {
    pub config: SessionConfig,
    pub storage: Storage,
    /// Server-side: signs the id cookie (`session.secret`).
    pub id_ring: Option<KeyRing>,
    /// Server-side: seals stored data; cookie: seals the cookie
    /// (`session.encrypt_key`).
    pub seal_ring: Option<KeyRing>,
    /// Cookie sessions: signs the cookie (`session.validate_key`, or
    /// `session.secret`).
    pub sign_ring: Option<KeyRing>,
}

/// An opened session configuration: storage, keys and cookie attributes.
/// Cheap to clone; hand it to [`layer`](Sessions::layer) (or
/// [`SessionLayer::new`]).
///
/// ```
/// use carboy_session::SessionConfig;
///
/// let dir = tempfile::tempdir()?;
/// let sessions = SessionConfig::new().data_dir(dir.path()).build()?; // file
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hi" }))
///     .layer(sessions.layer());
/// # let _ = app;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Sessions {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub(crate) fn open(config: SessionConfig) -> Result<Sessions, SessionError> {
        let kind = config.resolved_type();
        let storage = match &kind {
            SessionType::Cookie => Storage::Cookie,
            SessionType::Backend(name) => {
                let manager = match &config.manager {
                    Some(m) => m.clone(),
                    None => build_manager(&config, name)?,
                };
                Storage::Server(manager.get_cache(&config.namespace)?.to_async())
            }
        };
        let cookie = kind == SessionType::Cookie;
        let validate = if config.validate_key.is_empty() {
            &config.secret
        } else {
            &config.validate_key
        };
        let shared = Shared {
            id_ring: (!cookie)
                .then(|| KeyRing::derive("carboy-session/id", &config.secret))
                .flatten(),
            seal_ring: KeyRing::derive(
                if cookie {
                    "carboy-session/cookie-seal"
                } else {
                    "carboy-session/data-seal"
                },
                &config.encrypt_key,
            ),
            sign_ring: cookie
                .then(|| KeyRing::derive("carboy-session/cookie-sign", validate))
                .flatten(),
            storage,
            config,
        };
        Ok(Sessions {
            inner: Arc::new(shared),
        })
    }

    /// The tower layer (and axum middleware) that gives each request its
    /// [`Session`].
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::new(self.clone())
    }

    /// The settings these sessions were opened with.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// The cache namespace of server-side sessions (`None` for cookie
    /// sessions).
    pub fn cache(&self) -> Option<&AsyncCache> {
        match &self.inner.storage {
            Storage::Server(c) => Some(c),
            Storage::Cookie => None,
        }
    }

    /// The session stored under `id`, loaded and locked (Beaker's
    /// `get_by_id`), outside any request: `None` when no such session is
    /// stored (or it expired). Its changes are stored by
    /// [`Session::save`]; its lock is released when the last clone of it
    /// is dropped. Cookie sessions have no store to look in:
    /// [`SessionError::Unsupported`].
    pub async fn get_by_id(&self, id: &str) -> Result<Option<Session>, SessionError> {
        if matches!(self.inner.storage, Storage::Cookie) {
            return Err(SessionError::Unsupported {
                operation: "get_by_id",
            });
        }
        Session::by_id(self.clone(), id).await
    }

    /// Removes every stored session that has timed out, for backends that
    /// do not expire entries on their own (the `file` and `memory`
    /// backends do: sessions are stored with a TTL of `timeout` + 2
    /// minutes, and `file` drops them at compaction). Each session is
    /// checked under its lock. Returns how many were removed.
    ///
    /// Needs a backend that can list its keys; others answer
    /// [`carboy::Error::Unsupported`] (and rely on their TTL). Runs on a
    /// tokio runtime (the listing goes to `spawn_blocking`).
    pub async fn cleanup(&self) -> Result<usize, SessionError> {
        let Storage::Server(cache) = &self.inner.storage else {
            return Err(SessionError::Unsupported {
                operation: "cleanup",
            });
        };
        // Listing may wait for another process's writer: not on a worker.
        let lister = cache.clone();
        let keys = tokio::task::spawn_blocking(move || lister.blocking().keys())
            .await
            .map_err(|e| {
                SessionError::Store(carboy::Error::InvalidOption {
                    name: "cleanup",
                    reason: format!("the task listing the sessions failed: {e}"),
                })
            })??;
        let now = self.now_ms();
        let mut removed = 0;
        for key in keys {
            let _held = cache.lock_key(&key).await?;
            let entry = cache.get_entry::<StoredSession>(&key).await?;
            let gone = match entry {
                // Past its storage expiry, or unreadable.
                None => true,
                Some(e) if e.stale => true,
                Some(e) => self.timed_out(e.value.accessed_ms, now),
            };
            if gone && cache.remove(&key).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.config.clock.now_unix_ms()
    }

    /// True when a session last accessed at `accessed_ms` has timed out
    /// at `now_ms`.
    pub(crate) fn timed_out(&self, accessed_ms: u64, now_ms: u64) -> bool {
        self.inner
            .config
            .timeout
            .is_some_and(|t| now_ms.saturating_sub(accessed_ms) > t.as_millis() as u64)
    }

    /// How stale a stored access time may get before a read-only request
    /// stores a new one: 1/16 of the timeout (the timeout is then honoured
    /// to within that), one minute without a timeout.
    pub(crate) fn refresh_after_ms(&self) -> u64 {
        self.inner
            .config
            .timeout
            .map_or(60_000, |t| (t.as_millis() as u64 / 16).max(1))
    }

    /// The storage expiry of a session saved now.
    pub(crate) fn storage_ttl(&self) -> Option<Duration> {
        self.inner.config.timeout.map(|t| t + STORAGE_GRACE)
    }

    /// The session cookie carrying `value`, with every attribute from the
    /// settings.
    pub(crate) fn cookie(&self, value: String) -> Cookie<'static> {
        let c = &self.inner.config;
        let mut cookie = self.base_cookie(value);
        match c.cookie_expires {
            CookieExpires::BrowserSession => {}
            CookieExpires::After(d) => {
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                cookie.set_max_age(CookieDuration::seconds(secs));
                let at = (self.now_ms() / 1000).saturating_add(d.as_secs());
                // Past the year 9999: no Expires, Max-Age alone.
                if let Some(t) = i64::try_from(at)
                    .ok()
                    .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
                {
                    cookie.set_expires(t);
                }
            }
            CookieExpires::Never => {
                if let Ok(t) = OffsetDateTime::from_unix_timestamp(NEVER_UNIX) {
                    cookie.set_expires(t);
                }
            }
        }
        cookie
    }

    /// A cookie that makes the browser drop the session cookie.
    pub(crate) fn expiring_cookie(&self) -> Cookie<'static> {
        let mut cookie = self.base_cookie(String::new());
        cookie.set_max_age(CookieDuration::ZERO);
        cookie.set_expires(OffsetDateTime::UNIX_EPOCH);
        cookie
    }

    fn base_cookie(&self, value: String) -> Cookie<'static> {
        let c = &self.inner.config;
        let mut cookie = Cookie::new(c.key.clone(), value);
        cookie.set_path(c.cookie_path.clone());
        if let Some(d) = &c.cookie_domain {
            cookie.set_domain(d.clone());
        }
        cookie.set_secure(c.secure);
        cookie.set_http_only(c.httponly);
        match c.samesite {
            SameSite::Lax => cookie.set_same_site(cookie::SameSite::Lax),
            SameSite::Strict => cookie.set_same_site(cookie::SameSite::Strict),
            SameSite::None => cookie.set_same_site(cookie::SameSite::None),
            SameSite::Omit => cookie.set_same_site(None),
        }
        cookie
    }
}

/// The cache manager of `session.type = <name>`: values never expire by
/// the cache's default (each session is stored with its own expiry), and
/// `stale_for = 0` makes that expiry the backend's TTL.
fn build_manager(config: &SessionConfig, name: &str) -> Result<CacheManager, SessionError> {
    let mut b = CacheManager::builder()
        .backend(name)
        .clock(Arc::clone(&config.clock))
        .never_expire()
        .stale_for(Duration::ZERO);
    if let Some(d) = &config.data_dir {
        b = b.data_dir(d);
    }
    if let Some(d) = &config.lock_dir {
        b = b.lock_dir(d);
    }
    match config.lock_timeout {
        Some(Some(t)) => b = b.lock_timeout(t),
        Some(None) => b = b.no_lock_timeout(),
        None => {}
    }
    for (short, _, value) in &config.cache_options {
        b = b.option(short, value.clone());
    }
    b.build().map_err(|e| match e {
        carboy::Error::InvalidSetting {
            setting,
            value,
            reason,
        } => {
            // Name the setting as the user wrote it.
            let short = setting.strip_prefix("cache.").unwrap_or(&setting);
            let written = config
                .cache_options
                .iter()
                .find(|(s, _, _)| s == short)
                .map(|(_, w, _)| w.clone())
                .unwrap_or_else(|| format!("session.{short}"));
            SessionError::Setting {
                setting: written,
                value,
                reason,
            }
        }
        other => SessionError::Store(other),
    })
}
