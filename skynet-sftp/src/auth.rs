//! Client authentication: the identity file if one is configured, then ssh-agent (when
//! `SSH_AUTH_SOCK` is set), then the password from `SKYNET_SFTP_PASSWORD`. The first that the
//! server accepts wins; when none does, one `Setup` error lists what was tried (never a secret).

use skynet_core::error::ConnError;
use ssh2::Session;

use crate::config::SftpConfig;
use crate::errors::{classify, is_lost, Op};

pub(crate) fn authenticate(session: &Session, cfg: &SftpConfig) -> Result<(), ConnError> {
    let server = cfg.server();
    let mut tried: Vec<String> = Vec::new();
    let mut last_reason: Option<String> = None;
    // A failed method is fine (try the next); a dead link is not worth more attempts.
    let mut attempt = |what: String, result: Result<(), ssh2::Error>| -> Result<bool, ConnError> {
        tried.push(what);
        match result {
            Ok(()) if session.authenticated() => Ok(true),
            Ok(()) => Ok(false),
            Err(e) => {
                let err = classify(&e, Op::Auth, &server, None);
                if is_lost(&err) {
                    return Err(err);
                }
                last_reason = Some(e.message().to_string());
                Ok(false)
            }
        }
    };

    if let Some(key) = &cfg.identity {
        if !key.exists() {
            return Err(ConnError::setup(format!(
                "{server}: identity file {} does not exist",
                key.display()
            )));
        }
        let passphrase = cfg.identity_passphrase.as_ref().map(|s| s.expose());
        let result = session.userauth_pubkey_file(&cfg.user, None, key, passphrase);
        if attempt(format!("key {}", key.display()), result)? {
            return Ok(());
        }
    }
    if cfg.use_agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        let result = session.userauth_agent(&cfg.user);
        if attempt("agent".to_string(), result)? {
            return Ok(());
        }
    }
    if let Some(password) = &cfg.password {
        let result = session.userauth_password(&cfg.user, password.expose());
        if attempt("password".to_string(), result)? {
            return Ok(());
        }
    }
    if tried.is_empty() {
        return Err(ConnError::setup(format!(
            "{server}: no way to authenticate: give an identity file, run ssh-agent, or set \
             SKYNET_SFTP_PASSWORD"
        )));
    }
    let reason = last_reason
        .map(|r| format!(": {}", crate::errors::one_line(&r)))
        .unwrap_or_default();
    Err(ConnError::setup(format!(
        "{server}: authentication failed (tried: {}){reason}",
        tried.join(", ")
    )))
}
