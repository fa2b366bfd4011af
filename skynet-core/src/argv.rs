//! Argument-vector templates: how a user's `exec = ["rsync", "-a", "{path}", "…/{remote}"]`
//! becomes the exact arguments of one program run.
//!
//! Why a template of argv elements and not a command line: file names may hold spaces,
//! newlines, quotes, `$(…)`, backticks or bytes that are not UTF-8. No shell ever sees them;
//! each element of the template becomes exactly ONE argument after substitution (no splitting,
//! no globbing, no quoting to get wrong), and substitution works on raw bytes so that a name
//! arrives at the program byte for byte.
//!
//! Placeholders, usable anywhere inside an argument (not in the program):
//! - `{path}`: the absolute local path of the target;
//! - `{remote}`: the target's path relative to the source root (the mapped path);
//! - `{action}`: `send`, `delete` or `move`;
//! - `{from}`, `{to}`: a move's source and target (relative); for other actions both are the
//!   target;
//! - `{{` and `}}`: a literal `{` and `}`.
//!
//! Anything else in braces is refused when the template is parsed, so a typo in a config file
//! fails at start-up instead of sending files to a literal `{pth}`.
//!
//! Note that a relative name may begin with `-`: write `dst/{remote}` or put `--` before it
//! when the program would take a bare `{remote}` for an option (`{path}` is absolute, so it
//! always begins with `/`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::action::ActionKind;

/// The names a template may use, in the order error messages list them.
pub const PLACEHOLDERS: [&str; 5] = ["path", "remote", "action", "from", "to"];

/// Why a template was refused. Messages name the argument concerned so the user can find it in
/// the config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the command is empty: it needs at least a program")]
    Empty,
    #[error("the program (first element of the command) is empty")]
    EmptyProgram,
    #[error("the program {0:?} contains a placeholder; only its arguments may")]
    PlaceholderInProgram(String),
    #[error(
        "unknown placeholder {{{name}}} in argument {arg:?}; known: {}; write {{{{ and }}}} for literal braces",
        known_list()
    )]
    Unknown { name: String, arg: String },
    #[error("unclosed '{{' in argument {0:?}; write {{{{ for a literal brace")]
    Unclosed(String),
    #[error("unmatched '}}' in argument {0:?}; write }}}} for a literal brace")]
    Unmatched(String),
}

fn known_list() -> String {
    PLACEHOLDERS
        .iter()
        .map(|p| format!("{{{p}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One value a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Path,
    Remote,
    Action,
    From,
    To,
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "path" => Var::Path,
            "remote" => Var::Remote,
            "action" => Var::Action,
            "from" => Var::From,
            "to" => Var::To,
            _ => return None,
        })
    }
}

/// A piece of one argument: literal bytes (braces already unescaped) or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Var(Var),
}

/// A parsed, validated argv template. Cheap to render many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The program, literal (placeholders are refused there so it can be checked at start-up
    /// and named in logs without knowing any file).
    program: OsString,
    /// The arguments after the program, each a sequence of pieces.
    args: Vec<Vec<Piece>>,
    /// The elements as written, for `Display`.
    source: Vec<String>,
}

/// The values substituted into a template for one action. Paths are borrowed as raw
/// `OsStr`/`Path` so that non-UTF-8 names are never converted.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub action: ActionKind,
    /// Absolute local path of the target.
    pub path: &'a Path,
    /// The target relative to the source root.
    pub remote: &'a OsStr,
    /// A move's source; the target for other actions.
    pub from: &'a OsStr,
    /// A move's target; the target for other actions.
    pub to: &'a OsStr,
}

impl<'a> Vars<'a> {
    /// The same values as environment variables for the program (`SKYNET_ACTION`,
    /// `SKYNET_PATH`, `SKYNET_REMOTE`, and `SKYNET_FROM`/`SKYNET_TO` for a move): a
    /// convenience for scripts.
    pub fn env(&self) -> Vec<(&'static str, &'a OsStr)> {
        let mut env = vec![
            ("SKYNET_ACTION", OsStr::new(self.action.as_str())),
            ("SKYNET_PATH", self.path.as_os_str()),
            ("SKYNET_REMOTE", self.remote),
        ];
        if self.action == ActionKind::Move {
            env.push(("SKYNET_FROM", self.from));
            env.push(("SKYNET_TO", self.to));
        }
        env
    }

    /// The values for a send or a delete of `remote`, found locally at `path`.
    pub fn single(action: ActionKind, path: &'a Path, remote: &'a OsStr) -> Self {
        Vars {
            action,
            path,
            remote,
            from: remote,
            to: remote,
        }
    }

    /// The values for a move from `from` to `to`, whose target is found locally at `path`.
    pub fn moved(path: &'a Path, from: &'a OsStr, to: &'a OsStr) -> Self {
        Vars {
            action: ActionKind::Move,
            path,
            remote: to,
            from,
            to,
        }
    }

    fn get(&self, var: Var) -> &'a [u8] {
        match var {
            Var::Path => self.path.as_os_str().as_bytes(),
            Var::Remote => self.remote.as_bytes(),
            Var::Action => self.action.as_str().as_bytes(),
            Var::From => self.from.as_bytes(),
            Var::To => self.to.as_bytes(),
        }
    }
}

impl Template {
    /// Parses a command as written in the configuration: the program, then its arguments.
    pub fn parse(argv: Vec<String>) -> Result<Template, TemplateError> {
        let mut elements = argv.iter();
        let program = elements.next().ok_or(TemplateError::Empty)?;
        if program.is_empty() {
            return Err(TemplateError::EmptyProgram);
        }
        let program_pieces = parse_arg(program)?;
        let program = match program_pieces.as_slice() {
            [] => String::new(),
            [Piece::Literal(text)] => text.clone(),
            _ => return Err(TemplateError::PlaceholderInProgram(program.clone())),
        };
        let args = elements.map(|a| parse_arg(a)).collect::<Result<_, _>>()?;
        Ok(Template {
            program: program.into(),
            args,
            source: argv,
        })
    }

    /// The program to run (the first element), as the operating system will look it up: a
    /// path when it contains a `/`, else a name searched on `PATH`.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The program for logs and messages.
    pub fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// The full argv for one action, program first: exactly one element per template element.
    pub fn render(&self, vars: &Vars<'_>) -> Vec<OsString> {
        let mut out = Vec::with_capacity(1 + self.args.len());
        out.push(self.program.clone());
        for pieces in &self.args {
            let mut arg: Vec<u8> = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Literal(text) => arg.extend_from_slice(text.as_bytes()),
                    Piece::Var(var) => arg.extend_from_slice(vars.get(*var)),
                }
            }
            out.push(OsString::from_vec(arg));
        }
        out
    }
}

impl Template {
    /// The template as written (placeholders, not values). Its arguments may carry a token
    /// (`--header=Authorization: …`): show it only when the user asked (`-v`); everywhere
    /// else, [`Display`](fmt::Display) gives the program and a count of arguments.
    pub fn as_written(&self) -> String {
        format!("{:?}", self.source)
    }

    /// Placeholders standing at the start of an argument with no `--` argument before them,
    /// whose value is a relative path (`{remote}`, `{from}`, `{to}`): a file named `-f` would
    /// reach the program as an option. (`{path}` is absolute, so it starts with `/`.)
    pub fn option_like_placeholders(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        for arg in &self.args {
            if matches!(arg.as_slice(), [Piece::Literal(l)] if l == "--") {
                break;
            }
            let name = match arg.first() {
                Some(Piece::Var(Var::Remote)) => "{remote}",
                Some(Piece::Var(Var::From)) => "{from}",
                Some(Piece::Var(Var::To)) => "{to}",
                _ => continue,
            };
            if !found.contains(&name) {
                found.push(name);
            }
        }
        found
    }
}

impl fmt::Display for Template {
    /// The program and how many arguments it takes, never the arguments: safe for logs,
    /// `status` and metrics labels (see [`Template::as_written`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.args.len();
        let plural = if n == 1 { "" } else { "s" };
        write!(f, "{} ({n} argument{plural})", self.program_name())
    }
}

/// Splits one element into literal text and placeholders, unescaping `{{` and `}}`.
fn parse_arg(arg: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = arg.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                chars.next();
                literal.push('{');
            }
            '{' => {
                let rest = &arg[i + 1..];
                let end = rest
                    .find('}')
                    .ok_or_else(|| TemplateError::Unclosed(arg.to_string()))?;
                let name = &rest[..end];
                let var = Var::parse(name).ok_or_else(|| TemplateError::Unknown {
                    name: name.to_string(),
                    arg: arg.to_string(),
                })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Var(var));
                // Skip the name and the closing brace (all ASCII or not, by char).
                for _ in 0..name.chars().count() + 1 {
                    chars.next();
                }
            }
            '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                chars.next();
                literal.push('}');
            }
            '}' => return Err(TemplateError::Unmatched(arg.to_string())),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn template(argv: &[&str]) -> Result<Template, TemplateError> {
        Template::parse(argv.iter().map(|s| s.to_string()).collect())
    }

    fn os(bytes: &[u8]) -> OsString {
        OsString::from_vec(bytes.to_vec())
    }

    #[test]
    fn substitutes_every_placeholder_inside_arguments() {
        let t = template(&[
            "prog",
            "{action}",
            "{path}",
            "host:/dst/{remote}",
            "{from}->{to}",
            "-",
        ])
        .unwrap();
        let path = PathBuf::from("/src/a/b.txt");
        let (from, to) = (OsStr::new("a/old.txt"), OsStr::new("a/b.txt"));
        let argv = t.render(&Vars::moved(&path, from, to));
        let want: Vec<OsString> = [
            "prog",
            "move",
            "/src/a/b.txt",
            "host:/dst/a/b.txt",
            "a/old.txt->a/b.txt",
            "-",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(argv, want);
        assert_eq!(t.program(), OsStr::new("prog"));
    }

    #[test]
    fn from_and_to_are_the_target_outside_moves() {
        let t = template(&["p", "{action}", "{from}", "{to}", "{remote}"]).unwrap();
        let path = PathBuf::from("/src/x");
        let argv = t.render(&Vars::single(ActionKind::Delete, &path, OsStr::new("x")));
        assert_eq!(argv, ["p", "delete", "x", "x", "x"].map(OsString::from));
    }

    #[test]
    fn hostile_names_stay_one_argument_byte_for_byte() {
        let hostile: &[&[u8]] = &[
            b"with space",
            b"new\nline",
            b"quote'single",
            b"quote\"double",
            b"$(rm -rf x)",
            b"`rm -rf x`",
            b"-rf",
            b"--help",
            b"a;b && c | d > e",
            b"*?[glob]",
            b"~user",
            b"\xff\xfe not utf-8 \x80",
            b"{path}",
            b"tab\there",
        ];
        let t = template(&["prog", "{path}", "dst/{remote}", "{remote}"]).unwrap();
        for name in hostile {
            let path = PathBuf::from(os(&[b"/src/".as_slice(), name].concat()));
            let remote = os(name);
            let argv = t.render(&Vars::single(ActionKind::Send, &path, &remote));
            assert_eq!(argv.len(), 4, "{name:?}");
            assert_eq!(argv[1].as_bytes(), path.as_os_str().as_bytes());
            assert_eq!(argv[2].as_bytes(), [b"dst/".as_slice(), name].concat());
            assert_eq!(argv[3].as_bytes(), *name);
        }
    }

    #[test]
    fn literal_braces() {
        let t = template(&["prog", "{{path}}", "a}}b{{c", "{{{remote}}}"]).unwrap();
        let path = PathBuf::from("/s/f");
        let argv = t.render(&Vars::single(ActionKind::Send, &path, OsStr::new("f")));
        assert_eq!(argv, ["prog", "{path}", "a}b{c", "{f}"].map(OsString::from));
    }

    #[test]
    fn refuses_unknown_placeholders_naming_them_and_the_known_ones() {
        let err = template(&["prog", "x{pth}y"]).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Unknown {
                name: "pth".into(),
                arg: "x{pth}y".into()
            }
        );
        let message = err.to_string();
        assert!(message.contains("{pth}"), "{message}");
        for known in PLACEHOLDERS {
            assert!(message.contains(&format!("{{{known}}}")), "{message}");
        }
        assert!(matches!(
            template(&["prog", "{}"]),
            Err(TemplateError::Unknown { .. })
        ));
        assert!(matches!(
            template(&["prog", "{PATH}"]),
            Err(TemplateError::Unknown { .. })
        ));
    }

    #[test]
    fn finds_relative_placeholders_that_may_read_as_options() {
        let found = |t: &[&str]| template(t).unwrap().option_like_placeholders();
        assert_eq!(found(&["logger", "delivered {remote}"]), Vec::<&str>::new());
        assert_eq!(found(&["logger", "{remote}"]), ["{remote}"]);
        assert_eq!(
            found(&["mv", "{from}", "{to}", "{from}"]),
            ["{from}", "{to}"]
        );
        assert_eq!(found(&["mv", "--", "{from}", "{to}"]), Vec::<&str>::new());
        assert_eq!(found(&["cp", "{path}", "x:/{remote}"]), Vec::<&str>::new());
    }

    #[test]
    fn refuses_malformed_templates() {
        assert_eq!(Template::parse(vec![]), Err(TemplateError::Empty));
        assert_eq!(template(&["", "{path}"]), Err(TemplateError::EmptyProgram));
        assert!(matches!(
            template(&["{path}"]),
            Err(TemplateError::PlaceholderInProgram(_))
        ));
        assert!(matches!(
            template(&["prog", "{path"]),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            template(&["prog", "a}b"]),
            Err(TemplateError::Unmatched(_))
        ));
    }

    #[test]
    fn program_may_hold_escaped_braces_and_non_ascii() {
        let t = template(&["/opt/wé{{x}}/bin", "{path}"]).unwrap();
        assert_eq!(t.program(), OsStr::new("/opt/wé{x}/bin"));
        let t = template(&["just-a-program"]).unwrap();
        let path = PathBuf::from("/s/f");
        let argv = t.render(&Vars::single(ActionKind::Send, &path, OsStr::new("f")));
        assert_eq!(argv, [OsString::from("just-a-program")]);
    }

    #[test]
    fn display_shows_the_template_not_values() {
        let t = template(&["rsync", "{path}"]).unwrap();
        assert_eq!(t.as_written(), r#"["rsync", "{path}"]"#);
        assert_eq!(t.to_string(), "rsync (1 argument)");
    }
}
