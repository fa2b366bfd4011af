//! The command destination runs the conformance suite, with `cp`-based scripts delivering into
//! an output folder. It cannot read back (`stat`, `read`, `list`, `download` and `verify`
//! answer a permanent error: its declared capability), so the suite observes what the
//! commands did through the output folder. Confinement against links is the program's to keep
//! (skynet cannot see the destination), so that function does not apply.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skynet_core::argv::Template;
use skynet_core::conformance::{self, Options};
use skynet_core::{ExecConfig, ExecConnection};

/// Writes an executable `#!/bin/sh` script delivering into `out`.
fn script(bin: &Path, name: &str, out: &Path, body: &str) -> String {
    let path = bin.join(name);
    let text = format!("#!/bin/sh\nset -e\nout='{}'\n{body}\n", out.display());
    fs::write(&path, text).expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_str().expect("UTF-8 temp path").to_string()
}

/// Makes the parents of "$dst" as a filesystem would for a send: a file standing where a
/// directory goes is replaced; then clears "$dst" itself (a directory standing there).
const CLEAR_THE_WAY: &str = r#"p=${dst%/*}
while [ "$p" != "$out" ]; do
  if [ -f "$p" ] || [ -L "$p" ]; then rm -f -- "$p"; fi
  p=${p%/*}
done
mkdir -p -- "${dst%/*}"
rm -rf -- "$dst""#;

fn exec_connection(src: &Path, bin: &Path, out: &Path) -> ExecConnection {
    let send = script(
        bin,
        "send.sh",
        out,
        &format!("dst=\"$out/$2\"\n{CLEAR_THE_WAY}\ncp -- \"$1\" \"$dst\""),
    );
    let delete = script(bin, "delete.sh", out, r#"rm -rf -- "$out/$1""#);
    // A missing source is success: the handler then has nothing to resend (see `exec`).
    let rename = script(
        bin,
        "rename.sh",
        out,
        &format!(
            "src=\"$out/$1\"; dst=\"$out/$2\"\n\
             if [ ! -e \"$src\" ] && [ ! -L \"$src\" ]; then exit 0; fi\n\
             {CLEAR_THE_WAY}\nmv -- \"$src\" \"$dst\""
        ),
    );
    let template = |argv: &[&str]| {
        Template::parse(argv.iter().map(|s| s.to_string()).collect()).expect("template")
    };
    let mut config = ExecConfig::new(src, template(&[&send, "{path}", "{remote}"]));
    config.delete = Some(template(&[&delete, "{remote}"]));
    config.rename = Some(template(&[&rename, "{from}", "{to}"]));
    config.timeout = Duration::from_secs(60);
    ExecConnection::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copying_command_conforms() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let [src, bin, out]: [PathBuf; 3] = ["src", "bin", "out"].map(|d| scratch.path().join(d));
    for d in [&src, &bin, &out] {
        fs::create_dir_all(d).expect("mkdir");
    }
    let conn = exec_connection(&src, &bin, &out);
    let opts = Options {
        local_root: Some(out),
        reads_back: false,
        ..Options::default()
    };
    conformance::run(&conn, &opts).await;
}
