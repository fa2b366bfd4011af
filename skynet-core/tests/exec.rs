//! The command destination against real programs: small `/bin/sh` scripts written to a temp
//! directory and run as the configured program, with no shell between skynet and them.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skynet_core::argv::Template;
use skynet_core::{
    Connection, ErrorKind, ExecConfig, ExecConnection, RelPath, SourceFile, Verification,
};
use tempfile::TempDir;

/// A source root, a destination folder and a folder for scripts and their outputs.
struct Setup {
    src: TempDir,
    dst: TempDir,
    bin: TempDir,
}

impl Setup {
    fn new() -> Self {
        Setup {
            src: tempfile::tempdir().unwrap(),
            dst: tempfile::tempdir().unwrap(),
            bin: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes an executable `#!/bin/sh` script and returns its path.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.bin.path().join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A script that copies "$1" to "$2", creating the parents of "$2".
    fn copier(&self) -> PathBuf {
        self.script(
            "copy.sh",
            r#"set -e
mkdir -p -- "${2%/*}"
cp -- "$1" "$2""#,
        )
    }

    /// Writes a local file under the source root and returns what a send of it gets.
    fn local_file(&self, rel: &[u8], content: &[u8]) -> (SourceFile, RelPath) {
        let rel = RelPath::from_bytes(rel).unwrap();
        let abs = rel.under(self.src.path());
        fs::create_dir_all(abs.parent().unwrap()).unwrap();
        fs::write(&abs, content).unwrap();
        (SourceFile::stat(&abs).unwrap(), rel)
    }

    fn connection(&self, send: Vec<String>) -> ExecConnection {
        let mut config = ExecConfig::new(self.src.path(), Template::parse(send).unwrap());
        config.timeout = Duration::from_secs(20);
        ExecConnection::new(config)
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// True when any file named `name` exists under `dir` (recursively).
fn exists_anywhere(dir: &Path, name: &str) -> bool {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .any(|e| e.file_name() == name)
}

#[tokio::test]
async fn hostile_names_arrive_byte_identical_and_nothing_is_evaluated() {
    let t = Setup::new();
    let copier = t.copier();
    let conn = t.connection(vec![
        s(&copier),
        "{path}".into(),
        format!("{}/{{remote}}", s(t.dst.path())),
    ]);
    conn.connect().await.unwrap();
    let hostile: &[&[u8]] = &[
        b"dir with space/new\nline",
        b"quotes/it's \"quoted\"",
        b"subst/$(touch pwned)",
        b"backtick/`touch pwned`",
        b"-leading dash",
        b"--help",
        b"semi; touch pwned; & | > <",
        b"glob/*?[a]",
        b"bytes/\xff\xfe not utf-8 \x80",
        b"brace/{path}",
    ];
    for (i, name) in hostile.iter().enumerate() {
        let content = format!("content {i} of {:?}\n", String::from_utf8_lossy(name));
        let (file, rel) = t.local_file(name, content.as_bytes());
        let sent = conn.send(&file, &rel).await;
        assert_eq!(sent.ok(), Some(file.size), "{rel:?}");
        let arrived = fs::read(rel.under(t.dst.path())).unwrap();
        assert_eq!(arrived, content.as_bytes(), "{rel:?}");
    }
    for dir in [t.src.path(), t.dst.path(), t.bin.path()] {
        assert!(!exists_anywhere(dir, "pwned"), "{}", dir.display());
    }
    assert!(!Path::new("pwned").exists());
    // Exactly the hostile files arrived, nothing else.
    let arrived = walkdir::WalkDir::new(t.dst.path())
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count();
    assert_eq!(arrived, hostile.len());
}

#[tokio::test]
async fn non_zero_exit_is_transient_with_status_and_stderr() {
    let t = Setup::new();
    let failing = t.script(
        "fail.sh",
        "echo 'first line' >&2\necho 'quota exceeded on backup' >&2\nexit 3",
    );
    let conn = t.connection(vec![s(&failing), "{path}".into()]);
    let (file, rel) = t.local_file(b"a.txt", b"x");
    let err = conn.send(&file, &rel).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("status 3"), "{err}");
    assert!(
        err.message.contains("first line quota exceeded on backup"),
        "{err}"
    );
    assert!(err.message.contains("a.txt"), "{err}");
    assert!(!err.message.contains('\n'), "{err}");
}

#[tokio::test]
async fn stderr_is_kept_to_its_last_lines() {
    let t = Setup::new();
    let noisy = t.script(
        "noisy.sh",
        r#"i=0
while [ $i -lt 3000 ]; do echo "noise line $i" >&2; i=$((i+1)); done
echo 'FINAL: it broke' >&2
exit 1"#,
    );
    let conn = t.connection(vec![s(&noisy)]);
    let (file, rel) = t.local_file(b"a", b"x");
    let err = conn.send(&file, &rel).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.ends_with("FINAL: it broke"), "{err}");
    assert!(err.message.len() < 2048 + 200, "{}", err.message.len());
    assert!(!err.message.contains("noise line 1 "), "{err}");
}

/// True when `pid` is gone, or only a zombie waiting for a parent that does not reap.
fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

#[tokio::test]
async fn timeout_is_transient_and_kills_the_whole_group() {
    let t = Setup::new();
    let pidfile = t.bin.path().join("pid");
    let slow = t.script("slow.sh", "sleep 30 &\necho $! > \"$1\"\nwait");
    let mut config = ExecConfig::new(
        t.src.path(),
        Template::parse(vec![s(&slow), s(&pidfile)]).unwrap(),
    );
    config.timeout = Duration::from_millis(1500);
    let conn = ExecConnection::new(config);
    let (file, rel) = t.local_file(b"a", b"x");
    let started = Instant::now();
    let err = conn.send(&file, &rel).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("timed out after 1.500s"), "{err}");
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    let pid: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_dead(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        is_dead(pid),
        "the background sleep {pid} outlived the timeout"
    );
}

#[tokio::test]
async fn missing_or_unusable_program_is_a_setup_error() {
    let t = Setup::new();
    let not_exec = t.bin.path().join("not-executable.sh");
    fs::write(&not_exec, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&not_exec, fs::Permissions::from_mode(0o644)).unwrap();
    for program in [
        "/nonexistent/skynet-prog".to_string(),
        "skynet-no-such-program-4711".to_string(),
        s(&not_exec),
        s(t.bin.path()),
    ] {
        let conn = t.connection(vec![program.clone(), "{path}".into()]);
        let err = conn.connect().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Setup, "{program}: {err}");
        assert!(err.message.contains(&program), "{err}");
    }
    // A send that cannot start the program is a setup error too, naming it.
    let conn = t.connection(vec!["/nonexistent/skynet-prog".into(), "{path}".into()]);
    let (file, rel) = t.local_file(b"a", b"x");
    let err = conn.send(&file, &rel).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Setup, "{err}");
    assert!(err.message.contains("/nonexistent/skynet-prog"), "{err}");
    // An override's program is checked as well.
    let mut config = ExecConfig::new(t.src.path(), Template::parse(argv(&["true"])).unwrap());
    config.delete = Some(Template::parse(argv(&["skynet-no-such-rm"])).unwrap());
    let err = ExecConnection::new(config).connect().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Setup);
    assert!(err.message.contains("skynet-no-such-rm"), "{err}");
    // Programs on PATH and by path are fine.
    t.connection(argv(&["true"])).connect().await.unwrap();
    t.connection(vec![s(&t.copier())]).connect().await.unwrap();
}

/// A script that writes its arguments and the SKYNET_* variables, one per line, to `out`.
fn recorder(t: &Setup, out: &Path) -> PathBuf {
    t.script(
        "record.sh",
        &format!(
            r#"printf '%s\n' "$#" "$@" "env:$SKYNET_ACTION" "$SKYNET_PATH" "$SKYNET_REMOTE" "${{SKYNET_FROM-unset}}" "${{SKYNET_TO-unset}}" > '{}'"#,
            s(out)
        ),
    )
}

fn recorded(out: &Path) -> Vec<String> {
    fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn move_passes_action_from_to_path_and_environment() {
    let t = Setup::new();
    let out = t.bin.path().join("out");
    let rec = recorder(&t, &out);
    let template = argv(&[&s(&rec), "{action}", "{from}", "{to}", "{path}", "{remote}"]);
    let from = RelPath::from_bytes(b"old dir/a b.txt").unwrap();
    let to = RelPath::from_bytes(b"new dir/a b.txt").unwrap();
    let local_to = s(&to.under(t.src.path()));

    // Without a rename template, a move is not handed to the send command: the destination
    // answers that it has nothing to move, so the handler sends the files at `to` again.
    let conn = t.connection(template.clone());
    let err = conn.rename(&from, &to).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RemoteMissing, "{err}");
    assert!(!out.exists(), "the send command ran for a move");

    // `send_moves` hands moves to the send command, `{action}` telling it what to do.
    let mut config = ExecConfig::new(t.src.path(), Template::parse(template.clone()).unwrap());
    config.send_moves = true;
    ExecConnection::new(config)
        .rename(&from, &to)
        .await
        .unwrap();
    let expected = vec![
        "5".to_string(),
        "move".into(),
        "old dir/a b.txt".into(),
        "new dir/a b.txt".into(),
        local_to.clone(),
        "new dir/a b.txt".into(),
        "env:move".into(),
        local_to.clone(),
        "new dir/a b.txt".into(),
        "old dir/a b.txt".into(),
        "new dir/a b.txt".into(),
    ];
    assert_eq!(recorded(&out), expected);

    // A rename override replaces it for moves only.
    let mut config = ExecConfig::new(t.src.path(), Template::parse(argv(&["false"])).unwrap());
    config.rename = Some(Template::parse(template).unwrap());
    fs::remove_file(&out).unwrap();
    ExecConnection::new(config)
        .rename(&from, &to)
        .await
        .unwrap();
    assert_eq!(recorded(&out), expected);
}

#[tokio::test]
async fn delete_uses_its_override_and_gets_the_target_everywhere() {
    let t = Setup::new();
    let out = t.bin.path().join("out");
    let rec = recorder(&t, &out);
    let mut config = ExecConfig::new(t.src.path(), Template::parse(argv(&["false"])).unwrap());
    config.delete =
        Some(Template::parse(argv(&[&s(&rec), "{action}", "{from}", "{to}", "{path}"])).unwrap());
    let conn = ExecConnection::new(config);
    let gone = RelPath::from_bytes(b"x/gone").unwrap();
    conn.delete(&gone).await.unwrap();
    let local = s(&gone.under(t.src.path()));
    assert_eq!(
        recorded(&out),
        vec![
            "4".to_string(),
            "delete".into(),
            "x/gone".into(),
            "x/gone".into(),
            local.clone(),
            "env:delete".into(),
            local,
            "x/gone".into(),
            "unset".into(),
            "unset".into(),
        ]
    );
    // Sends still run the send template (`false` here).
    let err = conn
        .send(&t.local_file(b"f", b"x").0, &gone)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
}

#[tokio::test]
async fn send_passes_environment_with_non_utf8_bytes() {
    let t = Setup::new();
    let out = t.bin.path().join("out");
    let rec = recorder(&t, &out);
    let conn = t.connection(vec![s(&rec)]);
    let (file, rel) = t.local_file(b"d/\xffname", b"x");
    conn.send(&file, &rel).await.unwrap();
    let lines: Vec<Vec<u8>> = fs::read(&out)
        .unwrap()
        .split(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(lines[0], b"0");
    assert_eq!(lines[1], b"env:send");
    assert_eq!(lines[2], file.path.as_os_str().as_bytes());
    assert_eq!(lines[3], b"d/\xffname");
    assert_eq!(lines[4], b"unset");
}

#[tokio::test]
async fn a_file_changed_or_removed_during_the_send_is_not_acknowledged() {
    let t = Setup::new();
    let appender = t.script("append.sh", "echo more >> \"$1\"");
    let conn = t.connection(vec![s(&appender), "{path}".into()]);
    let (file, rel) = t.local_file(b"grows", b"x");
    let err = conn.send(&file, &rel).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("changed while being sent"), "{err}");

    let remover = t.script("remove.sh", "rm -- \"$1\"\nexit 1");
    let conn = t.connection(vec![s(&remover), "{path}".into()]);
    let (file, rel) = t.local_file(b"vanishes", b"x");
    let err = conn.send(&file, &rel).await.unwrap_err();
    // The program's failure stands; the handler, not the backend, tells that the file is gone.
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
}

/// Its refusals say why, naming the command (that each is a permanent error is the
/// conformance suite's check, `conformance_exec.rs`).
#[tokio::test]
async fn it_cannot_read_back_and_says_so() {
    let t = Setup::new();
    let conn = t.connection(argv(&["true", "{path}"]));
    assert_eq!(conn.describe(), "exec:true");
    let (file, rel) = t.local_file(b"a", b"x");
    assert_eq!(conn.send(&file, &rel).await.unwrap(), 1);
    let verified: Result<Verification, _> = conn.verify(&file, &rel).await;
    let errors = [
        conn.stat(&rel).await.err(),
        conn.read(&rel).await.err(),
        conn.list().await.err(),
        verified.err(),
    ];
    for err in errors {
        let err = err.expect("must refuse");
        assert!(err.message.starts_with("exec:true: "), "{err}");
        assert!(err.message.contains("cannot read back"), "{err}");
    }
}

#[tokio::test]
async fn connect_refuses_a_relative_root_and_a_zero_timeout() {
    let template = Template::parse(argv(&["true"])).unwrap();
    let conn = ExecConnection::new(ExecConfig::new("relative/root", template.clone()));
    assert_eq!(conn.connect().await.unwrap_err().kind, ErrorKind::Setup);
    let mut config = ExecConfig::new("/", template);
    config.timeout = Duration::ZERO;
    let err = ExecConnection::new(config).connect().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Setup);
}
