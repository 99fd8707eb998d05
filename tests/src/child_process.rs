//! The one way these tests run a helper process they talk to in lines:
//! [`ChildProcess`] starts a binary (`carboy-test-child`,
//! `carboy-cache-child`) with its stdin and stdout piped, reads its stdout
//! lines on a thread into a channel so that every wait has a deadline,
//! writes lines to its stdin (a start signal, a command), and at the end
//! waits for a successful exit or kills it. A child still running when its
//! `ChildProcess` is dropped is killed and reaped.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

/// A running helper process.
pub struct ChildProcess {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout lines, unless they go to a channel shared with others
    /// ([`start_sharing`](Self::start_sharing)).
    lines: Option<Receiver<(usize, String)>>,
    timeout: Duration,
}

impl ChildProcess {
    /// How long [`next_line`](Self::next_line) waits by default: only a
    /// child that is stuck (the failure these tests look for) reaches it.
    pub const DEADLINE: Duration = Duration::from_secs(60);

    /// Starts `bin` with `args`; named in messages by the binary's file
    /// name and the arguments.
    pub fn run(bin: &str, args: &[&str]) -> ChildProcess {
        let name = std::path::Path::new(bin)
            .file_name()
            .map_or(bin.into(), |n| n.to_string_lossy());
        let mut command = Command::new(bin);
        command.args(args);
        ChildProcess::start(command, &format!("{name} {}", args.join(" ")))
    }

    /// Starts `command` with stdin and stdout piped (stderr as `command`
    /// says: inherited unless set), named `what` in messages.
    pub fn start(command: Command, what: &str) -> ChildProcess {
        let (tx, rx) = channel();
        let mut child = ChildProcess::spawn(command, what, 0, tx);
        child.lines = Some(rx);
        child
    }

    /// Like [`start`](Self::start), but the child's stdout lines go to
    /// `lines` as `(tag, line)`, beside those of other children.
    pub fn start_sharing(
        command: Command,
        what: &str,
        tag: usize,
        lines: &Sender<(usize, String)>,
    ) -> ChildProcess {
        ChildProcess::spawn(command, what, tag, lines.clone())
    }

    fn spawn(
        mut command: Command,
        what: &str,
        tag: usize,
        tx: Sender<(usize, String)>,
    ) -> ChildProcess {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((tag, line)).is_err() {
                    break;
                }
            }
        });
        ChildProcess {
            what: what.to_string(),
            stdin: child.stdin.take(),
            child,
            lines: None,
            timeout: ChildProcess::DEADLINE,
        }
    }

    /// Makes [`next_line`](Self::next_line) wait `timeout` instead of
    /// [`DEADLINE`](Self::DEADLINE).
    pub fn with_timeout(mut self, timeout: Duration) -> ChildProcess {
        self.timeout = timeout;
        self
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child is (its command line), for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Writes `line` to the child's stdin; panics if it cannot.
    pub fn say(&mut self, line: &str) {
        self.try_say(line)
            .unwrap_or_else(|e| panic!("{}: writing {line:?} to its stdin: {e}", self.what));
    }

    /// Writes `line` to the child's stdin, which may have gone.
    pub fn try_say(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush())
    }

    /// The next line, or `None` once the child closed stdout. Past the
    /// timeout, kills the child and panics: it is stuck.
    pub fn next_line(&mut self) -> Option<String> {
        let lines = self.lines.as_ref().expect("the child's lines are shared");
        match lines.recv_timeout(self.timeout) {
            Ok((_, line)) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr_now();
                panic!(
                    "{}: no output for {:?}: stuck (killed it){stderr}",
                    self.what, self.timeout
                )
            }
        }
    }

    /// The next line, as the reply to `to` (for messages); panics, with
    /// how the child exited, if it closed stdout instead.
    pub fn reply(&mut self, to: &str) -> String {
        match self.next_line() {
            Some(line) => line,
            None => {
                let status = self.child.wait();
                let stderr = self.stderr_now();
                panic!(
                    "{}: no reply to {to:?}: it closed stdout and exited with {status:?}{stderr}",
                    self.what
                )
            }
        }
    }

    /// Waits for the next line and asserts it is `want`.
    pub fn expect_line(&mut self, want: &str) {
        let line = self.reply(&format!("(waiting for {want:?})"));
        assert_eq!(line, want, "{} said something else", self.what);
    }

    /// The lines the child printed that were not read yet and have
    /// arrived, without waiting.
    pub fn pending_lines(&self) -> Vec<String> {
        let lines = self.lines.as_ref().expect("the child's lines are shared");
        lines.try_iter().map(|(_, line)| line).collect()
    }

    /// Closes the child's stdin and waits for it to exit successfully;
    /// returns the lines it printed that were not read yet (none when its
    /// lines are shared).
    pub fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        if self.lines.is_some() {
            while let Some(line) = self.next_line() {
                rest.push(line);
            }
        }
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.what));
        if !status.success() {
            let stderr = self.stderr_now();
            panic!(
                "{} failed ({status}); last line {:?}{stderr}",
                self.what,
                rest.last()
            );
        }
        rest
    }

    /// Kills the child with SIGKILL and reaps it; returns how it ended
    /// and the lines it printed that were not read yet.
    pub fn kill(mut self) -> (ExitStatus, Vec<String>) {
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("reap {}: {e}", self.what));
        let lines = match &self.lines {
            Some(_) => self.pending_lines(),
            None => Vec::new(),
        };
        (status, lines)
    }

    /// The child's stderr so far, for failure messages, if it is piped.
    fn stderr_now(&mut self) -> String {
        let mut text = String::new();
        match self.child.stderr.take() {
            Some(mut err) => {
                let _ = err.read_to_string(&mut text);
                format!("; stderr: {text}")
            }
            None => text,
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
