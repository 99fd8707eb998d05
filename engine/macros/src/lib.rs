//! carboy's function-caching attribute macros: [`macro@cache_region`] and
//! [`macro@cached`]. Use them through the `carboy` crate
//! (`#[carboy::cache_region("short_term")]`, `#[carboy::cached]`), whose
//! docs have runnable examples; this crate only rewrites functions into
//! calls of `carboy::cache::memo`.
//!
//! # The expansion
//!
//! For
//!
//! ```text
//! /// Loads a user.
//! #[carboy::cache_region("short_term")]
//! pub fn load(user: u32, lang: &str) -> User { body }
//! ```
//!
//! the macro emits three items in place of the function:
//!
//! ```text
//! #[doc(hidden)]
//! static __CARBOY_SITE_load: ::carboy::cache::memo::Site =
//!     ::carboy::cache::memo::Site::region("short_term", concat!(module_path!(), "::", "load"));
//!
//! /// Loads a user.
//! pub fn load(user: u32, lang: &str) -> User {
//!     fn __carboy_inner(user: u32, lang: &str) -> User { body }
//!     let _ = ::carboy::cache::memo::key::<u32>;  // one per argument: rustc
//!     let _ = ::carboy::cache::memo::key::<&str>; // points at a type that is not Serialize
//!     let __carboy_key = ::carboy::cache::memo::key(&(&user, &lang,));
//!     ::carboy::cache::memo::call(&__CARBOY_SITE_load, __carboy_key, move || __carboy_inner(user, lang))
//! }
//!
//! /// Removes the cached value of `load` for these arguments, in every
//! /// process sharing the cache.
//! pub fn load_invalidate(user: u32, lang: &str) -> ::carboy::Result<()> {
//!     ::carboy::cache::memo::invalidate(&__CARBOY_SITE_load, ::carboy::cache::memo::key(&(&user, &lang,)))
//! }
//! ```
//!
//! * The body moves unchanged into the inner function, so `return` and `?`
//!   keep their meaning, and a recursive call of `load` inside it goes
//!   through the cache.
//! * A function whose return type's last path segment is `Result` (`Result`,
//!   `io::Result`, `carboy::Result`, …) calls `memo::call_result` instead:
//!   only `Ok` values are cached, and an `Err` reaches the caller unchanged.
//! * The values live in the namespace named after the function's path
//!   (`my_crate::users::load`), in the region named by the attribute.
//!   [`macro@cached`] without `namespace` does the same with the manager's
//!   default settings. With `namespace = "users"` several functions share
//!   one namespace, so there the key is the function's path followed by
//!   the arguments, `key(&(concat!(module_path!(), "::", "load"), (&user,
//!   &lang,)))`: two functions never read each other's values.
//! * The key is the postcard encoding of the arguments, as a tuple of
//!   references: every argument type must implement `serde::Serialize`, and
//!   the return type `Serialize + DeserializeOwned`. A key longer than the
//!   cache's key length is stored as its SHA-256.
//! * The `Site` static is shared by the function and its `_invalidate`
//!   twin; it remembers the cache resolved for the installed manager and
//!   looks it up again after each `carboy::cache::install`.
//! * Attributes stay on the function (doc comments included); `#[cfg]` and
//!   lint attributes (`allow`, `warn`, `deny`, `forbid`; `expect` as
//!   `allow`) are copied to the static and to `_invalidate`.
//!
//! When no manager is installed, the region is not configured, or the cache
//! fails, the function runs uncached (see `carboy::cache::memo`).
//!
//! # `async fn`
//!
//! An `async fn` is accepted where a plain one is (a free function, with the
//! same rules for its arguments and return type), and cached the same way:
//! same namespace, same key, `Result`s cached only when `Ok`. The expansion
//! differs in three places:
//!
//! ```text
//! pub async fn load(user: u32, lang: &str) -> User {
//!     async fn __carboy_inner(user: u32, lang: &str) -> User { body }
//!     // …the key, as above…
//!     ::carboy::cache::memo::async_requires_the_carboy_feature_async::call(
//!         &__CARBOY_SITE_load, __carboy_key, move || __carboy_inner(user, lang)).await
//! }
//!
//! pub async fn load_invalidate(user: u32, lang: &str) -> ::carboy::Result<()> {
//!     ::carboy::cache::memo::async_requires_the_carboy_feature_async::invalidate(
//!         &__CARBOY_SITE_load, ::carboy::cache::memo::key(&(&user, &lang,))).await
//! }
//! ```
//!
//! * The value is awaited through carboy's async front
//!   (`AsyncCache::get_or_create`): one creator per key across tasks,
//!   threads and processes, the other tasks await it without blocking a
//!   worker thread. It is runtime-agnostic (no runtime is named), and the
//!   future is `Send` when the body's is.
//! * `<name>_invalidate` is an `async fn` too: the removal is written on
//!   one of carboy's helper threads, not on the executor's.
//! * **The carboy feature `async` is required.** The runtime of async
//!   memoization exists only with it, and the expansion names it by a
//!   module whose name says so; without the feature the build fails with
//!   ``cannot find `async_requires_the_carboy_feature_async` in `memo` ``.
//!   Enable it: `carboy = { version = "…", features = ["async"] }`.
//!
//! # What is rejected, with a compile error on the offending tokens
//!
//! | input | why |
//! |---|---|
//! | anything but a free `fn` with a body | the expansion adds module-level items |
//! | `self` receivers, `Self` in the signature | methods and associated functions live in an `impl` block, where the `static` cannot go, and `self` is not part of the key |
//! | generic type or const parameters, `impl Trait` arguments | one namespace keyed by arguments alone would mix `f::<A>` and `f::<B>` (lifetime parameters are fine) |
//! | `impl Trait` return types | cached values are deserialized into the return type, which must be named |
//! | arguments that are not a plain name (`(a, b): (u32, u32)`) | the expansion needs a name to pass on; destructure in the body (`mut name` is fine) |
//! | `&mut` arguments | a cache hit skips the body, so its changes to the argument would not happen |
//! | `const`, `unsafe`, `extern` functions | the memo runtime calls a plain function or `async fn` |
//! | unknown or repeated attribute arguments, non-literal values, an empty or `carboy:` namespace, a zero, negative or fractional `expire`, a region name that is empty or has a `.` | caught here rather than silently running uncached |
//!
//! Not detected: an associated function *without* `Self` in its signature
//! fails to compile with rustc's "associated `static` items are not
//! allowed" rather than this crate's message.
//!
//! # Known limits
//!
//! * Two decorated functions with the same name and module path (possible
//!   only for functions nested in different function bodies) share one
//!   namespace and keys; rename one.
//! * The expansion names `::carboy`: the dependency must not be renamed,
//!   and the carboy crate itself can use the macros only in its
//!   integration tests, examples and doc tests.
//! * Only the arguments' encodings tell calls apart: arguments whose
//!   `Serialize` leaves out what the result depends on (a skipped field)
//!   share a value.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Caches a function's results in a region of the installed
/// `carboy::cache::CacheManager`: `#[carboy::cache_region("short_term")]`.
///
/// The namespace is the function's path, the key its arguments; an
/// `<name>_invalidate` function with the same arguments is generated
/// beside it. An `async fn` is cached through carboy's async front (cargo
/// feature `async` of `carboy`) and its `_invalidate` is async too. See
/// the [crate docs](crate) for the expansion and the `carboy` crate's
/// re-export for a runnable example.
#[proc_macro_attribute]
pub fn cache_region(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cache_region(attr.into(), item.into()).into()
}

/// Caches a function's results in a namespace of the installed
/// `carboy::cache::CacheManager`, with its default settings:
/// `#[carboy::cached]`, `#[carboy::cached(namespace = "users", expire =
/// 60)]`.
///
/// * `namespace`: a string literal; default: the function's path.
/// * `expire`: seconds, a positive integer literal; default: the
///   manager's expiry.
///
/// An `<name>_invalidate` function with the same arguments is generated
/// beside it. An `async fn` is cached through carboy's async front (cargo
/// feature `async` of `carboy`) and its `_invalidate` is async too. See
/// the [crate docs](crate) for the expansion and the `carboy` crate's
/// re-export for a runnable example.
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(attr.into(), item.into()).into()
}

#[cfg(test)]
mod tests;
