//! Turns a destination string into a [`Connection`]: a local folder (the embedded default),
//! `file:///path`, `sftp://…` or `s3://…`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use skynet_core::argv::Template;
use skynet_core::{Blocking, Connection, ExecConfig, ExecConnection, LocalConnection};

use crate::cli::MappingArgs;

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Local(PathBuf),
    Sftp(String),
    S3(String),
    /// A command run for every action (`--exec`), its argv template as given.
    Exec(Vec<String>),
}

impl Destination {
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
                "sftp" => Ok(Destination::Sftp(text.to_string())),
                "s3" => Ok(Destination::S3(text.to_string())),
                other => bail!(
                    "destination {text:?}: unknown URL scheme {other:?} (use a folder, file://, sftp:// or s3://)"
                ),
            };
        }
        if text.is_empty() {
            bail!("destination is empty");
        }
        Ok(Destination::Local(absolute(Path::new(text))?))
    }

    /// The canonical text used to name the mapping's state.
    pub fn identity(&self) -> String {
        match self {
            Destination::Local(p) => p.display().to_string(),
            Destination::Sftp(u) | Destination::S3(u) => u.clone(),
            Destination::Exec(argv) => format!("exec:{}", shell_words::join(argv)),
        }
    }

    /// Builds the connection. `state_dir` is the mapping's own state directory.
    pub async fn connect(
        &self,
        source: &Path,
        args: &MappingArgs,
        state_dir: &Path,
    ) -> Result<Arc<dyn Connection>> {
        match self {
            Destination::Exec(argv) => {
                let parse = |what: &str, argv: &Option<crate::cli::Argv>| {
                    argv.clone()
                        .map(|a| Template::parse(a.0))
                        .transpose()
                        .with_context(|| what.to_string())
                };
                let mut cfg =
                    ExecConfig::new(source, Template::parse(argv.clone()).context("--exec")?);
                cfg.delete = parse("--exec-delete", &args.exec_delete)?;
                cfg.rename = parse("--exec-move", &args.exec_move)?;
                cfg.timeout = args.exec_timeout.unwrap_or(crate::commands::EXEC_TIMEOUT);
                Ok(Arc::new(ExecConnection::new(cfg)))
            }
            Destination::Local(root) => {
                Ok(Arc::new(Blocking::new(LocalConnection::new(root.clone()))))
            }
            Destination::Sftp(url) => crate::remote::sftp(url, args),
            Destination::S3(url) => crate::remote::s3(url, args, state_dir).await,
        }
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("destination {}", p.display()))?;
    // Resolve symlinks in the part that exists so one folder has one identity.
    Ok(abs.canonicalize().unwrap_or(abs))
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
        assert_eq!(
            Destination::parse("/tmp").unwrap(),
            Destination::Local(PathBuf::from("/tmp"))
        );
        assert_eq!(
            Destination::parse("file:///nonexistent/a%20b").unwrap(),
            Destination::Local(PathBuf::from("/nonexistent/a b"))
        );
        assert!(matches!(
            Destination::parse("sftp://u@h:22/x").unwrap(),
            Destination::Sftp(_)
        ));
        assert!(matches!(
            Destination::parse("s3://b/p").unwrap(),
            Destination::S3(_)
        ));
        let e = Destination::parse("ftp://h/x").unwrap_err().to_string();
        assert!(e.contains("unknown URL scheme \"ftp\""), "{e}");
        assert!(Destination::parse("file://relative").is_err());
        assert!(Destination::parse("").is_err());
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
