//! The tokio runtimes the async tests run on (included by path: tokio is
//! a dev-dependency, out of reach of the `carboy_tests` library).

// Each test binary that includes this uses only some of it.
#![allow(dead_code)]

/// A multi-thread runtime with 2 workers (the CI machine's cores), time
/// and I/O drivers on.
pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a multi-thread tokio runtime")
}

/// A current-thread runtime, time and I/O drivers on: every task and the
/// test share one thread, so a call that blocks it stops them all.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}
