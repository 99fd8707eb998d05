//! In-process single flight: of the threads of one process that want to
//! create the same key at the same time, one (the *leader*) runs the
//! creator and the others wait for its outcome.
//!
//! This is the in-process half of the creation lock; the backend's
//! [`lock_creation`](super::Backend::lock_creation) is the cross-process
//! half. The algorithm that uses both is in `create.rs`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

/// What a leader's flight ended with.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// The creator succeeded; the encoded payload (codec bytes, no
    /// envelope), for followers to decode.
    Created(Arc<[u8]>),
    /// The creator failed with this error (an `Arc<E>`, type-erased).
    Failed(Arc<dyn Any + Send + Sync>),
    /// The leader waited `cache.lock_timeout` (this long) for the
    /// cross-process lock and, as `cache.on_lock_timeout = error` says,
    /// gave up: followers fail the same way.
    TimedOut(std::time::Duration),
    /// No value for the followers: the leader panicked, lost a race for the
    /// cross-process lock, or failed to reach the backend. Followers start
    /// over (and one of them leads).
    Retry,
}

struct Flight {
    outcome: Mutex<Option<Outcome>>,
    /// Blocking followers wait here.
    done: Condvar,
    /// Async followers (feature `async`) wait here: woken with the
    /// blocking ones, so both fronts can follow one flight.
    wakers: Mutex<Vec<std::task::Waker>>,
    /// Threads that joined as followers.
    followers: std::sync::atomic::AtomicUsize,
}

/// The flights of one namespace in this process.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Vec<u8>, Arc<Flight>>>,
}

/// The caller's part in a flight.
pub(crate) enum Join<'a> {
    /// Run the creator, then [`Leader::finish`].
    Lead(Leader<'a>),
    /// Someone else is creating; [`Follower::wait`] for the outcome.
    Follow(Follower),
}

/// The one thread creating a key. Dropping it unfinished (a panic in the
/// creator, an early return) ends the flight with [`Outcome::Retry`], so
/// the key is never wedged.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Vec<u8>,
    flight: Arc<Flight>,
    finished: bool,
}

/// A thread waiting for a leader.
pub(crate) struct Follower {
    flight: Arc<Flight>,
}

impl Flights {
    /// Joins the flight for `key`, leading it if there is none.
    pub(crate) fn join(&self, key: &[u8]) -> Join<'_> {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(key) {
            flight
                .followers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Join::Follow(Follower {
                flight: Arc::clone(flight),
            });
        }
        let flight = Arc::new(Flight {
            outcome: Mutex::new(None),
            done: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            followers: Default::default(),
        });
        map.insert(key.to_vec(), Arc::clone(&flight));
        Join::Lead(Leader {
            flights: self,
            key: key.to_vec(),
            flight,
            finished: false,
        })
    }

    /// True when some thread of this process is creating `key`.
    pub(crate) fn in_flight(&self, key: &[u8]) -> bool {
        self.map.lock().contains_key(key)
    }

    /// How many threads joined the current flight for `key` as followers.
    pub(crate) fn followers(&self, key: &[u8]) -> usize {
        self.map.lock().get(key).map_or(0, |f| {
            f.followers.load(std::sync::atomic::Ordering::Relaxed)
        })
    }
}

impl Leader<'_> {
    /// Ends the flight: followers wake with `outcome`.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        // Leave the map first, so a thread arriving from now on starts a
        // new flight (and reads the backend) instead of joining this one.
        self.flights.map.lock().remove(&self.key);
        *self.flight.outcome.lock() = Some(outcome);
        self.flight.done.notify_all();
        let wakers = std::mem::take(&mut *self.flight.wakers.lock());
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.end(Outcome::Retry);
    }
}

impl Follower {
    /// Waits for the leader's outcome.
    pub(crate) fn wait(self) -> Outcome {
        let mut outcome = self.flight.outcome.lock();
        loop {
            if let Some(o) = outcome.as_ref() {
                return o.clone();
            }
            self.flight.done.wait(&mut outcome);
        }
    }

    /// Waits for the leader's outcome without blocking the thread.
    #[cfg(feature = "async")]
    pub(crate) fn outcome(self) -> impl std::future::Future<Output = Outcome> {
        std::future::poll_fn(move |cx| {
            // The waker goes in before the outcome is looked at: a leader
            // that ends in between sets the outcome first, then wakes.
            {
                let mut wakers = self.flight.wakers.lock();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
            }
            match self.flight.outcome.lock().as_ref() {
                Some(o) => std::task::Poll::Ready(o.clone()),
                None => std::task::Poll::Pending,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_and_followers_see_its_outcome() {
        let flights = Flights::default();
        let Join::Lead(leader) = flights.join(b"k") else {
            panic!("first joiner must lead")
        };
        assert!(flights.in_flight(b"k"));
        let Join::Follow(follower) = flights.join(b"k") else {
            panic!("second joiner must follow")
        };
        std::thread::scope(|s| {
            let waiter = s.spawn(move || follower.wait());
            leader.finish(Outcome::Created(Arc::from(&b"v"[..])));
            match waiter.join().unwrap() {
                Outcome::Created(v) => assert_eq!(&*v, b"v"),
                _ => panic!("follower must see the created value"),
            }
        });
        assert!(!flights.in_flight(b"k"));
    }

    #[test]
    fn a_dropped_leader_ends_the_flight_with_retry() {
        let flights = Flights::default();
        let leader = flights.join(b"k");
        let Join::Follow(follower) = flights.join(b"k") else {
            panic!("second joiner must follow")
        };
        drop(leader);
        assert!(matches!(follower.wait(), Outcome::Retry));
        assert!(matches!(flights.join(b"k"), Join::Lead(_)));
    }
}
