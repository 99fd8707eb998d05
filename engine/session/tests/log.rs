//! A bad cookie is a fresh session *and a log line*: a `warn` event from
//! carboy_session for each tampered or garbled cookie, none for a good one.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use carboy_session::{SessionConfig, demo};
use support::{Client, serve};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Counts carboy_session's warnings.
struct Warnings(Arc<AtomicUsize>);

impl Subscriber for Warnings {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let m = event.metadata();
        if *m.level() == Level::WARN && m.target().starts_with("carboy_session") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_cookie_logs_a_warning() {
    let warnings = Arc::new(AtomicUsize::new(0));
    tracing::subscriber::set_global_default(Warnings(Arc::clone(&warnings)))
        .expect("the only subscriber of this test binary");
    let dir = tempfile::tempdir().unwrap();
    let sessions = SessionConfig::new()
        .data_dir(dir.path())
        .secret(["a test secret of at least sixteen bytes"])
        .build()
        .unwrap();
    let url = serve(demo::router(sessions)).await;
    let client = Client::new();
    let count = format!("{url}/count");
    let good = client.get(&count, None).await.cookie().unwrap();
    assert_eq!(client.get(&count, Some(&good)).await.body, "2");
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        0,
        "good cookies log nothing"
    );
    let truncated = good[..good.len() - 4].to_string();
    for bad in [truncated.as_str(), "beaker.session.id=garbage"] {
        assert_eq!(client.get(&count, Some(bad)).await.body, "1");
    }
    assert_eq!(warnings.load(Ordering::SeqCst), 2);
}
