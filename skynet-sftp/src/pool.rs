//! Sessions: opening one (TCP with timeout, SSH handshake, host key, auth, SFTP channel) and
//! a pool so that N workers transfer at once, each on its own SSH session.
//!
//! libssh2 serialises everything on a session behind one lock, so sharing a session between
//! workers would make them take turns; one session per worker keeps them parallel. Sessions
//! are opened lazily, up to `pool_size`; a worker beyond that waits for one to come back.
//! A session that failed with a lost connection is dropped, never returned to the pool.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use skynet_core::error::ConnError;
use ssh2::{Session, Sftp};

use crate::config::SftpConfig;
use crate::errors::{classify, is_kex_failure, Op};

/// One authenticated SSH session with its SFTP channel.
pub(crate) struct Link {
    pub(crate) sftp: Sftp,
    // Declared after `sftp` so that the SFTP channel is shut down before the session.
    pub(crate) session: Session,
    /// A handle on the socket, to cut it before dropping a dead session: libssh2 tries to
    /// close the channel politely on drop, which would wait out the timeout on a silent peer.
    tcp: TcpStream,
}

/// Interval of SSH keepalives (sent on use when a session has been quiet that long).
const KEEPALIVE_SECS: u32 = 15;

impl Link {
    pub(crate) fn open(cfg: &SftpConfig) -> Result<Link, ConnError> {
        let server = cfg.server();
        // A key exchange cut short by a dropped connection (a server restarting) fails with
        // the same code as two sides that share no algorithm; a mismatch repeats on a fresh
        // connection, a drop does not (it then fails as a lost connection, or succeeds). Taken
        // for a setup error, the drop ended a `sync` in the middle of an outage.
        let (session, tcp_handle) = match handshake(cfg) {
            Err(Handshake::Failed(e)) if is_kex_failure(&e) => handshake(cfg),
            first => first,
        }
        .map_err(|e| match e {
            Handshake::Failed(e) => classify(&e, Op::Handshake, &server, None),
            Handshake::Conn(e) => e,
        })?;
        crate::hostkey::verify(&session, cfg)?;
        crate::auth::authenticate(&session, cfg)?;
        session.set_keepalive(true, KEEPALIVE_SECS);
        let sftp = session.sftp().map_err(|e| {
            let err = classify(&e, Op::Other, &server, None);
            if err.kind == skynet_core::error::ErrorKind::ConnectionLost {
                err
            } else {
                ConnError::setup(format!(
                    "{server}: the server does not offer the SFTP subsystem: {}",
                    e.message()
                ))
            }
        })?;
        Ok(Link {
            sftp,
            session,
            tcp: tcp_handle,
        })
    }

    /// Drops a session presumed dead without waiting on the peer.
    pub(crate) fn kill(self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
        drop(self);
    }
}

/// Why a handshake did not happen: the TCP connection (already classified), or libssh2.
enum Handshake {
    Conn(ConnError),
    Failed(ssh2::Error),
}

/// A TCP connection and an SSH session on it, past the handshake (host key not checked yet),
/// with a handle on the socket.
fn handshake(cfg: &SftpConfig) -> Result<(Session, TcpStream), Handshake> {
    let server = cfg.server();
    let tcp = connect_tcp(cfg).map_err(Handshake::Conn)?;
    let tcp_handle = tcp.try_clone().map_err(|e| {
        Handshake::Conn(ConnError::connection_lost(format!("{server}: socket: {e}")))
    })?;
    let mut session = Session::new().map_err(Handshake::Failed)?;
    session.set_tcp_stream(tcp);
    // Bounds every blocking libssh2 call, so a silent peer surfaces as a timeout
    // (→ ConnectionLost) instead of a hang.
    session.set_timeout(timeout_ms(cfg.timeout));
    crate::hostkey::prefer_known_types(&session, cfg);
    session.handshake().map_err(Handshake::Failed)?;
    Ok((session, tcp_handle))
}

fn timeout_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

fn connect_tcp(cfg: &SftpConfig) -> Result<TcpStream, ConnError> {
    let server = cfg.server();
    let addrs = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| ConnError::connection_lost(format!("{server}: cannot resolve host: {e}")))?;
    let mut last: Option<std::io::Error> = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, cfg.timeout) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                // TCP keepalive notices a peer that vanished while we wait on it.
                let sock = socket2::SockRef::from(&tcp);
                let ka = socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(KEEPALIVE_SECS as u64))
                    .with_interval(Duration::from_secs(5));
                let _ = sock.set_tcp_keepalive(&ka);
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ConnError::connection_lost(match last {
        Some(e) => format!("{server}: connect failed: {e}"),
        None => format!("{server}: host has no address"),
    }))
}

struct State {
    idle: Vec<Link>,
    /// Sessions in existence (idle or checked out) or being opened.
    total: usize,
    /// Bumped by `reset`: leases from an older generation are dropped on return, because
    /// they were opened before the connection was found lost.
    generation: u64,
}

pub(crate) struct Pool {
    cfg: SftpConfig,
    state: Mutex<State>,
    freed: Condvar,
}

/// A session checked out of the pool; returned on drop unless marked broken.
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    link: Option<Link>,
    generation: u64,
    /// True when the session came from the idle list (it may have died while idle).
    pub(crate) reused: bool,
}

impl Lease<'_> {
    pub(crate) fn link(&self) -> &Link {
        // Invariant: `link` is Some until drop or `discard`, both of which consume the lease.
        self.link
            .as_ref()
            .expect("lease holds a link until dropped")
    }
    /// Drops the session instead of returning it (after a lost connection).
    pub(crate) fn discard(mut self) {
        if let Some(link) = self.link.take() {
            link.kill();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        let stale = match self.link.take() {
            Some(link) if st.generation == self.generation => {
                st.idle.push(link);
                None
            }
            other => {
                st.total = st.total.saturating_sub(1);
                other
            }
        };
        drop(st);
        self.pool.freed.notify_one();
        // Opened before a reset: presumed dead, cut without waiting on the peer.
        if let Some(link) = stale {
            link.kill();
        }
    }
}

impl Pool {
    pub(crate) fn new(cfg: SftpConfig) -> Pool {
        Pool {
            cfg,
            state: Mutex::new(State {
                idle: Vec::new(),
                total: 0,
                generation: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn config(&self) -> &SftpConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only counters behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle session, or a new one if fewer than `pool_size` exist, else waits for one.
    pub(crate) fn checkout(&self) -> Result<Lease<'_>, ConnError> {
        let mut st = self.lock();
        loop {
            if let Some(link) = st.idle.pop() {
                // Sends a keepalive if one is due; an error means the socket is already dead.
                if link.session.keepalive_send().is_err() {
                    st.total = st.total.saturating_sub(1);
                    link.kill();
                    continue;
                }
                return Ok(Lease {
                    pool: self,
                    link: Some(link),
                    generation: st.generation,
                    reused: true,
                });
            }
            if st.total < self.cfg.pool_size.max(1) {
                st.total += 1;
                let generation = st.generation;
                drop(st);
                return match Link::open(&self.cfg) {
                    Ok(link) => Ok(Lease {
                        pool: self,
                        link: Some(link),
                        generation,
                        reused: false,
                    }),
                    Err(e) => {
                        self.lock().total -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            st = self
                .freed
                .wait_timeout(st, Duration::from_secs(1))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Forgets every idle session and marks the checked-out ones for dropping on return:
    /// after a lost connection they are all presumed dead.
    pub(crate) fn reset(&self) {
        let mut st = self.lock();
        let idle = std::mem::take(&mut st.idle);
        st.total = st.total.saturating_sub(idle.len());
        st.generation += 1;
        drop(st);
        self.freed.notify_all();
        for link in idle {
            link.kill();
        }
    }
}
