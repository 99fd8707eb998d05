//! Waiting for a lock another process holds, with a notice and a limit.
//!
//! The engine blocks in `flock` while another process writes or holds a
//! snapshot. A shell user should not stare at a silent terminal, and a
//! script should not hang forever: once carboy has waited a second it says
//! for whom (the holders' pids, from `/proc/locks`), and after `--wait`
//! seconds it gives up with status 3. Time spent working under a lock of
//! its own (finishing a crashed writer's commit, rebuilding an index after
//! a reboot) is not waiting, and never counts.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::failure::Status;

/// How long to wait before saying what carboy waits for.
const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// How long to wait for a lock: `None` waits forever.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wait(Option<Duration>);

impl FromStr for Wait {
    type Err = String;

    fn from_str(s: &str) -> Result<Wait, String> {
        let secs: f64 = s
            .parse()
            .map_err(|_| format!("`{s}` is not a number of seconds"))?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("`{s}` is not a number of seconds of 0 or more"));
        }
        Ok(Wait(
            (secs > 0.0).then(|| Duration::from_secs_f64(secs.min(1e9))),
        ))
    }
}

/// Runs `acquire`, a call that may block on the lock of the namespace at
/// `file`, while a watchdog thread says what it waits for after a second
/// and, once it has waited `wait`, ends the process with status 3.
///
/// Wrap only the call that takes the lock, not the work done under it, so
/// that a slow compaction or verification is never cut short. The watchdog
/// ends the process only while `acquire` has not returned, and only while
/// another process holds the lock (where `/proc/locks` tells; elsewhere,
/// whenever `acquire` takes longer than `wait`). `acquire`'s return waits
/// for the watchdog's decision, so carboy never exits after the call that
/// took the lock returned.
pub fn for_lock<T>(file: &Path, wait: Wait, acquire: impl FnOnce() -> T) -> T {
    let done = Mutex::new(false);
    let cv = Condvar::new();
    std::thread::scope(|scope| {
        scope.spawn(|| watchdog(file, wait, &done, &cv));
        // Tells the watchdog to stop when `acquire` returns, or unwinds.
        let _stop = Stop {
            done: &done,
            cv: &cv,
        };
        acquire()
    })
}

/// Sets the watchdog's `done` flag when dropped.
struct Stop<'a> {
    done: &'a Mutex<bool>,
    cv: &'a Condvar,
}

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_all();
    }
}

/// How often the watchdog looks at who holds the lock.
const POLL: Duration = Duration::from_millis(250);

fn watchdog(file: &Path, wait: Wait, done: &Mutex<bool>, cv: &Condvar) {
    let lock = lock_path(file);
    let me = std::process::id();
    let mut waiting_since: Option<Instant> = None;
    let mut noticed = false;
    let mut finished = done.lock().unwrap_or_else(PoisonError::into_inner);
    // `acquire` may have returned before this thread ran.
    while !*finished {
        finished = cv
            .wait_timeout(finished, POLL)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if *finished {
            break;
        }
        // Blocked on another process, or busy under a lock of our own
        // (recovering a crashed writer's commit, rebuilding an index after
        // a reboot)? Only the first counts as waiting.
        let holders = lock_holders(&lock);
        let others: Vec<u32> = holders
            .as_deref()
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|&pid| pid != me)
            .collect();
        if holders.is_some() && others.is_empty() {
            waiting_since = None;
            continue;
        }
        let waited = waiting_since.get_or_insert_with(Instant::now).elapsed() + POLL;
        let who = match others.as_slice() {
            [] => "another process".to_string(),
            [pid] => format!("process {pid}"),
            pids => format!(
                "processes {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if let Some(limit) = wait.0
            && waited >= limit
        {
            let find = match others.as_slice() {
                [] => format!("`fuser -v {}`", lock.display()),
                pids => format!(
                    "`ps -p {}`",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            // Still holding `done`: the caller of `for_lock` cannot go on
            // while the process exits.
            eprintln!(
                "carboy: {}: {who} held the lock for {:.1} s; gave up. Run the command again \
                 later, raise --wait, or see what holds it: {find}",
                file.display(),
                limit.as_secs_f64(),
            );
            std::process::exit(Status::Failure as i32);
        }
        if !noticed && waited >= NOTICE_AFTER {
            noticed = true;
            let until = match wait.0 {
                Some(limit) => format!("giving up after {:.1} s", limit.as_secs_f64()),
                None => "waiting until it is released".to_string(),
            };
            eprintln!(
                "carboy: {}: waiting for the lock {who} holds (a writer, a snapshot or an \
                 export); {until} (see --wait)",
                file.display()
            );
        }
    }
}

/// The lock file of the data file at `file`: its path plus `.lock`.
fn lock_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// The processes holding a `flock` on `lock`, from Linux's `/proc/locks`
/// (granted locks only, not waiters); `None` where it cannot be read.
fn lock_holders(lock: &Path) -> Option<Vec<u32>> {
    let meta = std::fs::metadata(lock).ok()?;
    let dev = meta.dev();
    // glibc's encoding of dev_t; /proc/locks prints major:minor in hex.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    Some(parse_proc_locks(&text, &id))
}

/// The pids of granted FLOCK locks on the file `id` (`MAJ:MIN:INODE`) in
/// the text of `/proc/locks`.
fn parse_proc_locks(text: &str, id: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            // A waiter's line has "->" before the lock type.
            if fields.next()? != "FLOCK" {
                return None;
            }
            let pid = fields.nth(2)?.parse().ok()?;
            (fields.next()? == id).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_zero_as_forever() {
        assert_eq!("0".parse::<Wait>(), Ok(Wait(None)));
        assert_eq!(
            "1.5".parse::<Wait>(),
            Ok(Wait(Some(Duration::from_millis(1500))))
        );
        assert!("-1".parse::<Wait>().is_err());
        assert!("soon".parse::<Wait>().is_err());
        assert!("inf".parse::<Wait>().is_err());
    }

    #[test]
    fn proc_locks_lines_name_the_holders_not_the_waiters() {
        let text = "\
1: FLOCK  ADVISORY  WRITE 4242 00:2f:1234 0 EOF
1: -> FLOCK  ADVISORY  WRITE 4343 00:2f:1234 0 EOF
2: FLOCK  ADVISORY  READ 77 00:2f:1234 0 EOF
3: POSIX  ADVISORY  WRITE 88 00:2f:1234 0 EOF
4: FLOCK  ADVISORY  WRITE 99 00:2f:9999 0 EOF
";
        assert_eq!(parse_proc_locks(text, "00:2f:1234"), vec![4242, 77]);
        assert_eq!(parse_proc_locks("", "00:2f:1234"), Vec::<u32>::new());
    }

    #[test]
    fn returns_what_the_call_returns_without_waiting() {
        // The watchdog must not sleep out a poll when the call returned
        // before it started: 20 calls, far less than 20 polls.
        let t = Instant::now();
        for i in 0..20 {
            let v = for_lock(Path::new("x"), Wait(Some(Duration::from_secs(60))), || i);
            assert_eq!(v, i);
        }
        assert!(t.elapsed() < POLL * 10, "{:?}", t.elapsed());
    }
}
