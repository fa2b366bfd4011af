//! Throughput against a private sshd on loopback: one large file, then many small files with
//! several workers. Run: `cargo run --release -p skynet-sftp --features testing --example bench`.

use std::sync::Arc;
use std::time::Instant;

use skynet_core::connection::{BlockingConnection, SourceFile};
use skynet_core::relpath::RelPath;
use skynet_sftp::testing::SshServer;
use skynet_sftp::SftpConnection;

fn main() {
    let server = SshServer::start();
    let scratch = tempfile::tempdir().expect("tmp");
    let big = scratch.path().join("big");
    let size = 512 * 1024 * 1024;
    std::fs::write(&big, vec![7u8; size]).expect("write");
    let big = SourceFile::stat(&big).expect("stat");
    let root = server.remote_dir("bench");
    let conn = Arc::new(SftpConnection::new(server.config(&root).with_pool_size(4)));
    conn.connect().expect("connect");
    let t = Instant::now();
    conn.send(&big, &RelPath::from_bytes(b"big").expect("path"))
        .expect("send");
    let s = t.elapsed().as_secs_f64();
    println!(
        "1 x {} MiB: {s:.2} s, {:.0} MiB/s",
        size >> 20,
        (size >> 20) as f64 / s
    );

    let n = 2000;
    let files: Vec<SourceFile> = (0..n)
        .map(|i| {
            let p = scratch.path().join(format!("s{i}"));
            std::fs::write(&p, vec![i as u8; 4096]).expect("write");
            SourceFile::stat(&p).expect("stat")
        })
        .collect();
    let files = Arc::new(files);
    let t = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (conn, files) = (Arc::clone(&conn), Arc::clone(&files));
            std::thread::spawn(move || {
                for i in (w..n).step_by(4) {
                    let to = RelPath::from_bytes(format!("small/{}/f{i}", i % 20).as_bytes())
                        .expect("path");
                    conn.send(&files[i], &to).expect("send");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    println!("{n} x 4 KiB, 4 workers: {:.2} s", t.elapsed().as_secs_f64());
}
