//! Real redis servers for the redis backend's tests: [`RedisServer`]
//! starts `redis-server` on a free loopback port in a temporary directory
//! (no persistence) and kills it when dropped, also when a test fails;
//! [`RedisCluster`] starts three of them with `--cluster-enabled yes` and
//! joins them with `redis-cli --cluster create`.
//!
//! When `redis-server` is not installed, [`RedisServer::start`] returns
//! `None` after printing why (the caller skips its test), unless `CI` is
//! set: then it panics naming the Debian package, so a CI run cannot pass
//! without the servers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server gets to answer PING after it starts.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// True when the redis binaries are installed; otherwise prints why the
/// calling test skips, or panics when `CI` is set.
fn redis_installed(test: &str) -> bool {
    let found = ["redis-server", "redis-cli"].iter().all(|bin| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{test}: redis-server or redis-cli is missing; CI needs the Debian package \
                 redis-server (.ci/run installs it)"
            );
        }
        eprintln!(
            "SKIPPED {test}: redis-server or redis-cli is not installed (Debian package \
             redis-server); set CI to make this a failure"
        );
    }
    found
}

/// A free loopback port (bound, then released), with its cluster bus port
/// (`port + 10000`) free too when `bus` is asked for.
fn free_port(bus: bool) -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = l.local_addr().expect("a bound address").port();
        if !bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port (with a free cluster bus port) in 100 tries");
}

/// True when the server on `port` answers PING.
fn pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// One running `redis-server`.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A server on a free loopback port, or `None` (the reason printed)
    /// when redis is not installed and `CI` is not set. `test` names the
    /// caller in that message.
    pub fn start(test: &str) -> Option<RedisServer> {
        RedisServer::start_with(test, &[])
    }

    /// [`start`](Self::start) with extra `redis-server` arguments
    /// (`["--maxmemory", "2mb"]`).
    pub fn start_with(test: &str, extra: &[&str]) -> Option<RedisServer> {
        if !redis_installed(test) {
            return None;
        }
        let bus = extra.contains(&"--cluster-enabled");
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(bus),
                dir: tempfile::tempdir().expect("a temporary directory for redis-server"),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
            };
            match server.launch() {
                Ok(()) => return Some(server),
                // The port was taken between the probe and the launch.
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start in 5 tries; last: {last}");
    }

    /// Starts the process on `self.port` and waits until it answers PING.
    fn launch(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if pings(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server on port {} exited with {status}: {text}",
                    self.port
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_DEADLINE:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `redis-cli -p <port> <args>` and returns its stdout; panics if
    /// it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli -p {} {args:?}: {}",
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the server, and waits until
    /// every thread is stopped, or running again ([`crate::signals`]).
    pub fn signal(&self, signal: &str) {
        crate::signals::signal(self.pid().expect("the server runs"), signal);
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)),
    /// empty.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => {
                    panic!("redis-server did not restart on its port: {why}")
                }
                // The old socket may linger for a moment.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) server too.
        self.kill();
    }
}

/// A three-master redis cluster on loopback ports.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three masters, no replicas, all slots assigned and the cluster's
    /// state `ok`; or `None` as [`RedisServer::start`].
    pub fn start(test: &str) -> Option<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(
                test,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )?);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(n.addr());
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = create.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        Some(cluster)
    }

    /// Waits until every node says `cluster_state:ok` with all 16384
    /// slots served (after a start or a node's restart); panics past
    /// the start deadline.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + START_DEADLINE;
        for n in &self.nodes {
            loop {
                let info = n.cli(&["cluster", "info"]);
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster is not ok on {}: {info}",
                    n.addr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Its nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`, to kill, stop or restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The index of the node that serves `slot`, from `CLUSTER NODES` as
    /// the first node sees it.
    pub fn owner_of(&self, slot: u16) -> usize {
        let text = self.nodes[0].cli(&["cluster", "nodes"]);
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(addr) = fields.get(1).and_then(|a| a.split('@').next()) else {
                continue;
            };
            let serves = fields.iter().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                return self
                    .nodes
                    .iter()
                    .position(|n| n.addr() == addr)
                    .unwrap_or_else(|| panic!("slot {slot} is served by unknown node {addr}"));
            }
        }
        panic!("no node serves slot {slot}: {text}")
    }

    /// `redis://h:p,redis://h:p,redis://h:p`: every node, for `cache.url`.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://{}", n.addr()))
            .collect::<Vec<_>>()
            .join(",")
    }
}
