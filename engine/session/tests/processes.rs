//! Real processes over real HTTP: two demo servers on one data directory
//! share sessions without losing an update (8 clients at once on one
//! session, alternating servers), and the demo's routes behave as
//! documented across processes; a session's lock excludes another process
//! and dies with its own (kill -9). The test binary re-executes itself as
//! the servers (harness = false).

mod support;

use support::{Client, runtime, spawn_demo};

const SECRET: &str = "a test secret of at least sixteen bytes";

fn main() {
    if support::run_child_if_asked() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(HOLD_FLAG) {
        hold_key_lock(&args[2], &args[3]);
        return;
    }
    support::run_tests(&[
        (
            "two_servers_on_one_data_dir_lose_no_update",
            two_servers_on_one_data_dir_lose_no_update,
        ),
        (
            "login_and_logout_across_processes",
            login_and_logout_across_processes,
        ),
        (
            "cookie_sessions_in_a_demo_process",
            cookie_sessions_in_a_demo_process,
        ),
        (
            "a_session_lock_excludes_other_processes_and_dies_with_its_own",
            a_session_lock_excludes_other_processes_and_dies_with_its_own,
        ),
    ]);
}

const CLIENTS: usize = 8;
const REQUESTS_EACH: usize = 25;

fn two_servers_on_one_data_dir_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let a = spawn_demo(&["--data-dir", data, "--secret", SECRET]);
    let b = spawn_demo(&["--data-dir", data, "--secret", SECRET]);
    runtime().block_on(async {
        let client = Client::new();
        let first = client.get(&format!("{}/count", a.url), None).await;
        assert_eq!((first.status.as_u16(), first.body.as_str()), (200, "1"));
        let cookie = first.cookie().expect("a new session sets its cookie");
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, cookie) = (client.clone(), cookie.clone());
            let urls = [a.url.clone(), b.url.clone()];
            tasks.push(tokio::spawn(async move {
                for r in 0..REQUESTS_EACH {
                    let url = format!("{}/count", urls[(c + r) % 2]);
                    let got = client.get(&url, Some(&cookie)).await;
                    assert_eq!(got.status.as_u16(), 200, "{}", got.body);
                    // The session exists: no new cookie.
                    assert!(got.set_cookies.is_empty(), "{:?}", got.set_cookies);
                }
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
        let last = client.get(&format!("{}/count", b.url), Some(&cookie)).await;
        assert_eq!(
            last.body,
            (CLIENTS * REQUESTS_EACH + 2).to_string(),
            "every increment of both servers is counted"
        );
    });
}

fn login_and_logout_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let a = spawn_demo(&["--data-dir", data, "--secret", SECRET]);
    let b = spawn_demo(&["--data-dir", data, "--secret", SECRET]);
    runtime().block_on(async {
        let client = Client::new();
        let health = client.get(&format!("{}/health", a.url), None).await;
        assert_eq!(health.body, "ok");
        assert!(health.set_cookies.is_empty());
        let first = client.get(&format!("{}/count", a.url), None).await;
        let before = first.cookie().unwrap();
        client.get(&format!("{}/count", b.url), Some(&before)).await;
        // Login on A: new id, data kept.
        let login = client
            .post(&format!("{}/login", a.url), Some(&before))
            .await;
        assert_eq!(login.body, "2");
        let after = login.cookie().expect("login sends the new id");
        assert_ne!(after, before);
        // B sees the new id's data; the pre-login cookie is a fresh session.
        assert_eq!(
            client
                .get(&format!("{}/count", b.url), Some(&after))
                .await
                .body,
            "3"
        );
        let stale = client.get(&format!("{}/count", b.url), Some(&before)).await;
        assert_eq!(stale.body, "1", "the pre-login id is gone");
        assert_ne!(stale.cookie().unwrap(), before, "never adopted");
        // Logout on B: stored data gone, expiring cookie.
        let logout = client
            .post(&format!("{}/logout", b.url), Some(&after))
            .await;
        assert_eq!(logout.status.as_u16(), 200);
        let expiring = &logout.set_cookies[0];
        assert!(expiring.contains("Max-Age=0"), "{expiring}");
        let reuse = client.get(&format!("{}/count", a.url), Some(&after)).await;
        assert_eq!(reuse.body, "1", "the logged-out session is gone");
    });
}

fn cookie_sessions_in_a_demo_process() {
    let a = spawn_demo(&["--type", "cookie", "--secret", SECRET]);
    runtime().block_on(async {
        let client = Client::new();
        let mut cookie = None::<String>;
        for n in 1..=3 {
            let got = client
                .get(&format!("{}/count", a.url), cookie.as_deref())
                .await;
            assert_eq!(got.body, n.to_string());
            cookie = Some(got.cookie().expect("a cookie session re-sends its cookie"));
        }
        assert!(
            !cookie.as_ref().unwrap().contains("count"),
            "signed, base64: {cookie:?}"
        );
    });
}

const HOLD_FLAG: &str = "--hold-key-lock";

/// Child: locks `key` of namespace `sessions` in `dir`, says so, and holds
/// the lock until killed (it waits for stdin, which never closes first).
fn hold_key_lock(dir: &str, key: &str) {
    use std::io::{BufRead, Write};
    let manager = carboy::cache::CacheManager::builder()
        .backend("file")
        .data_dir(dir)
        .build()
        .expect("manager");
    let cache = manager.get_cache("sessions").expect("cache");
    let _held = cache.lock_key(key).expect("lock");
    println!("held");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn a_session_lock_excludes_other_processes_and_dies_with_its_own() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let id = carboy_session::SessionId::generate().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([HOLD_FLAG, data, id.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let cache = |timeout| {
        carboy::cache::CacheManager::builder()
            .backend("file")
            .data_dir(data)
            .lock_timeout(timeout)
            .build()
            .unwrap()
            .get_cache("sessions")
            .unwrap()
    };
    let short = cache(Duration::from_millis(200));
    let err = short.lock_key(id.as_str()).unwrap_err();
    assert_eq!(err.kind(), carboy::ErrorKind::LockTimeout);
    // kill -9: the kernel releases the dead process's byte-range lock.
    child.kill().unwrap();
    child.wait().unwrap();
    let patient = cache(Duration::from_secs(10));
    let held = patient.lock_key(id.as_str());
    assert!(held.is_ok(), "{held:?}");
}
