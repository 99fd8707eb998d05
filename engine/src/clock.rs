//! Time, injected: the store asks a [`Clock`] for "now" when it checks or
//! stamps expiry, so tests advance a [`MockClock`] instead of sleeping.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn now_unix_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to. Clones share one time.
///
/// ```
/// use carboy::{Clock, MockClock};
/// use std::time::Duration;
///
/// let clock = MockClock::new(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_unix_ms(), 3_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct MockClock {
    now: Arc<AtomicU64>,
}

impl MockClock {
    /// A clock that reads `unix_ms` until moved.
    pub fn new(unix_ms: u64) -> MockClock {
        MockClock {
            now: Arc::new(AtomicU64::new(unix_ms)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, unix_ms: u64) {
        self.now.store(unix_ms, Ordering::SeqCst);
    }
}

impl Clock for MockClock {
    fn now_unix_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
