//! What an OpenSSH known_hosts file says about one server's key: pure logic on the file's
//! text, so that each rule is a case in the table tests below.
//!
//! libssh2's `KnownHosts` is not used for this. Its `check_port` looks up `[host]:port` and
//! then falls back to the plain `host` entry whatever the port, so an entry written for port 22
//! vouched for every port when the keys were the same, and made a server on another port
//! "changed" when they were not (which also stopped `accept-new` from recording it). Nor does
//! it say which line it matched, which a refusal has to name.
//!
//! The rules, OpenSSH's (`hostfile.c`):
//! - A server is named `host` on port 22 and `[host]:port` on any other ([`host_name`]),
//!   lower-cased. An entry applies when one of its comma-separated patterns matches that whole
//!   name (`*` and `?` wildcards, case-insensitive) and none of its `!` patterns does, or when
//!   its hashed name (`|1|salt|hash`) is the HMAC-SHA1 of that name. So `host` vouches for
//!   port 22 only and `[host]:2222` for port 2222 only.
//! - Among the entries that apply: one holding the server's key makes it known; failing that,
//!   one holding another key (of any type, as OpenSSH counts it) makes it changed; none makes
//!   it unknown. A key of another port's entry is never "changed": that entry does not apply.
//! - An `@revoked` entry holding the key refuses it whatever else applies. `@cert-authority`
//!   entries are skipped: host certificates are not supported.
//! - Lines that cannot be parsed are skipped, as OpenSSH skips them.
//!
//! One deliberate difference: on a non-default port OpenSSH's client, finding no entry for
//! `[host]:port`, also accepts a plain `host` entry holding the identical key ("checking
//! without port identifier"). skynet does not: an entry vouches exactly for the ports it
//! names, and such a server is reported unknown (fail closed; `accept-new` records it).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The name known_hosts gives a server: `host` on port 22, `[host]:port` elsewhere, lower-case
/// (OpenSSH lower-cases host names before looking them up and when writing them).
pub(crate) fn host_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// The algorithm name at the start of an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, ...).
pub(crate) fn key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4usize.checked_add(len)?)?).ok()
}

/// The `@` marker an entry may start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One line of the file that applies to the server being checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// 1-based, as editors and OpenSSH's messages count.
    pub(crate) line: usize,
    pub(crate) marker: Marker,
    /// The public key blob (its algorithm name included).
    pub(crate) key: Vec<u8>,
}

/// What the file says about the key a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An entry for this server holds this key.
    Known { line: usize },
    /// No entry holds this key, but the first entry at `line` holds another (`algo`).
    Changed { line: usize, algo: String },
    /// An `@revoked` entry holds this key.
    Revoked { line: usize },
    /// No entry for this server.
    Unknown,
}

/// The entries of a known_hosts file's `text` that apply to the server named `name` (see
/// [`host_name`]), in file order. Lines naming other servers are not parsed further.
pub(crate) fn entries_for(text: &str, name: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            parse_line(line, name).map(|(marker, key)| Entry {
                line: i + 1,
                marker,
                key,
            })
        })
        .collect()
}

/// Judges `key` against the entries that apply to its server.
pub(crate) fn check(entries: &[Entry], key: &[u8]) -> Verdict {
    if let Some(e) = entries
        .iter()
        .find(|e| e.marker == Marker::Revoked && e.key == key)
    {
        return Verdict::Revoked { line: e.line };
    }
    let plain = || entries.iter().filter(|e| e.marker == Marker::None);
    if let Some(e) = plain().find(|e| e.key == key) {
        return Verdict::Known { line: e.line };
    }
    match plain().next() {
        Some(e) => Verdict::Changed {
            line: e.line,
            algo: key_type(&e.key).unwrap_or("unknown-key-type").to_string(),
        },
        None => Verdict::Unknown,
    }
}

/// `Some((marker, key blob))` when `line` is a well-formed entry applying to `name`.
fn parse_line(line: &str, name: &str) -> Option<(Marker, Vec<u8>)> {
    let mut fields = line.split_whitespace().peekable();
    if fields.peek()?.starts_with('#') {
        return None;
    }
    let marker = match *fields.peek()? {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        fields.next();
    }
    if !host_matches(fields.next()?, name) {
        return None;
    }
    let algo = fields.next()?;
    let key = STANDARD.decode(fields.next()?).ok()?;
    // A blob whose own algorithm disagrees with the line's is corrupt: skip it.
    (key_type(&key)? == algo).then_some((marker, key))
}

/// Whether the host field of an entry (a pattern list or a hashed name) names `name`.
fn host_matches(field: &str, name: &str) -> bool {
    if field.starts_with('|') {
        return hashed_matches(field, name);
    }
    let mut positive = false;
    for pattern in field.split(',') {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => positive |= glob(pattern.as_bytes(), name.as_bytes()),
        }
    }
    positive
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, as `HashKnownHosts` writes.
fn hashed_matches(field: &str, name: &str) -> bool {
    let Some(rest) = field.strip_prefix("|1|") else {
        return false;
    };
    let Some((salt, hash)) = rest.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH's `match_pattern`: `*` any run of characters, `?` exactly one, over the whole name.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| glob(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJHrYt4u/Bt00x1cO7qMafAjcO92yF8GTSPjtpuGAuuu";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAII1j9E2LvAvoWQhNjiuNaZ5+CSSeq4uEyL7AX6Fh2Lte";
    /// `[127.0.0.1]:2222` and `127.0.0.1`, hashed by `ssh-keygen -H`.
    const HASHED_2222: &str = "|1|QdQtP2ZjUJy3uK6+Zrm3Vff9Vtc=|DQ9T8fDpqjqKdoMJJXY4qyUpU3w=";
    const HASHED_22: &str = "|1|TAVQqCd4AO/4LtLQFIEatOIfJeo=|CsD4Y7BaL8gkGSXPEDYlwQvrYJ4=";

    fn blob(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).expect("base64")
    }

    #[test]
    fn names_are_openssh_names() {
        for (host, port, name) in [
            ("h", 22, "h"),
            ("Example.ORG", 22, "example.org"),
            ("127.0.0.1", 2222, "[127.0.0.1]:2222"),
            ("::1", 22, "::1"),
            ("::1", 2200, "[::1]:2200"),
        ] {
            assert_eq!(host_name(host, port), name);
        }
    }

    #[test]
    fn which_entries_name_which_server() {
        // (host field, server name, applies)
        let cases = [
            ("127.0.0.1", "127.0.0.1", true),
            // A plain entry is the port-22 server's only.
            ("127.0.0.1", "[127.0.0.1]:2222", false),
            // And port 22 is never named with brackets.
            ("[127.0.0.1]:22", "127.0.0.1", false),
            ("[127.0.0.1]:2222", "[127.0.0.1]:2222", true),
            ("[127.0.0.1]:2222", "[127.0.0.1]:2223", false),
            ("[127.0.0.1]:2222", "[127.0.0.1]:22222", false),
            ("a.org,[127.0.0.1]:2222,b.org", "[127.0.0.1]:2222", true),
            ("*.example.org", "www.example.org", true),
            ("*.example.org", "[www.example.org]:2222", false),
            ("[*.example.org]:*", "[www.example.org]:2222", true),
            ("h?st", "host", true),
            ("h?st", "hst", false),
            ("Example.ORG", "example.org", true),
            ("*,!bad.org", "bad.org", false),
            ("!bad.org,*", "bad.org", false),
            ("*,!bad.org", "good.org", true),
            ("!bad.org", "good.org", false),
            (HASHED_2222, "[127.0.0.1]:2222", true),
            (HASHED_2222, "127.0.0.1", false),
            (HASHED_22, "127.0.0.1", true),
            (HASHED_22, "[127.0.0.1]:2222", false),
            (
                "|2|QdQtP2ZjUJy3uK6+Zrm3Vff9Vtc=|DQ9T8fDpqjqKdoMJJXY4qyUpU3w=",
                "[127.0.0.1]:2222",
                false,
            ),
            ("|1|not base64|x", "[127.0.0.1]:2222", false),
        ];
        for (field, name, applies) in cases {
            assert_eq!(host_matches(field, name), applies, "{field} for {name}");
        }
    }

    #[test]
    fn verdicts() {
        let a = blob(KEY_A);
        let changed = |line| Verdict::Changed {
            line,
            algo: "ssh-ed25519".to_string(),
        };
        // An ed25519 entry line.
        let ed = |host: &str, key: &str| format!("{host} ssh-ed25519 {key}");
        let port = "[127.0.0.1]:2222";
        // (file's lines, verdict for key A on [127.0.0.1]:2222)
        let cases: Vec<(Vec<String>, Verdict)> = vec![
            (vec![], Verdict::Unknown),
            (vec![ed(port, KEY_A)], Verdict::Known { line: 1 }),
            (
                vec![ed(HASHED_2222, KEY_A) + " comment"],
                Verdict::Known { line: 1 },
            ),
            // Another port's entry, or the plain port-22 one, holding another key: unknown,
            // not changed. Holding the same key: still unknown.
            (
                vec![ed("[127.0.0.1]:2223", KEY_B), ed("127.0.0.1", KEY_B)],
                Verdict::Unknown,
            ),
            (
                vec![ed("127.0.0.1", KEY_A), ed(HASHED_22, KEY_A)],
                Verdict::Unknown,
            ),
            // This port's entry holding another key: changed, at its line.
            (
                vec![
                    "# comment".into(),
                    String::new(),
                    ed("127.0.0.1", KEY_A),
                    ed(port, KEY_B),
                ],
                changed(4),
            ),
            (vec![ed(HASHED_2222, KEY_B)], changed(1)),
            // One entry holding the key is enough, wherever it is.
            (
                vec![ed(port, KEY_B), format!("  {port}\tssh-ed25519 {KEY_A}")],
                Verdict::Known { line: 2 },
            ),
            // Revoked wins over known.
            (
                vec![ed(port, KEY_A), ed("@revoked *", KEY_A)],
                Verdict::Revoked { line: 2 },
            ),
            // A revoked other key, or a CA, does not make the server known or changed.
            (
                vec![ed("@revoked *", KEY_B), ed("@cert-authority *", KEY_A)],
                Verdict::Unknown,
            ),
            // Lines that do not parse are skipped: unknown marker, missing key, bad base64,
            // a blob whose algorithm contradicts the line's.
            (
                vec![
                    ed(&format!("@bogus {port}"), KEY_B),
                    format!("{port} ssh-ed25519"),
                    ed(port, "!!!"),
                    format!("{port} ssh-rsa {KEY_B}"),
                ],
                Verdict::Unknown,
            ),
        ];
        for (lines, verdict) in cases {
            let file = lines.join("\n") + "\n";
            assert_eq!(check(&entries_for(&file, port), &a), verdict, "{file}");
        }
    }

    #[test]
    fn key_types_of_blobs() {
        assert_eq!(key_type(&blob(KEY_A)), Some("ssh-ed25519"));
        assert_eq!(key_type(&[0, 0, 0, 9, b'x']), None);
        assert_eq!(key_type(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
