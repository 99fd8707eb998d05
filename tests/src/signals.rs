//! Sending a job-control signal to a server process and waiting until the
//! kernel shows it took effect.
//!
//! `kill -STOP` returns once the signal is queued, not once the process is
//! stopped: in a multi-threaded server (memcached's workers, redis's I/O
//! threads) the group stop is begun by whichever thread dequeues the
//! signal, and until every thread has reached it another one may still
//! answer a request. A test that means "the server is stopped now" must
//! wait for that, so [`signal`] polls `/proc/<pid>/task/*/stat` until every
//! thread is in state `T` (after `STOP`) or none is (after `CONT`). This
//! reads the kernel's own state; it is not a sleep standing in for
//! synchronization.

use std::process::Command;
use std::time::{Duration, Instant};

/// How long the kernel may take to stop or continue every thread.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

/// Sends `signal` (`"STOP"`, `"CONT"`, `"TERM"`, …) to `pid` with
/// `kill`, and for `STOP` and `CONT` returns only once every thread of
/// the process is stopped, or none is. Panics, naming the process, if
/// `kill` fails or the state does not settle within ten seconds.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
    let want_stopped = match signal {
        "STOP" => true,
        "CONT" => false,
        _ => return,
    };
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let states = thread_states(pid);
        let settled = !states.is_empty()
            && states
                .iter()
                .all(|&s| (s == 'T' || s == 't') == want_stopped);
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not settle after SIG{signal} within {SETTLE_WITHIN:?}: \
             thread states {states:?}"
        );
        std::thread::yield_now();
    }
}

/// The scheduler state letter of each thread of `pid` (`R`, `S`, `T`, …);
/// empty if the process is gone.
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // "tid (comm) S ...": the command may hold spaces and
            // parentheses, so the state follows the last ')'.
            stat[stat.rfind(')')? + 1..].trim_start().chars().next()
        })
        .collect()
}
