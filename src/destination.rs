//! Turns a destination string into a [`Connection`]: a local folder (the embedded default),
//! `file:///path`, `sftp://…` or `s3://…`.

use std::path::{Component, Path, PathBuf};
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
