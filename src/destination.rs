//! Turns a destination string into a [`Connection`]: a local folder (the embedded default),
//! `file:///path`, `sftp://…`, `s3://…`, or a command (`--exec`).
//!
//! Each destination is parsed **once**, into its typed config, before anything is written:
//! a refused URL (a password in it, a bad bucket) leaves no state behind. The mapping's
//! identity is the normalised, secret-free form (default port filled in, `//` and a trailing
//! `/` dropped), so `sftp://h/x` and `sftp://h:22/x/` are one mapping; [`Destination::display`]
//! is the one form shown anywhere (logs, `status`, metrics labels).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use skynet_core::argv::Template;
use skynet_core::{Blocking, Connection, ExecConfig, ExecConnection, LocalConnection};

use crate::cli::MappingArgs;

/// How long a command (`--exec`, `--on-delivered`) may run by default.
pub const EXEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// A parsed destination.
#[derive(Debug, Clone)]
pub enum Destination {
    Local(PathBuf),
    /// An SFTP server; `typed` is the URL as given, to find state kept under it by versions
    /// that named mappings by the raw URL (it holds no password: those are refused).
    Sftp {
        cfg: Box<skynet_sftp::SftpConfig>,
        typed: String,
    },
    /// An S3 bucket and prefix; the endpoint (`--s3-endpoint`) is set by [`Self::with_args`].
    S3 {
        cfg: Box<skynet_s3::S3Config>,
        typed: String,
    },
    /// A command run for every action (`--exec`), its argv template as given.
    Exec(Vec<String>),
}

impl Destination {
    /// Parses and validates `text`; nothing is written before this succeeds.
    pub fn parse(text: &str) -> Result<Destination> {
        if let Some((scheme, rest)) = text.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "file" => {
                    if !rest.starts_with('/') {
                        bail!("destination {text:?}: a file:// URL needs an absolute path (file:///path)");
                    }
                    let decoded = percent_decode(rest)
                        .with_context(|| format!("destination {text:?}"))?;
                    Ok(Destination::Local(absolute(Path::new(&decoded))?))
                }
                "sftp" => {
                    let url = format!("sftp://{rest}");
                    let mut cfg = skynet_sftp::SftpConfig::from_url(&url)
                        .with_context(|| format!("destination {}", redact(&url)))?;
                    // One spelling per folder: `/x/`, `//x` and `/x/./` are `/x`.
                    cfg.root = cfg.root.components().collect();
                    Ok(Destination::Sftp {
                        cfg: Box::new(cfg),
                        typed: text.to_string(),
                    })
                }
                "s3" => {
                    let url = format!("s3://{rest}");
                    let cfg = skynet_s3::S3Config::from_url(&url)
                        .with_context(|| format!("destination {}", redact(&url)))?;
                    Ok(Destination::S3 {
                        cfg: Box::new(cfg),
                        typed: text.to_string(),
                    })
                }
                other => bail!(
                    "destination {:?}: unknown URL scheme {other:?} (use a folder, file://, sftp:// or s3://)",
                    redact(text)
                ),
            };
        }
        if text.is_empty() {
            bail!("destination is empty");
        }
        Ok(Destination::Local(absolute(Path::new(text))?))
    }

    /// Applies the options that are part of what the destination is (the S3 endpoint: two
    /// servers may hold the same bucket name), validating them too.
    pub fn with_args(mut self, args: &MappingArgs) -> Result<Destination> {
        if let (Destination::S3 { cfg, .. }, Some(endpoint)) =
            (&mut self, &args.connection.s3_endpoint)
        {
            let shown = redact(endpoint);
            if shown != *endpoint {
                bail!(
                    "--s3-endpoint {shown}: credentials in the endpoint URL are not used; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"
                );
            }
            cfg.endpoint = Some(endpoint.trim_end_matches('/').to_string());
            cfg.validate()
                .with_context(|| format!("destination {}", cfg.url()))?;
        }
        Ok(self)
    }

    /// The destination as shown everywhere: normalised, without secrets, and a command as
    /// its program and a count of arguments (they may carry a token).
    pub fn display(&self) -> String {
        match self {
            Destination::Local(p) => p.display().to_string(),
            Destination::Sftp { cfg, .. } => cfg.describe(),
            Destination::S3 { cfg, .. } => match &cfg.endpoint {
                Some(endpoint) => format!("{} at {endpoint}", cfg.url()),
                None => cfg.url(),
            },
            Destination::Exec(argv) => match Template::parse(argv.clone()) {
                Ok(t) => format!("exec:{t}"),
                Err(_) => "exec:(invalid command)".to_string(),
            },
        }
    }

    /// What names the mapping's state (hashed with the source, see
    /// [`crate::state::mapping_name`]): the destination's kind and address, normalised. A
    /// command is named by its whole template (only the hash is written): its arguments are
    /// its address (`rsync … hostA:` and `rsync … hostB:` are two destinations, and one
    /// sharing the other's ledger would never send what the other delivered). To edit a
    /// command and keep its ledger, name the mapping (`--name`).
    pub fn state_key(&self) -> String {
        match self {
            Destination::Exec(argv) => format!("exec:{}", shell_words::join(argv)),
            Destination::S3 { cfg, .. } => match &cfg.endpoint {
                Some(endpoint) => format!("{} {endpoint}", cfg.url()),
                None => cfg.url(),
            },
            other => other.display(),
        }
    }

    /// The state key earlier versions used (the URL as typed), when it differs: state kept
    /// under it is moved to [`Self::state_key`]'s name rather than forgotten.
    pub fn legacy_state_key(&self, args: &MappingArgs) -> Option<String> {
        let old = match (self, &args.connection.s3_endpoint) {
            (Destination::Sftp { typed, .. }, _) => typed.clone(),
            (Destination::S3 { typed, .. }, Some(endpoint)) => format!("{typed} {endpoint}"),
            (Destination::S3 { typed, .. }, None) => typed.clone(),
            _ => return None,
        };
        (old != self.state_key()).then_some(old)
    }

    /// Builds the connection. `state_dir` is the mapping's own state directory.
    pub async fn connect(
        &self,
        source: &Path,
        args: &MappingArgs,
        state_dir: &Path,
    ) -> Result<Arc<dyn Connection>> {
        match self {
            Destination::Exec(argv) => Ok(exec_connection(argv, source, args)?),
            Destination::Local(root) => {
                Ok(Arc::new(Blocking::new(LocalConnection::new(root.clone()))))
            }
            Destination::Sftp { cfg, .. } => Ok(crate::remote::sftp((**cfg).clone(), args)),
            Destination::S3 { cfg, .. } => {
                crate::remote::s3((**cfg).clone(), args, state_dir).await
            }
        }
    }
}

/// The command destination (`--exec` and its options) for the source root `source`.
pub fn exec_connection(
    argv: &[String],
    source: &Path,
    args: &MappingArgs,
) -> Result<Arc<ExecConnection>> {
    let parse = |what: &str, argv: &Option<crate::cli::Argv>| {
        argv.clone()
            .map(|a| Template::parse(a.0))
            .transpose()
            .with_context(|| what.to_string())
    };
    let mut cfg = ExecConfig::new(source, Template::parse(argv.to_vec()).context("--exec")?);
    cfg.delete = parse("--exec-delete", &args.exec_delete)?;
    cfg.rename = parse("--exec-move", &args.exec_move)?;
    cfg.send_moves = args.exec_send_moves;
    cfg.timeout = args.exec_timeout.unwrap_or(EXEC_TIMEOUT);
    cfg.child_env = skynet_core::command::ChildEnv::passing(args.pass_env.clone());
    Ok(Arc::new(ExecConnection::new(cfg)))
}

/// A destination as stored in a mapping's state, as shown: older versions stored the URL as
/// typed (a refused one with its password) and a command's whole template.
pub fn shown(stored: &str) -> String {
    if let Some(command) = stored.strip_prefix("exec:") {
        if let Some(t) = shell_words::split(command)
            .ok()
            .and_then(|argv| Template::parse(argv).ok())
        {
            return format!("exec:{t}");
        }
    }
    redact(stored)
}

/// A URL or endpoint without any `user:password@` part: the one redaction for every place a
/// destination given by the user is echoed before it is parsed.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            // An SFTP user name is no secret; anything else before '@' may be a key.
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else if scheme.eq_ignore_ascii_case("sftp") {
                user.to_string()
            } else {
                "***".to_string()
            };
            format!("{scheme}://{hidden}@{}", &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// The destination folder as it will be reached: the nearest existing ancestor resolved by
/// the kernel (links followed, `..` taken physically), then the part that does not exist yet
/// appended with `.` and `..` taken lexically (nothing there can be a link). So a folder has
/// one identity however it is spelled (`link/mirror`, `./other/../src/mirror`, `dir/`),
/// before and after its creation, and the overlap check sees where writes would land.
fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("destination {}", p.display()))?;
    for existing in abs.ancestors() {
        if existing.symlink_metadata().is_err() {
            continue;
        }
        let mut resolved = existing.canonicalize().with_context(|| {
            format!(
                "destination {}: cannot resolve {}",
                p.display(),
                existing.display()
            )
        })?;
        let rest = abs.strip_prefix(existing).unwrap_or(Path::new(""));
        for part in rest.components() {
            match part {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => resolved.push(name),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        return Ok(resolved);
    }
    Ok(abs)
}

/// Refuses a local destination that lies inside the source or holds it: mirroring one into
/// the other would copy the copies forever (or delete the source's files as "extra").
/// Both paths must be resolved ([`Destination::parse`] and a canonical source).
pub fn check_overlap(source: &Path, root: &Path) -> Result<()> {
    if root.starts_with(source) || source.starts_with(root) {
        bail!(
            "destination {} and source {} overlap; mirroring one into the other would loop: choose a destination outside the source",
            root.display(),
            source.display()
        );
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String> {
    Ok(percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .context("not UTF-8 after decoding")?
        .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        assert!(matches!(
            Destination::parse("/tmp").unwrap(),
            Destination::Local(p) if p == Path::new("/tmp")
        ));
        assert!(matches!(
            Destination::parse("file:///nonexistent/a%20b").unwrap(),
            Destination::Local(p) if p == Path::new("/nonexistent/a b")
        ));
        // One normalised, secret-free identity per destination, however it is spelled.
        for spelling in [
            "sftp://u@h:22/x",
            "sftp://u@h/x/",
            "SFTP://u@h//x",
            "sftp://u@h/x/./",
        ] {
            let d = Destination::parse(spelling).unwrap();
            assert_eq!(d.display(), "sftp://u@h:22/x", "{spelling}");
            assert_eq!(d.state_key(), "sftp://u@h:22/x", "{spelling}");
        }
        assert_eq!(
            Destination::parse("sftp://u@[::1]:2222/~/in/")
                .unwrap()
                .display(),
            "sftp://u@[::1]:2222/~/in"
        );
        let s3 = Destination::parse("s3://bkt/p/").unwrap();
        assert_eq!(s3.display(), "s3://bkt/p");
        let args = MappingArgs {
            connection: crate::cli::ConnectionArgs {
                s3_endpoint: Some("http://127.0.0.1:9000/".into()),
                ..Default::default()
            },
            ..MappingArgs::default()
        };
        let s3 = s3.with_args(&args).unwrap();
        assert_eq!(s3.display(), "s3://bkt/p at http://127.0.0.1:9000");
        assert_eq!(
            s3.legacy_state_key(&args).as_deref(),
            Some("s3://bkt/p/ http://127.0.0.1:9000/")
        );
        let creds = MappingArgs {
            connection: crate::cli::ConnectionArgs {
                s3_endpoint: Some("http://AKID:secret@127.0.0.1:9000".into()),
                ..Default::default()
            },
            ..MappingArgs::default()
        };
        let e = Destination::parse("s3://bkt/p")
            .unwrap()
            .with_args(&creds)
            .unwrap_err();
        assert!(!format!("{e:#}").contains("secret"), "{e:#}");
        for refused in ["sftp://u:pw@h/x", "s3://AKID:pw@bkt/p"] {
            let e = format!("{:#}", Destination::parse(refused).unwrap_err());
            assert!(!e.contains("pw"), "{e}");
        }
        let exec = Destination::Exec(vec!["curl".into(), "-H".into(), "token: t0k".into()]);
        assert_eq!(exec.display(), "exec:curl (2 arguments)");
        let elsewhere = Destination::Exec(vec!["curl".into(), "-H".into(), "token: other".into()]);
        assert_ne!(
            exec.state_key(),
            elsewhere.state_key(),
            "the arguments are its address"
        );
        let e = Destination::parse("ftp://h/x").unwrap_err().to_string();
        assert!(e.contains("unknown URL scheme \"ftp\""), "{e}");
        assert!(Destination::parse("file://relative").is_err());
        assert!(Destination::parse("").is_err());
    }

    /// Every spelling of one folder resolves to the same path, existing or not yet.
    #[test]
    fn resolves_links_and_dots_before_the_missing_part() {
        let scratch = tempfile::tempdir().unwrap();
        let base = scratch.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("src/sub")).unwrap();
        std::fs::create_dir_all(base.join("other")).unwrap();
        std::os::unix::fs::symlink(base.join("src"), base.join("link")).unwrap();
        std::os::unix::fs::symlink(base.join("src/sub"), base.join("other/down")).unwrap();
        let mirror = base.join("src/mirror");
        for spelling in [
            "link/mirror",
            "link/mirror/",
            "link/./mirror",
            "other/../src/mirror",
            "nothing/../src/mirror",
            "src//mirror",
            "other/down/../mirror",
            "link/sub/../mirror",
        ] {
            let got = absolute(&base.join(spelling)).unwrap();
            assert_eq!(got, mirror, "{spelling}");
            assert!(
                check_overlap(&base.join("src"), &got).is_err(),
                "{spelling}"
            );
        }
        assert_eq!(absolute(&base.join("link")).unwrap(), base.join("src"));
        let e = check_overlap(&base.join("src/sub"), &base).unwrap_err();
        assert!(format!("{e:#}").contains("overlap"), "{e:#}");
        assert!(check_overlap(&base.join("src"), &base.join("srcx")).is_ok());
    }

    #[test]
    fn shows_what_older_versions_stored_without_secrets() {
        assert_eq!(shown("sftp://u:pw@h/x"), "sftp://u:***@h/x");
        assert_eq!(
            shown("exec:curl -H 'token: t0k' {path}"),
            "exec:curl (3 arguments)"
        );
        assert_eq!(
            shown("exec:deliver (2 arguments)"),
            "exec:deliver (2 arguments)"
        );
        assert_eq!(shown("/mnt/backup"), "/mnt/backup");
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("sftp://u:secret@h/x"), "sftp://u:***@h/x");
        assert_eq!(redact("sftp://u@h/x"), "sftp://u@h/x");
        assert_eq!(redact("s3://b/p"), "s3://b/p");
        assert_eq!(redact("s3://AKID@b/p"), "s3://***@b/p");
        assert_eq!(redact("http://k:s@h:1/a@b"), "http://k:***@h:1/a@b");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_destination(
                raw in any::<String>(),
                shaped in "(file|sftp|s3|FILE|x)?(://)?[a-z0-9/%@:\\[\\].~ -]{0,20}",
            ) {
                for text in [raw, shaped] {
                    if let Err(e) = Destination::parse(&text) {
                        prop_assert!(!format!("{e:#}").contains('\n'), "{e:#}");
                    }
                }
            }
        }
    }
}
