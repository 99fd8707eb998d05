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
    state: Mutex<State>,
    /// Blocking followers wait here.
    done: Condvar,
    /// Threads that joined as followers.
    followers: std::sync::atomic::AtomicUsize,
}

/// A flight's outcome and its async followers, under one lock: a follower
/// that finds no outcome registers its waker before the leader can take
/// the wakers, so none is missed.
struct State {
    outcome: Option<Outcome>,
    /// Async followers (feature `async`), woken with the blocking ones so
    /// that both fronts can follow one flight. Each follower keeps the
    /// index of its slot and replaces its waker there when polled again,
    /// so registering is O(1) whatever the herd's size.
    wakers: Vec<std::task::Waker>,
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
            state: Mutex::new(State {
                outcome: None,
                wakers: Vec::new(),
            }),
            done: Condvar::new(),
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
        let wakers = {
            let mut state = self.flight.state.lock();
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        self.flight.done.notify_all();
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
        let mut state = self.flight.state.lock();
        loop {
            if let Some(o) = state.outcome.as_ref() {
                return o.clone();
            }
            self.flight.done.wait(&mut state);
        }
    }

    /// Waits for the leader's outcome without blocking the thread.
    #[cfg(feature = "async")]
    pub(crate) fn outcome(self) -> impl std::future::Future<Output = Outcome> {
        // This follower's slot in the flight's wakers, once registered.
        let mut slot: Option<usize> = None;
        std::future::poll_fn(move |cx| {
            let mut state = self.flight.state.lock();
            if let Some(o) = state.outcome.as_ref() {
                return std::task::Poll::Ready(o.clone());
            }
            // No outcome yet, so the wakers were not taken: the slot is
            // still this follower's.
            match slot.and_then(|i| state.wakers.get_mut(i)) {
                Some(w) => {
                    if !w.will_wake(cx.waker()) {
                        w.clone_from(cx.waker());
                    }
                }
                None => {
                    slot = Some(state.wakers.len());
                    state.wakers.push(cx.waker().clone());
                }
            }
            std::task::Poll::Pending
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

    /// Async followers, each polled twice before the leader ends (as a
    /// runtime may): each is woken once, and each then sees the outcome.
    #[cfg(feature = "async")]
    #[test]
    fn async_followers_register_once_and_are_woken_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Poll, Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let flights = Flights::default();
        let Join::Lead(leader) = flights.join(b"k") else {
            panic!("first joiner must lead")
        };
        let mut followers = Vec::new();
        for _ in 0..100 {
            let Join::Follow(f) = flights.join(b"k") else {
                panic!("later joiners must follow")
            };
            let count = Arc::new(Count(AtomicUsize::new(0)));
            followers.push((Box::pin(f.outcome()), count));
        }
        for _ in 0..2 {
            for (f, count) in &mut followers {
                let waker = Waker::from(Arc::clone(count));
                let pending = f.as_mut().poll(&mut Context::from_waker(&waker));
                assert!(pending.is_pending());
            }
        }
        assert_eq!(flights.followers(b"k"), 100);
        leader.finish(Outcome::Created(Arc::from(&b"v"[..])));
        for (f, count) in &mut followers {
            assert_eq!(count.0.load(Ordering::Relaxed), 1, "woken exactly once");
            let waker = Waker::from(Arc::clone(count));
            match f.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(Outcome::Created(v)) => assert_eq!(&*v, b"v"),
                _ => panic!("a woken follower must see the created value"),
            }
        }
    }
}
