//! Test-only: interrupting a thread blocked in a system call, so that tests
//! can check that blocking lock calls survive `EINTR`.
//!
//! A no-op handler for `SIGUSR2` is installed *without* `SA_RESTART`, so a
//! blocking `fcntl(F_OFD_SETLKW)` or `flock` interrupted by it returns
//! `EINTR` instead of being restarted by the kernel. Nothing else in the
//! test process uses `SIGUSR2`.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};

static HANDLED: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// Held by each test that signals, so that [`handled`] counts only its own
/// signals.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock()
}

extern "C" fn count_signal(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// A thread that [`interrupt`] can signal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target(libc::pthread_t);

/// The calling thread, as a signal target.
pub(crate) fn this_thread() -> Target {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    Target(unsafe { libc::pthread_self() })
}

/// How many `SIGUSR2`s the handler has run for, in the whole process.
pub(crate) fn handled() -> usize {
    HANDLED.load(Ordering::SeqCst)
}

/// Sends `SIGUSR2` to `target`, which must still be running (the caller
/// joins it only afterwards), installing the handler first.
pub(crate) fn interrupt(target: Target) {
    INSTALL.call_once(|| {
        // SAFETY: sigaction is plain old data, for which all-zero bytes are
        // valid (an empty mask, no flags: in particular no SA_RESTART).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = count_signal as *const () as libc::sighandler_t;
        // SAFETY: `action` is a valid sigaction whose handler is an
        // `extern "C" fn(c_int)` that only touches an atomic, which is
        // async-signal-safe; the old action is not asked for (null).
        let rc = unsafe { libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaction: {}", std::io::Error::last_os_error());
    });
    // SAFETY: `target.0` names a thread that has not been joined yet (the
    // caller's contract), so the pthread_t is valid; SIGUSR2 has a handler.
    let rc = unsafe { libc::pthread_kill(target.0, libc::SIGUSR2) };
    assert_eq!(rc, 0, "pthread_kill: error {rc}");
}
