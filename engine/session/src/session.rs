//! [`Session`]: the lazy session handle a request gets (Beaker's
//! `SessionObject` around its `Session`/`CookieSession`).
//!
//! Nothing is read until a handler first touches the session; from then
//! until the end of the request, a server-side session holds its key lock
//! (`AsyncCache::lock_key`), so that two requests of one session never
//! interleave their read-modify-write. At the end, the middleware saves it
//! only if it changed, or its access time must be refreshed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carboy::cache::AsyncKeyLock;
use cookie::Cookie;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::error::SessionError;
use crate::id::SessionId;
use crate::sessions::{COOKIE_LIMIT, CookiePayload, SessionMap, Sessions, Storage, StoredSession};

/// How many cookies of the session's name a request may offer that are
/// tried in turn (a browser may send a path-scoped one besides ours).
const MAX_CANDIDATES: usize = 4;

/// A request's session: a cheap, clonable handle that loads nothing until
/// first used.
///
/// Get it in an axum handler as an extractor (the [`SessionLayer`](crate::SessionLayer)
/// must wrap the route); every method that reads or changes the session
/// is `async` because the first one loads it (and, server-side, takes its
/// lock). Values are any serde type, kept as JSON values.
///
/// ```
/// use carboy_session::{Session, SessionError};
///
/// async fn count(session: Session) -> Result<String, SessionError> {
///     let n: u64 = session.get("count").await?.unwrap_or(0) + 1;
///     session.insert("count", n).await?;
///     Ok(n.to_string())
/// }
/// # let _ = count;
/// ```
///
/// Beaker's operations, with its gaps fixed:
///
/// | method | effect |
/// |---|---|
/// | [`save`](Self::save) | stores now (the middleware also saves at the end of the request if needed) |
/// | [`delete`](Self::delete) | removes the stored data at once, and sends an expiring cookie (Beaker left the data) |
/// | [`invalidate`](Self::invalidate) | new id, empty data; the old id's data is removed at save |
/// | [`regenerate_id`](Self::regenerate_id) | new id, data kept; the old id's data is removed at save (Beaker left it loadable) |
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: Sessions,
    state: Mutex<State>,
    touched: AtomicBool,
}

enum State {
    /// Not loaded: the request's candidate cookie values.
    Untouched {
        cookies: Vec<String>,
    },
    Loaded(Box<Loaded>),
    /// The request has ended.
    Finished,
}

/// A loaded session.
struct Loaded {
    id: SessionId,
    created_ms: u64,
    /// The access time as stored (`None`: not stored yet).
    stored_accessed_ms: Option<u64>,
    /// The access time of the session before this request (`None`: new).
    last_accessed_ms: Option<u64>,
    data: SessionMap,
    /// Changed since loaded or last saved.
    changed: bool,
    /// Server-side: the lock on `id`, held until the end of the request.
    lock: Option<AsyncKeyLock>,
    /// Ids whose stored data goes at the next save (regenerate,
    /// invalidate), with their locks.
    retired: Vec<(SessionId, Option<AsyncKeyLock>)>,
    /// The client does not have a cookie for `id` yet.
    cookie_due: bool,
    /// The client's cookie must be expired (delete) unless a new session
    /// is saved.
    expire_cookie: bool,
    /// The cookie was opened with an old key: re-issue it with the newest.
    by_old_key: bool,
    /// Loaded by id, outside a request: no cookie.
    detached: bool,
    /// A cookie made by an explicit save, for the end of the request.
    pending_cookie: Option<Cookie<'static>>,
}

impl Loaded {
    fn fresh(sessions: &Sessions) -> Result<Loaded, SessionError> {
        let now = sessions.now_ms();
        Ok(Loaded {
            id: SessionId::generate()?,
            created_ms: now,
            stored_accessed_ms: None,
            last_accessed_ms: None,
            data: SessionMap::new(),
            changed: false,
            lock: None,
            retired: Vec::new(),
            cookie_due: true,
            expire_cookie: false,
            by_old_key: false,
            detached: false,
            pending_cookie: None,
        })
    }

    fn is_stored(&self) -> bool {
        self.stored_accessed_ms.is_some()
    }
}

fn bad_cookie(reason: &str) {
    tracing::warn!(reason, "bad session cookie; starting a fresh session");
}

impl Session {
    /// A handle for one request, with the values of the request's cookies
    /// that bear the session's name. Loads nothing.
    pub(crate) fn new(sessions: Sessions, cookies: Vec<String>) -> Session {
        Session {
            inner: Arc::new(Inner {
                sessions,
                state: Mutex::new(State::Untouched { cookies }),
                touched: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) async fn by_id(
        sessions: Sessions,
        id: &str,
    ) -> Result<Option<Session>, SessionError> {
        let Some(id) = SessionId::parse(id) else {
            return Ok(None);
        };
        let Some(mut loaded) = load_stored(&sessions, id).await? else {
            return Ok(None);
        };
        loaded.detached = true;
        loaded.cookie_due = false;
        Ok(Some(Session {
            inner: Arc::new(Inner {
                sessions,
                state: Mutex::new(State::Loaded(Box::new(loaded))),
                touched: AtomicBool::new(true),
            }),
        }))
    }

    /// True once the session was loaded (Beaker's `accessed()`): a request
    /// whose handlers never touched it costs no storage access and sets
    /// no cookie.
    pub fn is_loaded(&self) -> bool {
        self.inner.touched.load(Ordering::Acquire)
    }

    /// Runs `f` on the loaded session, loading it first if needed.
    async fn with<R>(&self, f: impl FnOnce(&mut Loaded) -> R) -> Result<R, SessionError> {
        let mut state = self.inner.state.lock().await;
        if let State::Untouched { cookies } = &*state {
            // Cloned, not taken: after a failed load (a lock timeout) the
            // next call tries the same cookies, never a fresh session.
            let loaded = load(&self.inner.sessions, cookies.clone()).await?;
            self.inner.touched.store(true, Ordering::Release);
            *state = State::Loaded(Box::new(loaded));
        }
        match &mut *state {
            State::Loaded(l) => Ok(f(l)),
            _ => Err(SessionError::Finished),
        }
    }

    /// The value under `key` as a `T`; `None` when there is none. A value
    /// that is not a `T` is [`SessionError::Value`].
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let value = self.get_value(key).await?;
        value
            .map(|v| {
                serde_json::from_value(v).map_err(|e| SessionError::Value {
                    key: key.to_string(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// The JSON value under `key`.
    pub async fn get_value(&self, key: &str) -> Result<Option<serde_json::Value>, SessionError> {
        self.with(|l| l.data.get(key).cloned()).await
    }

    /// Stores `value` under `key` (as JSON); saved at the end of the
    /// request.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(|e| SessionError::Value {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        self.with(|l| {
            if l.data.get(key) != Some(&value) {
                l.data.insert(key.to_string(), value);
                l.changed = true;
            }
        })
        .await
    }

    /// Removes `key`, returning its value as a `T`.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let value = self
            .with(|l| {
                let v = l.data.remove(key);
                l.changed |= v.is_some();
                v
            })
            .await?;
        value
            .map(|v| {
                serde_json::from_value(v).map_err(|e| SessionError::Value {
                    key: key.to_string(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// Removes every value (the id stays).
    pub async fn clear(&self) -> Result<(), SessionError> {
        self.with(|l| {
            l.changed |= !l.data.is_empty();
            l.data.clear();
        })
        .await
    }

    /// The keys that hold values.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        self.with(|l| l.data.keys().cloned().collect()).await
    }

    /// The session's id.
    pub async fn id(&self) -> Result<SessionId, SessionError> {
        self.with(|l| l.id.clone()).await
    }

    /// True when the session was created by this request (not stored yet,
    /// or stored by it).
    pub async fn is_new(&self) -> Result<bool, SessionError> {
        self.with(|l| l.last_accessed_ms.is_none()).await
    }

    /// When the session was created (Unix ms, by the configured clock).
    pub async fn created_unix_ms(&self) -> Result<u64, SessionError> {
        self.with(|l| l.created_ms).await
    }

    /// When the session was accessed before this request (Unix ms);
    /// `None` for a new session (Beaker's `last_accessed`).
    pub async fn last_accessed_unix_ms(&self) -> Result<Option<u64>, SessionError> {
        self.with(|l| l.last_accessed_ms).await
    }

    /// New id, data kept (call it at login: the id an attacker may have
    /// planted before is worthless afterwards). The old id's stored data
    /// is removed when the session is saved, and a request still using
    /// the old cookie then gets a fresh session.
    pub async fn regenerate_id(&self) -> Result<(), SessionError> {
        let new_id = SessionId::generate()?;
        self.with(|l| {
            let old = std::mem::replace(&mut l.id, new_id);
            if l.is_stored() {
                l.retired.push((old, l.lock.take()));
            }
            l.stored_accessed_ms = None;
            l.cookie_due = true;
            l.changed = true;
            l.pending_cookie = None;
        })
        .await
    }

    /// New id, empty data: a new session that is stored (and its cookie
    /// sent) at the end of the request; the old id's data is removed then.
    pub async fn invalidate(&self) -> Result<(), SessionError> {
        let new_id = SessionId::generate()?;
        let now = self.inner.sessions.now_ms();
        self.with(|l| {
            let old = std::mem::replace(&mut l.id, new_id);
            if l.is_stored() {
                l.retired.push((old, l.lock.take()));
            }
            l.data.clear();
            l.created_ms = now;
            l.stored_accessed_ms = None;
            l.last_accessed_ms = None;
            l.cookie_due = true;
            l.changed = true;
            l.pending_cookie = None;
        })
        .await
    }

    /// Deletes the session: its stored data is removed now, and the client
    /// gets an expiring cookie. The handle then holds a new, empty session
    /// that is stored only if something is put in it.
    pub async fn delete(&self) -> Result<(), SessionError> {
        let sessions = self.inner.sessions.clone();
        let mut state = self.inner.state.lock().await;
        if let State::Untouched { cookies } = &*state {
            let loaded = load(&sessions, cookies.clone()).await?;
            *state = State::Loaded(Box::new(loaded));
            self.inner.touched.store(true, Ordering::Release);
        }
        let State::Loaded(l) = &mut *state else {
            return Err(SessionError::Finished);
        };
        if let Storage::Server(cache) = &sessions.inner.storage {
            for (old, _lock) in l.retired.drain(..) {
                cache.remove(old.as_str()).await?;
            }
            if l.is_stored() {
                cache.remove(l.id.as_str()).await?;
            }
        }
        let detached = l.detached;
        let mut fresh = Loaded::fresh(&sessions)?;
        fresh.expire_cookie = !detached;
        fresh.detached = detached;
        **l = fresh;
        Ok(())
    }

    /// Stores the session now (the middleware saves at the end of the
    /// request anyway; call this to see a save error before building the
    /// response). Fails with [`SessionError::CookieTooLarge`] when a cookie
    /// session would not fit in a cookie; nothing is saved then.
    pub async fn save(&self) -> Result<(), SessionError> {
        let sessions = self.inner.sessions.clone();
        let mut state = self.inner.state.lock().await;
        let State::Loaded(l) = &mut *state else {
            // Untouched: nothing to save; finished: too late.
            return match &*state {
                State::Finished => Err(SessionError::Finished),
                _ => Ok(()),
            };
        };
        if let Some(c) = persist(&sessions, l).await? {
            l.pending_cookie = Some(c);
        }
        Ok(())
    }

    /// Ends the request: saves what needs saving, releases the lock, and
    /// returns the `Set-Cookie` value to send, if any.
    pub(crate) async fn finish(&self) -> Result<Option<String>, SessionError> {
        let sessions = self.inner.sessions.clone();
        let mut state = self.inner.state.lock().await;
        let previous = std::mem::replace(&mut *state, State::Finished);
        let State::Loaded(mut l) = previous else {
            return Ok(None);
        };
        let cookie = persist(&sessions, &mut l).await;
        let cookie = match cookie {
            Ok(c) => c.or_else(|| l.pending_cookie.take()),
            Err(e) => return Err(e),
        };
        Ok(cookie.map(|c| c.to_string()))
    }
}

/// Loads the session of the first candidate cookie that names a live one;
/// otherwise a fresh session.
async fn load(sessions: &Sessions, cookies: Vec<String>) -> Result<Loaded, SessionError> {
    let name = &sessions.inner.config.key;
    for candidate in cookies.into_iter().take(MAX_CANDIDATES) {
        if candidate.is_empty() {
            continue;
        }
        let found = match &sessions.inner.storage {
            Storage::Server(_) => {
                let (raw, by_old_key) = match &sessions.inner.id_ring {
                    Some(ring) => match ring.verify(name, &candidate) {
                        Some(o) => (o.value, o.by_old_key),
                        None => {
                            bad_cookie(
                                "signature does not verify (tampered, truncated, or signed by an unknown key)",
                            );
                            continue;
                        }
                    },
                    None => (candidate, false),
                };
                let Some(id) = SessionId::parse(&raw) else {
                    bad_cookie("not a session id");
                    continue;
                };
                load_stored(sessions, id).await?.map(|mut l| {
                    l.by_old_key = by_old_key;
                    l
                })
            }
            Storage::Cookie => load_cookie(sessions, &candidate),
        };
        if let Some(loaded) = found {
            return Ok(loaded);
        }
    }
    Loaded::fresh(sessions)
}

/// A server-side session by id, locked; `None` (and its lock released)
/// when it is not stored, expired, or corrupt with `invalidate_corrupt`.
async fn load_stored(sessions: &Sessions, id: SessionId) -> Result<Option<Loaded>, SessionError> {
    let Storage::Server(cache) = &sessions.inner.storage else {
        return Ok(None);
    };
    let lock = cache.lock_key(id.as_str()).await?;
    let Some(stored) = cache.get::<StoredSession>(id.as_str()).await? else {
        // Never adopted: the client gets a fresh id (no fixation).
        tracing::debug!("session id not in storage (unknown or expired); starting a fresh session");
        return Ok(None);
    };
    let now = sessions.now_ms();
    if sessions.timed_out(stored.accessed_ms, now) {
        tracing::debug!("session timed out; starting a fresh session");
        cache.remove(id.as_str()).await?;
        return Ok(None);
    }
    let data = match decode_stored(sessions, &id, &stored) {
        Ok(d) => d,
        Err(reason) if sessions.inner.config.invalidate_corrupt => {
            tracing::warn!(
                reason,
                "stored session is corrupt; starting a fresh session"
            );
            cache.remove(id.as_str()).await?;
            return Ok(None);
        }
        Err(reason) => {
            return Err(SessionError::Corrupt {
                id: id.to_string(),
                reason,
            });
        }
    };
    Ok(Some(Loaded {
        id,
        created_ms: stored.created_ms,
        stored_accessed_ms: Some(stored.accessed_ms),
        last_accessed_ms: Some(stored.accessed_ms),
        data,
        changed: false,
        lock: Some(lock),
        retired: Vec::new(),
        cookie_due: false,
        expire_cookie: false,
        by_old_key: false,
        detached: false,
        pending_cookie: None,
    }))
}

fn decode_stored(
    sessions: &Sessions,
    id: &SessionId,
    stored: &StoredSession,
) -> Result<SessionMap, String> {
    let json = match (&sessions.inner.seal_ring, stored.sealed) {
        (Some(ring), true) => {
            ring.open(id.as_str(), &stored.data)
                .ok_or("sealed data does not open with any session.encrypt_key")?
                .value
        }
        // Never read plaintext where encryption is configured.
        (Some(_), false) => {
            return Err("stored in plaintext, but session.encrypt_key is set".into());
        }
        (None, true) => return Err("stored encrypted, but session.encrypt_key is not set".into()),
        (None, false) => stored.data.clone(),
    };
    serde_json::from_str(&json).map_err(|e| format!("session data: {e}"))
}

/// A cookie session from its cookie value; `None` (and a log line) when
/// the value does not open, verify or parse, or the session timed out.
fn load_cookie(sessions: &Sessions, value: &str) -> Option<Loaded> {
    let name = &sessions.inner.config.key;
    let opened = match (&sessions.inner.seal_ring, &sessions.inner.sign_ring) {
        (Some(ring), _) => ring.open(name, value).map(|o| (o.value, o.by_old_key)),
        (None, Some(ring)) => ring.verify(name, value).and_then(|o| {
            let bytes = URL_SAFE_NO_PAD.decode(o.value).ok()?;
            Some((String::from_utf8(bytes).ok()?, o.by_old_key))
        }),
        (None, None) => None,
    };
    let Some((json, by_old_key)) = opened else {
        bad_cookie(
            "cookie session does not verify (tampered, truncated, or sealed by an unknown key)",
        );
        return None;
    };
    let payload: CookiePayload = match serde_json::from_str(&json) {
        Ok(p) => p,
        Err(_) => {
            bad_cookie("cookie session payload does not parse");
            return None;
        }
    };
    let id = SessionId::parse(&payload.i).or_else(|| {
        bad_cookie("cookie session id is not an id");
        None
    })?;
    let now = sessions.now_ms();
    if sessions.timed_out(payload.a, now) {
        tracing::debug!("cookie session timed out; starting a fresh session");
        return None;
    }
    Some(Loaded {
        id,
        created_ms: payload.c,
        stored_accessed_ms: Some(payload.a),
        last_accessed_ms: Some(payload.a),
        data: payload.d,
        changed: false,
        lock: None,
        retired: Vec::new(),
        cookie_due: false,
        expire_cookie: false,
        by_old_key,
        detached: false,
        pending_cookie: None,
    })
}

/// Saves `l` if it changed, its access time is due, or its id changed;
/// removes retired ids; returns the cookie to send, if any.
async fn persist(
    sessions: &Sessions,
    l: &mut Loaded,
) -> Result<Option<Cookie<'static>>, SessionError> {
    let config = &sessions.inner.config;
    let now = sessions.now_ms();
    let refresh_due = config.save_accessed_time
        && l.stored_accessed_ms
            .is_some_and(|a| now.saturating_sub(a) >= sessions.refresh_after_ms());
    // A new session is stored only once something is put in it.
    let write = l.changed || refresh_due || (l.by_old_key && l.is_stored());
    match &sessions.inner.storage {
        Storage::Server(cache) => {
            let mut cookie = None;
            if write {
                let json = serde_json::to_string(&l.data).map_err(|e| SessionError::Value {
                    key: String::new(),
                    reason: e.to_string(),
                })?;
                let (sealed, data) = match &sessions.inner.seal_ring {
                    Some(ring) => (true, ring.seal(l.id.as_str(), json)),
                    None => (false, json),
                };
                let stored = StoredSession {
                    created_ms: l.created_ms,
                    accessed_ms: now,
                    sealed,
                    data,
                };
                cache
                    .set_for(l.id.as_str(), &stored, sessions.storage_ttl())
                    .await?;
                l.stored_accessed_ms = Some(now);
                l.changed = false;
                l.expire_cookie = false;
                let resend = matches!(config.cookie_expires, crate::CookieExpires::After(_));
                if (l.cookie_due || resend || l.by_old_key) && !l.detached {
                    cookie = Some(sessions.cookie(id_cookie_value(sessions, &l.id)));
                }
                l.cookie_due = false;
                l.by_old_key = false;
            }
            // The new id is stored: the old ones' data can go.
            for (old, _lock) in l.retired.drain(..) {
                cache.remove(old.as_str()).await?;
            }
            if cookie.is_none() && l.expire_cookie && !l.detached {
                l.expire_cookie = false;
                cookie = Some(sessions.expiring_cookie());
            }
            Ok(cookie)
        }
        Storage::Cookie => {
            // Nothing is stored under an old id: it lived in the old cookie.
            l.retired.clear();
            if write {
                let payload = CookiePayload {
                    i: l.id.to_string(),
                    c: l.created_ms,
                    a: now,
                    d: l.data.clone(),
                };
                let json = serde_json::to_string(&payload).map_err(|e| SessionError::Value {
                    key: String::new(),
                    reason: e.to_string(),
                })?;
                let name = &config.key;
                let value = match (&sessions.inner.seal_ring, &sessions.inner.sign_ring) {
                    (Some(ring), _) => ring.seal(name, json),
                    (None, Some(ring)) => ring.sign(name, URL_SAFE_NO_PAD.encode(json)),
                    (None, None) => {
                        return Err(SessionError::Setting {
                            setting: "session.validate_key".into(),
                            value: String::new(),
                            reason: "cookie sessions are signed: set session.validate_key".into(),
                        });
                    }
                };
                let cookie = sessions.cookie(value);
                let size = cookie.to_string().len();
                if size > COOKIE_LIMIT {
                    return Err(SessionError::CookieTooLarge {
                        size,
                        limit: COOKIE_LIMIT,
                    });
                }
                l.stored_accessed_ms = Some(now);
                l.changed = false;
                l.cookie_due = false;
                l.by_old_key = false;
                l.expire_cookie = false;
                return Ok(Some(cookie));
            }
            if l.expire_cookie {
                l.expire_cookie = false;
                return Ok(Some(sessions.expiring_cookie()));
            }
            Ok(None)
        }
    }
}

/// What the id cookie carries: the id, signed when `session.secret` is set.
fn id_cookie_value(sessions: &Sessions, id: &SessionId) -> String {
    match &sessions.inner.id_ring {
        Some(ring) => ring.sign(&sessions.inner.config.key, id.to_string()),
        None => id.to_string(),
    }
}
