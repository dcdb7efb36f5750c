//! Hosts and stores: the embedded store takes one `refold run` at a time.

use std::time::{Duration, Instant};

use std::process::Stdio;

use refold_tests::{Running, Sandbox, fixtures, projections, refold, text};

/// A second `refold run` on the file a host serves is refused at once, naming the file and the
/// host's process, and changes nothing; once the first host is gone, a new one starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_host_on_one_embedded_store_is_refused() {
    let sandbox = Sandbox::new();
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("p"));
    let uri = sandbox.uri("one-host.db");
    let args = [
        "run",
        "--store",
        &uri,
        "--projections",
        &dir.to_string_lossy(),
    ];
    let mut first = Running::start(&args);
    let lock = sandbox.path("one-host.db.host-lock");
    let started = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.0.id().to_string() {
        assert!(first.alive(), "the first host exited");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first host never took its lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut second = refold()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second host");
    let started = Instant::now();
    while second.try_wait().expect("the second host").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = second.kill();
            panic!("a second host runs on the same file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = second.wait_with_output().expect("the second host's output");
    assert!(
        !output.status.success(),
        "the second host exited with success"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("is already served by another `refold run`")
            && stderr.contains(&format!("process {}", first.0.id()))
            && stderr.contains("one-host.db"),
        "{stderr}"
    );
    assert!(first.alive(), "the refused host disturbed the first");

    first.kill();
    let mut next = Running::start(&args);
    let started = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != next.0.id().to_string() {
        assert!(
            next.alive(),
            "a host could not start after the first one was killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the new host never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
