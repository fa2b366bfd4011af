//! What the programs skynet starts (`exec`, `on_delivered`) inherit from its environment.
//!
//! Why: skynet is often started with credentials in its environment (`SKYNET_SFTP_PASSWORD`,
//! `SKYNET_SFTP_PASSPHRASE`, the AWS keys). A user's program needs none of them to handle a
//! file, and passing them on hands the keys to the destination to every script, and to
//! whatever that script logs or runs in turn. So they are withheld unless the user names
//! them (`pass_env`). Everything else (`PATH`, `HOME`, `LANG`, …) passes, as users expect of
//! a program they configured; skynet adds the documented `SKYNET_ACTION`, `SKYNET_PATH`,
//! `SKYNET_REMOTE`, `SKYNET_FROM`, `SKYNET_TO` variables itself.

use std::ffi::OsStr;

/// Cloud credential variables withheld from child programs (the AWS SDK reads these).
const CREDENTIAL_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// Words that mark one of skynet's own variables (`SKYNET_…`) as a secret, now or in a
/// later version: a new secret variable is withheld without anyone remembering to list it.
const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
];

/// True when `name` is a variable never passed to a child program unless allowed.
pub fn is_secret(name: &str) -> bool {
    CREDENTIAL_VARS.contains(&name)
        || name
            .strip_prefix("SKYNET_")
            .is_some_and(|rest| SECRET_WORDS.iter().any(|w| rest.contains(w)))
}

/// The environment policy for child programs: secrets withheld, except those listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildEnv {
    /// Secret variables the user allows through (`pass_env`), by exact name.
    pass: Vec<String>,
}

impl ChildEnv {
    /// Withholds every secret except those named in `pass`.
    pub fn passing(pass: impl IntoIterator<Item = String>) -> ChildEnv {
        ChildEnv {
            pass: pass.into_iter().collect(),
        }
    }

    /// True when the variable `name` of skynet's environment is kept from a child.
    pub fn withholds(&self, name: &OsStr) -> bool {
        let Some(name) = name.to_str() else {
            return false;
        };
        is_secret(name) && !self.pass.iter().any(|p| p == name)
    }

    /// Removes from `command` every variable of this process's environment it withholds.
    pub(crate) fn apply(&self, command: &mut tokio::process::Command) {
        for (name, _) in std::env::vars_os() {
            if self.withholds(&name) {
                command.env_remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withholds_credentials_and_skynet_secrets_only() {
        for name in [
            "SKYNET_SFTP_PASSWORD",
            "SKYNET_SFTP_PASSPHRASE",
            "SKYNET_WEBDAV_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "SKYNET_PATH",
            "SKYNET_STATE_DIR",
            "AWS_REGION",
            "MY_TOKEN",
        ] {
            assert!(!is_secret(name), "{name}");
        }
        let env = ChildEnv::passing(["AWS_SECRET_ACCESS_KEY".to_string()]);
        assert!(!env.withholds(OsStr::new("AWS_SECRET_ACCESS_KEY")));
        assert!(env.withholds(OsStr::new("AWS_ACCESS_KEY_ID")));
    }
}
