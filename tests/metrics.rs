//! `run --metrics ADDR`: Prometheus metrics at /metrics and `status --json` at /status, served
//! by the real binary while it mirrors local folders.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts a daemon with `start(addr)` on a free loopback port, and waits until its endpoint
/// answers. A port found free can be taken by another test before the daemon binds it: then
/// the daemon exits ("Address already in use"), or another server answers; try another port.
fn start_with_metrics(mut start: impl FnMut(&str) -> Daemon) -> (Daemon, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut daemon = start(&format!("127.0.0.1:{port}"));
        // Ours: our daemon says it listens there (another server on the port proves nothing),
        // and a daemon that exited ("Address already in use") ends the wait at once.
        let listening = format!("127.0.0.1:{port}/metrics");
        wait_until(Duration::from_secs(15), || {
            daemon.log_text().contains(&listening) || !daemon.is_running()
        });
        if daemon.is_running()
            && daemon.log_text().contains(&listening)
            && get(port, "/metrics").is_some_and(|(_, body)| body.contains("skynet_"))
        {
            return (daemon, port);
        }
        daemon.kill9();
    }
    panic!("no metrics endpoint answered on five ports");
}

/// `GET path` over HTTP/1.0: (status code, body), or None when nobody answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The value of the first sample named `name` whose labels contain every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_and_status_reflect_the_files_sent() {
    let s = Scratch::new();
    let (mut daemon, port) =
        start_with_metrics(|addr| s.run(&["--metrics", addr, "--settle", "0"]));

    const FILES: usize = 5;
    let mut total = 0u64;
    for i in 0..FILES {
        let content = vec![b'x'; 1000 * (i + 1)];
        total += content.len() as u64;
        write(&s.src, &format!("dir/f{i}.bin"), &content);
    }
    wait_converged(&s.src, &s.dst, true, Duration::from_secs(20))
        .unwrap_or_else(|d| panic!("not converged: {d}\n{}", daemon.log_text()));

    let mut metrics = String::new();
    let counted = wait_until(Duration::from_secs(10), || {
        let Some((200, body)) = get(port, "/metrics") else {
            return false;
        };
        metrics = body;
        sample(&metrics, "skynet_actions_done_total", &["kind=\"send\""])
            .is_some_and(|n| n >= FILES as f64)
    });
    assert!(counted, "done counter never reached {FILES}:\n{metrics}");

    let bytes = sample(&metrics, "skynet_bytes_sent_total", &[]).expect("bytes sent");
    assert!(
        bytes >= total as f64,
        "bytes sent {bytes} < {total}:\n{metrics}"
    );
    for state in ["pending", "in_flight", "held", "failed"] {
        let label = format!("state=\"{state}\"");
        assert!(
            sample(&metrics, "skynet_queue_actions", &[&label]).is_some(),
            "no {state} gauge:\n{metrics}"
        );
    }
    assert_eq!(
        sample(&metrics, "skynet_connected", &[]),
        Some(1.0),
        "{metrics}"
    );
    let observed =
        sample(&metrics, "skynet_action_duration_seconds_count", &[]).expect("histogram count");
    assert!(
        observed >= FILES as f64,
        "histogram count {observed}:\n{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "skynet_action_duration_seconds_bucket",
            &["le=\"+Inf\""]
        )
        .is_some(),
        "{metrics}"
    );
    // Every series names its mapping and destination.
    let dest_label = format!("destination=\"{}\"", s.dst.display());
    assert!(
        metrics
            .lines()
            .filter(|l| l.starts_with("skynet_"))
            .all(|l| l.contains("mapping=\"") && l.contains(&dest_label)),
        "{metrics}"
    );

    let (code, body) = get(port, "/status").expect("status answers");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    let mappings = status["mappings"].as_array().expect("mappings array");
    assert_eq!(mappings.len(), 1, "{body}");
    assert_eq!(mappings[0]["running"], true, "{body}");
    assert_eq!(mappings[0]["pending"], 0, "{body}");
    assert_eq!(get(port, "/nope").map(|(c, _)| c), Some(404));

    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    assert!(get(port, "/metrics").is_none(), "still serving after exit");
}

/// A send whose local file vanished (here: the command destination removes it and fails) is
/// counted in `skynet_sends_vanished`, never in the done or failed counters.
#[test]
fn a_vanished_send_is_counted_apart() {
    let s = Scratch::new();
    let program = script(s.dir.path(), "remove-and-fail.sh", "rm -- \"$1\"\nexit 1");
    let template = format!(
        "{} {{path}}",
        shell_words::quote(program.to_str().expect("utf-8 temp path"))
    );
    // Before the start, so that the catch-up scan queues it (a file written while the
    // watcher is being set up could be missed by both).
    write(&s.src, "gone.txt", b"removed during its send");
    let (mut daemon, port) = start_with_metrics(|addr| {
        s.spawn(&[
            "run",
            s.src_str(),
            "--exec",
            &template,
            "--metrics",
            addr,
            "--settle",
            "0",
        ])
    });
    let mut metrics = String::new();
    let counted = wait_until(Duration::from_secs(15), || {
        let Some((200, body)) = get(port, "/metrics") else {
            return false;
        };
        metrics = body;
        sample(&metrics, "skynet_sends_vanished_total", &[]) == Some(1.0)
    });
    assert!(
        counted,
        "vanished never counted:\n{metrics}\n{}",
        daemon.log_text()
    );
    assert_eq!(
        sample(&metrics, "skynet_actions_done_total", &["kind=\"send\""]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "skynet_actions_failed_total", &["kind=\"send\""]),
        Some(0.0),
        "{metrics}"
    );
    let (_, body) = get(port, "/status").expect("status answers");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(status["mappings"][0]["vanished"], 1, "{body}");
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// With `--keep-versions`, an overwrite keeps the old copy, counted in the metrics and in
/// `status` (issue 15).
#[test]
fn kept_versions_are_counted() {
    let s = Scratch::new();
    write(&s.src, "f.txt", b"first");
    let (mut daemon, port) = start_with_metrics(|addr| {
        s.run(&["--metrics", addr, "--settle", "0", "--keep-versions", "1h"])
    });
    let dst = s.dst.join("f.txt");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read(&dst)
            .is_ok_and(|b| b == b"first")),
        "{}",
        daemon.log_text()
    );
    write(&s.src, "f.txt", b"second");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read(&dst)
            .is_ok_and(|b| b == b"second")),
        "{}",
        daemon.log_text()
    );
    let mut metrics = String::new();
    let counted = wait_until(Duration::from_secs(10), || {
        metrics = get(port, "/metrics").map(|(_, b)| b).unwrap_or_default();
        sample(&metrics, "skynet_versions_kept", &[]) == Some(1.0)
    });
    assert!(counted, "{metrics}");
    let status = s.status();
    assert_eq!(status["mappings"][0]["versions_kept"], 1, "{status}");
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}
