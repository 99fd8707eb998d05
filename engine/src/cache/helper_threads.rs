//! carboy's helper threads: where the cache waits so that its callers do
//! not. A blocking caller's bounded wait for a creation lock (the helper
//! blocks on the lock, the caller on a channel with a deadline), and, with
//! feature `async`, every operation of the async front that can wait on
//! another process (a creation lock, a writer lock, an fsync).
//!
//! Threads are started on demand and kept, up to [`MAX_IDLE`] of them,
//! parked on a channel of their own; a job never waits in a queue behind
//! another (a job may hold a lock for as long as a creator runs).

use std::sync::mpsc;

use parking_lot::Mutex;

/// Idle threads kept for later jobs; more finish after their job.
const MAX_IDLE: usize = 16;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Parked threads, each waiting on its own channel.
static IDLE: Mutex<Vec<mpsc::SyncSender<Job>>> = Mutex::new(Vec::new());

/// Runs `job` on a helper thread at once: a parked one, or a new one.
pub(crate) fn run(job: impl FnOnce() + Send + 'static) {
    let mut job: Job = Box::new(job);
    loop {
        let parked = IDLE.lock().pop();
        let Some(thread) = parked else { break };
        // A rendezvous channel: the job is handed over only to a thread
        // that is waiting for it, never left in a buffer.
        match thread.send(job) {
            Ok(()) => return,
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    // If no thread can be had, the job is dropped: its channels close
    // unanswered, which its waiter reports as an error.
    let _ = std::thread::Builder::new()
        .name("carboy-cache-helper".into())
        .spawn(move || helper(job));
}

fn helper(first: Job) {
    first();
    loop {
        let (tx, rx) = mpsc::sync_channel::<Job>(0);
        {
            let mut idle = IDLE.lock();
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(tx);
        }
        match rx.recv() {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_at_once_even_while_others_block() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        // A job that holds its thread until told.
        run(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        started_rx.recv().unwrap();
        // Another job is not queued behind it.
        let (done_tx, done_rx) = mpsc::channel();
        run(move || done_tx.send(7).unwrap());
        assert_eq!(
            done_rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(7)
        );
        release_tx.send(()).unwrap();
    }
}
