//! The handshake against a real OpenSSH sshd whose connection is cut mid-way (a server
//! restarting, a flaky link): that is an outage to wait out, never a setup error that ends a
//! `sync` (libssh2 reports a connection dropped during key exchange with the same code as two
//! sides that share no algorithm).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use skynet_core::connection::BlockingConnection;
use skynet_core::error::ErrorKind;
use skynet_sftp::testing::SshServer;
use skynet_sftp::{HostKeyPolicy, SftpConnection};

/// A loopback relay to `port`. The first `cut` connections are closed once the server has
/// sent `after` bytes (its banner and part of the key exchange); later ones pass whole.
struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Relay {
    fn start(port: u16, cut: usize, after: usize) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let relay_port = listener.local_addr().expect("relay address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let limit = if n < cut { Some(after) } else { None };
                pump(client, server, limit);
            }
        });
        Relay {
            port: relay_port,
            accepted,
        }
    }
}

/// Copies both ways; with `limit`, closes both sides once that many server bytes passed.
fn pump(client: TcpStream, server: TcpStream, limit: Option<usize>) {
    let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = c_in.read(&mut buf) {
            if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut passed = 0usize;
        while let Ok(n) = s_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            let n = match limit {
                Some(l) => n.min(l.saturating_sub(passed)),
                None => n,
            };
            if n == 0 || c_out.write_all(&buf[..n]).is_err() {
                break;
            }
            passed += n;
            if limit.is_some_and(|l| passed >= l) {
                break;
            }
        }
        let _ = c_out.shutdown(Shutdown::Both);
        let _ = s_in.shutdown(Shutdown::Both);
    });
}

/// A configuration reaching the server through `relay`, recording its host key anew.
fn through(server: &SshServer, relay: &Relay, name: &str) -> SftpConnection {
    let root = server.remote_dir(name);
    let known = server.scratch_dir().join(format!("known_hosts_{name}"));
    std::fs::write(&known, "").expect("known_hosts");
    let mut cfg = server
        .config(&root)
        .with_known_hosts(&known)
        .with_host_key_policy(HostKeyPolicy::AcceptNew);
    cfg.port = relay.port;
    SftpConnection::new(cfg)
}

/// Cut after the server's banner and 200 bytes of its key exchange: past the banner, before
/// the keys are agreed. (Cut earlier, libssh2 says "Failed getting banner"; later, the
/// failure is in authentication: both already read as a lost connection.)
const MID_KEX: usize = 200;

#[test]
fn a_connection_cut_during_key_exchange_is_an_outage_not_a_setup_error() {
    let server = SshServer::start();
    let relay = Relay::start(server.port(), 1, MID_KEX);
    let conn = through(&server, &relay, "cut-once");
    conn.connect()
        .unwrap_or_else(|e| panic!("one dropped key exchange failed the connect: {e:?}"));
    assert_eq!(
        relay.accepted.load(Ordering::SeqCst),
        2,
        "not retried on a fresh connection"
    );
}

#[test]
fn a_server_sharing_no_key_exchange_algorithm_is_a_setup_error() {
    let mut server = SshServer::start();
    // Post-quantum hybrid key exchange: OpenSSH offers it, libssh2 does not.
    server.restrict_kex("sntrup761x25519-sha512@openssh.com");
    let relay = Relay::start(server.port(), 0, 0);
    let conn = through(&server, &relay, "no-common-kex");
    let err = conn
        .connect()
        .expect_err("connected without a common algorithm");
    assert_eq!(err.kind, ErrorKind::Setup, "{err}");
    assert!(err.message.contains("no algorithm in common"), "{err}");
}
