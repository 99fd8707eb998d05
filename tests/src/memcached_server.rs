//! A real `memcached` for the tests: started on a free loopback port,
//! waited for until it answers `version`, killed when dropped (also when
//! the test fails and unwinds).
//!
//! When the `memcached` binary is missing, [`MemcachedServer::start`]
//! panics naming the Debian package if the environment has `CI` set, and
//! otherwise prints why and returns `None` (the test returns early).
//!
//! ```no_run
//! use carboy_tests::memcached_server::MemcachedServer;
//! let Some(server) = MemcachedServer::start() else { return };
//! let url = server.address(); // "127.0.0.1:PORT"
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How a server is started.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `-m`: memory for items, in megabytes (memcached's default is 64).
    pub memory_mb: u32,
    /// `-I`: the largest item (memcached's default is `1m`). The tests
    /// use `2m`: the conformance suite stores a 1 MiB value, which with
    /// its key and memcached's item header is just over `1m`.
    pub item_size: String,
    /// Further arguments (`-o slab_automove=0`, …).
    pub extra: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            memory_mb: 64,
            item_size: "2m".into(),
            extra: Vec::new(),
        }
    }
}

/// A running memcached, killed on drop.
#[derive(Debug)]
pub struct MemcachedServer {
    binary: PathBuf,
    options: ServerOptions,
    port: u16,
    child: Option<Child>,
}

/// The `memcached` binary on `PATH` (or in `/usr/bin`).
fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("memcached"))
        .find(|p| p.is_file())
}

/// True when this process runs as root (memcached then needs `-u root`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

impl MemcachedServer {
    /// A server with the default [`ServerOptions`]; `None` (after printing
    /// why) when memcached is not installed and `CI` is not set.
    pub fn start() -> Option<MemcachedServer> {
        MemcachedServer::start_with(ServerOptions::default())
    }

    /// A server started with `options`.
    pub fn start_with(options: ServerOptions) -> Option<MemcachedServer> {
        let Some(binary) = find_binary() else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "memcached is not installed, and CI is set: install the Debian package \
                     `memcached` (.ci/run does when the binary is missing)"
                );
            }
            eprintln!(
                "SKIPPED: memcached is not installed (install the Debian package `memcached` to \
                 run the memcached tests)"
            );
            return None;
        };
        let mut server = MemcachedServer {
            binary,
            options,
            port: 0,
            child: None,
        };
        let mut last = String::new();
        for _ in 0..10 {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return Some(server),
                // The port was taken between our probe and memcached's
                // bind: try another.
                Err(why) => last = why,
            }
        }
        panic!("memcached did not start: {last}");
    }

    /// Starts memcached on `self.port` and waits until it answers.
    fn launch(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.binary);
        command
            .args(["-l", "127.0.0.1", "-p", &self.port.to_string(), "-U", "0"])
            .args(["-m", &self.options.memory_mb.to_string()])
            .args(["-I", &self.options.item_size])
            .args(&self.options.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if running_as_root() {
            command.args(["-u", "root"]);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("memcached exited with {status}: {err}"));
            }
            if answers_version(self.socket()) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no answer on port {} within {READY_WITHIN:?}",
                    self.port
                ));
            }
            // Polling a port that is coming up; not a synchronization sleep.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn socket(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `127.0.0.1:PORT`, as `cache.url` takes it.
    pub fn address(&self) -> String {
        self.socket().to_string()
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Kills the server (SIGKILL) and reaps it: its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again, on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.launch() {
                Ok(()) => return,
                // The old socket may linger a moment.
                Err(why) if Instant::now() > deadline => panic!("memcached did not restart: {why}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server and waits until every
    /// thread is stopped, or running again ([`crate::signals`]).
    pub fn signal(&self, signal: &str) {
        crate::signals::signal(self.pid(), signal);
    }

    /// One `stats` value of the server (`evictions`, `curr_items`, …).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let mut stream = TcpStream::connect_timeout(&self.socket(), READY_WITHIN).ok()?;
        stream.set_read_timeout(Some(READY_WITHIN)).ok()?;
        stream.write_all(b"stats\r\n").ok()?;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.ends_with("END\r\n") {
            let n = stream.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

fn answers_version(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"version\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"VERSION"))
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) server too.
        self.kill();
    }
}
