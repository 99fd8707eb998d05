//! Function memoization: the runtime behind
//! [`#[cache_region]`](crate::cache_region) and [`#[cached]`](crate::cached).
//!
//! The attribute macros expand to calls of this module; it is public so
//! the expansion can reach it, and usable by hand for closures, but
//! [`Cache::get_or_create`](super::Cache::get_or_create) is the plain API.
//!
//! A memoized function's namespace is its path (`module::function`), or
//! the one `#[cached(namespace = ...)]` names; its key is the postcard
//! encoding of its arguments, as a tuple, preceded by the function's path
//! in a named namespace (which other functions may share). It runs
//! through the [`install`](super::install)ed manager; when there is none,
//! or its region is not configured, or the cache fails, the function simply
//! runs uncached: caching is an optimization, never a new way to fail.
//!
//! An `async fn` goes through `AsyncCache` (feature `async`) instead,
//! with the same keys and namespaces: see
//! `async_requires_the_carboy_feature_async`, which exists only with cargo
//! feature `async` (its name is the compile error a user without the
//! feature gets).

use std::sync::RwLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::manager::{INSTALLS, installed};
use super::markers::Invalidation;
use super::namespace::Cache;
use crate::error::{Error, Result};

/// Where a memoized function's values live.
#[derive(Debug)]
enum Place {
    /// A region of the installed manager; namespace = the function's path.
    Region(&'static str),
    /// A namespace of the installed manager's defaults ("" = the
    /// function's path), with an expiry in seconds (`None`: the manager's).
    Namespace(&'static str, Option<u64>),
}

/// One memoized function: where its values live, and the cache resolved
/// for the installed manager (looked up again after every install).
#[derive(Debug)]
pub struct Site {
    place: Place,
    path: &'static str,
    resolved: RwLock<Option<(u64, Cache)>>,
}

impl Site {
    /// A function cached in region `region`; `path` is its full path.
    pub const fn region(region: &'static str, path: &'static str) -> Site {
        Site {
            place: Place::Region(region),
            path,
            resolved: RwLock::new(None),
        }
    }

    /// A function cached in `namespace` ("" for its path) of the
    /// manager's defaults, with `expire_secs` (`None`: the default).
    pub const fn namespace(
        namespace: &'static str,
        expire_secs: Option<u64>,
        path: &'static str,
    ) -> Site {
        Site {
            place: Place::Namespace(namespace, expire_secs),
            path,
            resolved: RwLock::new(None),
        }
    }

    /// The namespace this function's values live in.
    pub fn namespace_name(&self) -> &'static str {
        match self.place {
            Place::Namespace(ns, _) if !ns.is_empty() => ns,
            _ => self.path,
        }
    }

    /// The cache this function uses now.
    pub fn cache(&self) -> Result<Cache> {
        let installs = INSTALLS.load(Ordering::Acquire);
        if let Ok(r) = self.resolved.read()
            && let Some((at, cache)) = &*r
            && *at == installs
        {
            return Ok(cache.clone());
        }
        let manager = installed().ok_or(Error::InvalidOption {
            name: "carboy::cache::install",
            reason: format!(
                "{} is memoized, but no cache manager is installed",
                self.path
            ),
        })?;
        let cache = match self.place {
            Place::Region(region) => manager.region(region)?.cache(self.path)?,
            Place::Namespace(_, expire) => {
                let cache = manager.get_cache(self.namespace_name())?;
                match expire {
                    Some(s) => cache.with_expire(Some(Duration::from_secs(s))),
                    None => cache,
                }
            }
        };
        if let Ok(mut w) = self.resolved.write() {
            *w = Some((installs, cache.clone()));
        }
        Ok(cache)
    }
}

/// The key of a call: its arguments (a tuple), postcard-encoded.
pub fn key<A: Serialize + ?Sized>(args: &A) -> Result<Vec<u8>> {
    postcard::to_allocvec(args).map_err(|e| Error::Encode {
        namespace: String::from("(memoized function arguments)"),
        reason: e.to_string(),
    })
}

/// Runs `f` through the site's cache under `key`: the cached value when
/// fresh, else `f`'s, created once across threads and processes.
pub fn call<V, F>(site: &Site, key: Result<Vec<u8>>, f: F) -> V
where
    V: Serialize + DeserializeOwned,
    F: FnOnce() -> V,
{
    let (Ok(key), Ok(cache)) = (key, site.cache()) else {
        return f();
    };
    let mut slot = Some(f);
    let got = cache.get_or_create(&key, || match slot.take() {
        Some(f) => Ok(f()),
        None => Err(NotRun),
    });
    match (got, slot.take()) {
        (Ok(v), _) => v,
        // The cache failed before running `f`, or another thread's run of
        // it failed: run it here.
        (Err(_), Some(f)) => f(),
        // get_or_create fails with a cache error only before it runs the
        // creator, and this creator fails only when it did not run.
        (Err(_), None) => unreachable!("the creator ran and its value was lost"),
    }
}

/// Like [`call`] for functions returning `Result`: only `Ok` values are
/// cached. The caller whose run failed gets its own error; a thread that
/// was waiting for that run runs `f` itself.
pub fn call_result<V, E, F>(site: &Site, key: Result<Vec<u8>>, f: F) -> Result<V, E>
where
    V: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<V, E>,
{
    let (Ok(key), Ok(cache)) = (key, site.cache()) else {
        return f();
    };
    let mut slot = Some(f);
    let mut failed = None;
    let got = cache.get_or_create(&key, || match slot.take() {
        Some(f) => f().map_err(|e| {
            failed = Some(e);
            NotRun
        }),
        None => Err(NotRun),
    });
    match (got, failed, slot.take()) {
        (Ok(v), _, _) => Ok(v),
        (Err(_), Some(e), _) => Err(e),
        (Err(_), None, Some(f)) => f(),
        (Err(_), None, None) => unreachable!("the creator ran and its outcome was lost"),
    }
}

/// Removes the cached value of one call (the key built from its
/// arguments), in every process that shares the cache.
pub fn invalidate(site: &Site, key: Result<Vec<u8>>) -> Result<()> {
    site.cache()?.invalidate(&key?, Invalidation::Hard)
}

/// The marker error of a memoized creator that did not produce a value.
#[derive(Debug)]
struct NotRun;

/// The runtime of memoized `async fn`s, through
/// [`AsyncCache::get_or_create`](super::AsyncCache::get_or_create):
/// [`call`](self::async_requires_the_carboy_feature_async::call),
/// `call_result` and `invalidate`, as their blocking namesakes, awaited.
///
/// Only with cargo feature `async`: the expansion of a decorated `async
/// fn` names this module, so that without the feature the compile error
/// says what is missing.
#[cfg(feature = "async")]
pub mod async_requires_the_carboy_feature_async {
    use std::future::Future;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::{NotRun, Site};
    use crate::cache::markers::Invalidation;
    use crate::error::Result;

    /// Awaits `f`'s future through the site's cache under `key`: the
    /// cached value when fresh, else `f`'s, created once across tasks,
    /// threads and processes. Uncached when there is no cache for the site
    /// or it fails.
    pub async fn call<V, F, Fut>(site: &Site, key: Result<Vec<u8>>, f: F) -> V
    where
        V: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let (Ok(key), Ok(cache)) = (key, site.cache()) else {
            return f().await;
        };
        let cache = cache.to_async();
        let mut slot = Some(f);
        let taken = &mut slot;
        let got = cache
            .get_or_create(&key, move || {
                let f = taken.take();
                async move {
                    match f {
                        Some(f) => Ok(f().await),
                        None => Err(NotRun),
                    }
                }
            })
            .await;
        match (got, slot.take()) {
            (Ok(v), _) => v,
            // The cache failed before running `f`, or another task's run
            // of it failed: run it here.
            (Err(_), Some(f)) => f().await,
            (Err(_), None) => unreachable!("the creator ran and its value was lost"),
        }
    }

    /// Like [`call`] for functions returning `Result`: only `Ok` values are
    /// cached. The caller whose run failed gets its own error; a task that
    /// was waiting for that run runs `f` itself.
    pub async fn call_result<V, E, F, Fut>(
        site: &Site,
        key: Result<Vec<u8>>,
        f: F,
    ) -> std::result::Result<V, E>
    where
        V: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
    {
        let (Ok(key), Ok(cache)) = (key, site.cache()) else {
            return f().await;
        };
        let cache = cache.to_async();
        let mut slot = Some(f);
        let mut failed = None;
        let (taken, failure) = (&mut slot, &mut failed);
        let got = cache
            .get_or_create(&key, move || {
                let f = taken.take();
                async move {
                    match f {
                        Some(f) => f().await.map_err(|e| {
                            *failure = Some(e);
                            NotRun
                        }),
                        None => Err(NotRun),
                    }
                }
            })
            .await;
        match (got, failed, slot.take()) {
            (Ok(v), _, _) => Ok(v),
            (Err(_), Some(e), _) => Err(e),
            (Err(_), None, Some(f)) => f().await,
            (Err(_), None, None) => unreachable!("the creator ran and its outcome was lost"),
        }
    }

    /// Removes the cached value of one call, in every process that shares
    /// the cache; the write runs on a helper thread.
    pub async fn invalidate(site: &Site, key: Result<Vec<u8>>) -> Result<()> {
        let cache = site.cache()?.to_async();
        cache.invalidate(&key?, Invalidation::Hard).await
    }
}
