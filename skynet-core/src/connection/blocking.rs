//! The same contract for backends written with blocking I/O (SFTP over libssh2), and the
//! adapter that runs them on tokio's blocking pool so that they never stall the runtime.

use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;

use async_trait::async_trait;

use super::{verify_size, Connection, RemoteEntry, SourceFile, Verification};
use crate::error::{ConnError, ErrorKind};
use crate::relpath::RelPath;

/// The same contract as [`Connection`], for backends written with blocking I/O.
pub trait BlockingConnection: Send + Sync + 'static {
    fn describe(&self) -> String;
    fn connect(&self) -> Result<(), ConnError>;
    fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError>;
    /// See [`Connection::send_batch_size`].
    fn send_batch_size(&self) -> usize {
        1
    }
    /// See [`Connection::send_batch`]; [`Blocking`] runs a whole batch in one blocking task.
    fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        let mut out = Vec::with_capacity(items.len());
        for (file, to) in items {
            if let Some(lost) = lost_connection(&out) {
                out.push(Err(lost));
                continue;
            }
            out.push(self.send(file, to));
        }
        out
    }
    fn delete(&self, path: &RelPath) -> Result<(), ConnError>;
    fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError>;
    /// See [`Connection::remove_empty_dir`].
    fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let _ = dir;
        Ok(false)
    }
    fn flush(&self) -> Result<(), ConnError> {
        Ok(())
    }
    fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let _ = near;
        Ok(())
    }
    /// See [`Connection::sweep_temps`].
    fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let _ = queued;
        Ok(0)
    }
    /// See [`Connection::stranded_temps`].
    fn stranded_temps(&self) -> bool {
        false
    }
    fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError>;
    fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError>;
    /// See [`Connection::download`].
    fn download(&self, path: &RelPath, out: &mut File) -> Result<u64, ConnError> {
        let bytes = self.read(path)?;
        write_all(out, &bytes)
    }
    fn list(&self) -> Result<Vec<RemoteEntry>, ConnError>;
    /// See [`Connection::verify`].
    fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        Ok(verify_size(file, path, self.stat(path)?))
    }
}

/// Writes `bytes` into the local copy (the default [`Connection::download`]).
pub(super) fn write_all(out: &mut File, bytes: &[u8]) -> Result<u64, ConnError> {
    use std::io::Write;
    out.write_all(bytes)
        .map_err(|e| ConnError::from_io("the local copy", &e))?;
    Ok(bytes.len() as u64)
}

/// The error of the last result when it was a lost connection: the rest of a batch is not
/// worth trying.
pub(super) fn lost_connection(done: &[Result<u64, ConnError>]) -> Option<ConnError> {
    match done.last() {
        Some(Err(e)) if e.kind == ErrorKind::ConnectionLost => {
            Some(ConnError::new(e.kind, e.message.clone()))
        }
        _ => None,
    }
}

/// Adapts a [`BlockingConnection`] to the async [`Connection`] by running each call on
/// tokio's blocking thread pool, so blocking backends never stall the runtime's workers.
pub struct Blocking<C>(pub Arc<C>);

impl<C> Blocking<C> {
    pub fn new(inner: C) -> Self {
        Blocking(Arc::new(inner))
    }
    pub fn inner(&self) -> &C {
        &self.0
    }
}

impl<C: BlockingConnection> Blocking<C> {
    async fn run<T, F>(&self, f: F) -> Result<T, ConnError>
    where
        T: Send + 'static,
        F: FnOnce(&C) -> Result<T, ConnError> + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(result) => result,
            Err(e) => Err(ConnError::new(
                ErrorKind::Transient,
                format!("{}: worker task failed: {e}", self.0.describe()),
            )),
        }
    }
}

#[async_trait]
impl<C: BlockingConnection> Connection for Blocking<C> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn connect(&self) -> Result<(), ConnError> {
        self.run(|c| c.connect()).await
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let (file, to) = (file.clone(), to.clone());
        self.run(move |c| c.send(&file, &to)).await
    }
    fn send_batch_size(&self) -> usize {
        self.0.send_batch_size()
    }
    /// The whole batch in one blocking task: one hand-off to the pool and back per batch
    /// instead of per file.
    async fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        let owned = items.to_vec();
        let n = items.len();
        match self.run(move |c| Ok(c.send_batch(&owned))).await {
            Ok(results) => results,
            Err(e) => (0..n)
                .map(|_| Err(ConnError::new(e.kind, e.message.clone())))
                .collect(),
        }
    }
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        let path = path.clone();
        self.run(move |c| c.delete(&path)).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        let (from, to) = (from.clone(), to.clone());
        self.run(move |c| c.rename(&from, &to)).await
    }
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let dir = dir.clone();
        self.run(move |c| c.remove_empty_dir(&dir)).await
    }
    async fn flush(&self) -> Result<(), ConnError> {
        self.run(|c| c.flush()).await
    }
    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let near = near.to_vec();
        self.run(move |c| c.cleanup(&near)).await
    }
    async fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let queued = queued.clone();
        self.run(move |c| c.sweep_temps(&queued)).await
    }
    fn stranded_temps(&self) -> bool {
        self.0.stranded_temps()
    }
    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        let path = path.clone();
        self.run(move |c| c.stat(&path)).await
    }
    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        let path = path.clone();
        self.run(move |c| c.read(&path)).await
    }
    async fn download(&self, path: &RelPath, out: &mut File) -> Result<u64, ConnError> {
        let path = path.clone();
        let mut file = out
            .try_clone()
            .map_err(|e| ConnError::from_io("the local copy", &e))?;
        self.run(move |c| c.download(&path, &mut file)).await
    }
    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        self.run(|c| c.list()).await
    }
    async fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        let (file, path) = (file.clone(), path.clone());
        self.run(move |c| c.verify(&file, &path)).await
    }
}
