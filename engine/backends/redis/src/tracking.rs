//! The markers namespace's change stamp, from redis's server-assisted
//! client-side caching (`CLIENT TRACKING`, redis 6 and later).
//!
//! A listener thread keeps one connection (RESP2) that is its own
//! redirect target: `CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX
//! <the namespace's key prefix>`, then `SUBSCRIBE __redis__:invalidate`.
//! redis then publishes, on that channel, the keys under the prefix that
//! any client changed, and those it evicted (`maxmemory`) or expired, or
//! `null` when a database is flushed. Each message moves the stamp.
//!
//! **Why the stamp moves only after a change is visible.** In `BCAST`
//! mode redis gathers the changed keys while commands run and publishes
//! them before it next waits for input (`beforeSleep`), after the
//! commands that made the changes have run, and before it writes their
//! replies. A marker read after the listener took the message finds the
//! change.
//!
//! **When messages may have been lost**, the stamp gives a new value on
//! every read, so the cache reads its markers from the server each time:
//! while the listener is not subscribed (before its first connection,
//! after an error, a closed connection, a `CLIENT KILL`, a reply missing
//! for longer than `cache.command_timeout_ms`), and it moves once more
//! when tracking is on again. One connection carries both the tracking
//! and the subscription, so no half of it can die unnoticed. An idle
//! listener pings every `cache.command_timeout_ms`, so a connection cut
//! without a word is noticed within about twice that.
//!
//! **Cluster.** The markers namespace's keys share one hash slot (its
//! hash tag). The listener follows `MOVED` to the master that holds the
//! slot and tracks there; while idle it checks every
//! `cache.command_timeout_ms`, on a second connection, that the node
//! still serves the slot; when it no longer does (a failover, a slot
//! moved) it reconnects, moving the stamp. Between the move and that check
//! the writes go to a node nobody tracks: that is this backend's window in
//! a cluster (engine/DESIGN.md, "Invalidation markers on a backend that
//! evicts").
//!
//! **Other processes.** A change made by another process is seen once
//! this process's listener has read its message: redis writes it no later
//! than the reply to the change, so the window is its delivery (a
//! loopback or network hop and a thread wake-up). Writes made through this
//! process's markers backends move the stamp themselves once redis has
//! answered them, so a second manager in the same process sees them at
//! once. [`Tracker::sync`] (`RedisFactory::sync_invalidations`) closes
//! the window on demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redis::{Client, Connection, ConnectionAddr, ProtocolVersion, RedisError, RedisResult};

use crate::server::{Server, failure};
use crate::settings::Settings;

/// The pub/sub channel of invalidation messages in RESP2.
const CHANNEL: &str = "__redis__:invalidate";
/// The longest pause between two connection attempts of a listener whose
/// server is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the listener thread and the readers of the stamp share.
#[derive(Debug, Default)]
struct Shared {
    stamp: AtomicU64,
    /// Tracking is on and the listener is reading its messages.
    up: AtomicBool,
    /// Set when the [`Tracker`] is dropped: the thread ends.
    stop: AtomicBool,
    /// The `#sync:` keys seen in messages since a [`Tracker::sync`] began
    /// waiting, and how many times the listener went down.
    seen: Mutex<Seen>,
    changed: Condvar,
    /// `<prefix>{<namespace>}#sync:`: the start of [`Tracker::sync`]'s
    /// keys (a marker's key never starts so: those are `…}:ns:…`).
    sync_prefix: Vec<u8>,
}

#[derive(Debug, Default)]
struct Seen {
    keys: Vec<Vec<u8>>,
    waiting: usize,
    downs: u64,
}

impl Shared {
    fn bump(&self) {
        self.stamp.fetch_add(1, Ordering::AcqRel);
    }

    fn set_up(&self) {
        // Tracking is on from here: a marker read after this bump is
        // covered by the messages.
        self.bump();
        self.up.store(true, Ordering::Release);
    }

    fn set_down(&self) {
        self.up.store(false, Ordering::Release);
        self.bump();
        let mut seen = self.seen.lock();
        seen.downs += 1;
        self.changed.notify_all();
    }

    /// One invalidation message: `keys` is `None` for a flush.
    /// A message naming only [`Tracker::sync`] keys (no marker changed)
    /// leaves the stamp alone.
    fn message(&self, keys: Option<Vec<Vec<u8>>>) {
        let is_sync = |k: &Vec<u8>| k.starts_with(&self.sync_prefix);
        let only_sync = keys
            .as_ref()
            .is_some_and(|k| !k.is_empty() && k.iter().all(is_sync));
        if !only_sync {
            self.bump();
        }
        let mut seen = self.seen.lock();
        if seen.waiting > 0 {
            let synced: Vec<Vec<u8>> = keys.into_iter().flatten().filter(is_sync).collect();
            if !synced.is_empty() {
                seen.keys.extend(synced);
                self.changed.notify_all();
            }
        }
    }
}

/// What marks a [`Tracker::sync`] key.
const SYNC: &[u8] = b"#sync:";

/// The change stamp of one tracked key prefix, and its listener thread
/// (ended when the last tracker handle is dropped).
#[derive(Debug)]
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    /// `<prefix>{<namespace>}`: the tracked prefix.
    tagged: Vec<u8>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

/// Every live tracker of this process, by configuration and prefix: two
/// factories with equal settings share one listener, and a write through
/// either moves the stamp both read.
fn registry() -> &'static Mutex<HashMap<String, Weak<Tracker>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<Tracker>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

impl Tracker {
    /// The tracker of `tagged` (`<prefix>{<namespace>}`) on `settings`'s
    /// servers, shared with every other opener in this process; starts its
    /// listener (and tries its first connection, within the timeouts)
    /// when there was none.
    pub(crate) fn open(settings: &Settings, tagged: Vec<u8>) -> Arc<Tracker> {
        let id = format!("{}|{}", settings.identity(), crate::keys::hex(&tagged));
        let mut trackers = registry().lock();
        trackers.retain(|_, t| t.strong_count() > 0);
        if let Some(t) = trackers.get(&id).and_then(Weak::upgrade) {
            return t;
        }
        let mut sync_prefix = tagged.clone();
        sync_prefix.extend_from_slice(SYNC);
        let shared = Arc::new(Shared {
            sync_prefix,
            ..Shared::default()
        });
        let listener = Listener {
            shared: Arc::clone(&shared),
            settings: settings.clone(),
            tagged: tagged.clone(),
        };
        // The first connection in the opener's thread, so that a server
        // that is up is tracked from the first call on.
        let first = listener.connect();
        let spawned = std::thread::Builder::new()
            .name("carboy-redis-tracking".into())
            .spawn(move || listener.run(first.ok()));
        if spawned.is_err() {
            // No thread: the stamp never holds still (every read re-reads
            // the markers), which is correct, only slower.
            shared.set_down();
        }
        let tracker = Arc::new(Tracker { shared, tagged });
        trackers.insert(id, Arc::downgrade(&tracker));
        tracker
    }

    /// The stamp: steady while tracking is on and nothing under the
    /// prefix changed; a new value on every read while it is not.
    pub(crate) fn stamp(&self) -> u128 {
        let s = &self.shared;
        if s.up.load(Ordering::Acquire) {
            u128::from(s.stamp.load(Ordering::Acquire))
        } else {
            u128::from(s.stamp.fetch_add(1, Ordering::AcqRel).wrapping_add(1))
        }
    }

    /// Moves the stamp: a write made through this process, once redis
    /// answered it.
    pub(crate) fn bump(&self) {
        self.shared.bump();
    }

    /// True while tracking is on.
    pub(crate) fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// Returns once every change that redis had made under the prefix
    /// before this call is reflected in the stamp: writes a key under the
    /// prefix and waits for its message (redis publishes in order). Also
    /// returns when the listener goes down (the stamp then moves on every
    /// read anyway). An error when the write fails or no message came
    /// within three command timeouts and a connect timeout.
    pub(crate) fn sync(&self, server: &Server, namespace: &str) -> carboy::Result<()> {
        if !self.is_up() {
            return Ok(());
        }
        let mut token = [0u8; 8];
        getrandom::fill(&mut token).map_err(|e| {
            failure(
                &server.settings.display,
                namespace,
                "sync invalidations",
                RedisError::from(std::io::Error::other(e.to_string())),
            )
        })?;
        let mut key = self.tagged.clone();
        key.extend_from_slice(SYNC);
        key.extend_from_slice(crate::keys::hex(&token).as_bytes());
        let downs = {
            let mut seen = self.shared.seen.lock();
            seen.waiting += 1;
            seen.downs
        };
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(1).arg("PX").arg(60_000);
        let wrote = server.query::<()>(namespace, "SET (sync invalidations)", &set);
        // Long enough for a cluster listener to notice a moved slot (it
        // checks every command timeout) and connect to the new master.
        let s = &server.settings;
        let deadline = Instant::now() + s.command_timeout * 3 + s.connect_timeout;
        let mut seen = self.shared.seen.lock();
        let outcome = loop {
            if let Err(e) = wrote {
                break Err(e);
            }
            if let Some(i) = seen.keys.iter().position(|k| *k == key) {
                seen.keys.swap_remove(i);
                break Ok(());
            }
            if seen.downs != downs {
                break Ok(());
            }
            if self
                .shared
                .changed
                .wait_until(&mut seen, deadline)
                .timed_out()
            {
                break Err(failure(
                    &server.settings.display,
                    namespace,
                    "sync invalidations",
                    RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no invalidation message for the sync key",
                    )),
                ));
            }
        };
        seen.waiting -= 1;
        if seen.waiting == 0 {
            seen.keys.clear();
        }
        outcome
    }
}

/// The listener thread's side.
struct Listener {
    shared: Arc<Shared>,
    settings: Settings,
    tagged: Vec<u8>,
}

/// A tracking connection, and in a cluster a second one to the same node
/// that checks it still serves the slot.
struct Tracked {
    conn: Connection,
    probe: Option<Connection>,
}

impl Listener {
    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Connects, tracks, listens; again after each failure (pausing up to
    /// [`MAX_BACKOFF`] between attempts) until the tracker is dropped.
    fn run(self, mut first: Option<Tracked>) {
        let mut pause = Duration::from_millis(10);
        while !self.stopped() {
            let tracked = match first.take() {
                Some(t) => Ok(t),
                None => self.connect(),
            };
            match tracked {
                Ok(t) => {
                    pause = Duration::from_millis(10);
                    let _ = self.listen(t);
                }
                Err(_) => {
                    // Not a synchronisation: a reconnection's back-off,
                    // woken early when the tracker is dropped.
                    let mut seen = self.shared.seen.lock();
                    let _ = self.shared.changed.wait_for(&mut seen, pause);
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
            if self.shared.up.load(Ordering::Acquire) {
                self.shared.set_down();
            }
        }
        self.shared.set_down();
    }

    /// A probe key in the tracked slot.
    fn probe_key(&self) -> Vec<u8> {
        let mut k = self.tagged.clone();
        k.extend_from_slice(b"#probe");
        k
    }

    /// A RESP2 connection to `info` with the configured timeouts.
    fn open(&self, info: &redis::ConnectionInfo) -> RedisResult<Connection> {
        let info = info.clone().set_redis_settings(
            info.redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP2),
        );
        let c = Client::open(info)?.get_connection_with_timeout(self.settings.connect_timeout)?;
        c.set_read_timeout(Some(self.settings.command_timeout))?;
        c.set_write_timeout(Some(self.settings.command_timeout))?;
        Ok(c)
    }

    /// A connection to the node that serves the tracked prefix: the
    /// server, or the cluster master holding its slot (following `MOVED`
    /// from each seed node in turn).
    fn node(&self) -> RedisResult<(Connection, redis::ConnectionInfo)> {
        let probe = self.probe_key();
        let mut last = None;
        for seed in &self.settings.nodes {
            let mut info = seed.clone();
            for _ in 0..3 {
                let mut c = match self.open(&info) {
                    Ok(c) => c,
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                };
                if !self.settings.cluster {
                    return Ok((c, info));
                }
                match redis::cmd("EXISTS").arg(&probe).query::<i64>(&mut c) {
                    Ok(_) => return Ok((c, info)),
                    Err(e) => {
                        let Some((host, port)) = e.redirect_node() else {
                            last = Some(e);
                            break;
                        };
                        info = info.set_addr(ConnectionAddr::Tcp(host.to_string(), port));
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from(std::io::Error::other("no redis node to track on"))
        }))
    }

    /// Connects and turns tracking on; the stamp moves and holds still
    /// from here while messages come.
    fn connect(&self) -> RedisResult<Tracked> {
        let (mut conn, info) = self.node()?;
        let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut conn)?;
        // Named, so that `CLIENT LIST` shows what it is.
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("carboy-tracking")
            .query::<()>(&mut conn)?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("REDIRECT")
            .arg(id)
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&self.tagged)
            .query::<()>(&mut conn)?;
        let probe = if self.settings.cluster {
            Some(self.open(&info)?)
        } else {
            None
        };
        // Subscribed by hand: a `PubSub` handle would unsubscribe when
        // dropped, and this connection moves to the listener thread.
        conn.send_packed_command(&redis::cmd("SUBSCRIBE").arg(CHANNEL).get_packed_command())?;
        let confirmed = conn.recv_response()?;
        let ok = matches!(&confirmed, redis::Value::Array(v)
            if matches!(v.first(), Some(redis::Value::BulkString(b)) if b.as_slice() == b"subscribe"));
        if !ok {
            return Err(RedisError::from(std::io::Error::other(format!(
                "unexpected reply to SUBSCRIBE {CHANNEL}: {confirmed:?}"
            ))));
        }
        self.shared.set_up();
        Ok(Tracked { conn, probe })
    }

    /// Reads messages until the connection fails, the node stops serving
    /// the slot, or the tracker is dropped.
    fn listen(&self, mut t: Tracked) -> RedisResult<()> {
        let probe_key = self.probe_key();
        let every = self.settings.command_timeout;
        let mut checked = Instant::now();
        let mut pubsub = t.conn.as_pubsub();
        loop {
            if self.stopped() {
                return Ok(());
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    if msg.get_channel_name() == CHANNEL {
                        let keys: Option<Vec<Vec<u8>>> = msg.get_payload().unwrap_or(None);
                        self.shared.message(keys);
                    }
                }
                Err(e) if e.is_timeout() => {
                    // Idle: is the connection still there?
                    let _: Vec<redis::Value> = pubsub.ping()?;
                }
                Err(e) => return Err(e),
            }
            // In a cluster: does the node still serve the slot? (A
            // `MOVED` reply is an error: reconnect.)
            if let Some(probe) = &mut t.probe
                && checked.elapsed() >= every
            {
                redis::cmd("EXISTS").arg(&probe_key).query::<i64>(probe)?;
                checked = Instant::now();
            }
        }
    }
}
