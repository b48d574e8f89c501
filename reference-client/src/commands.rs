//! The commands read from standard input, in their two forms: a line of words
//! (`call bob/3`) and a JSON object (`{"cmd":"call","to":"bob/3"}`). One parser per
//! form, one [`Command`] for both.

use std::path::PathBuf;

use precall_protocol::{CallId, Endpoint, SessionId, UserId};
use serde_json::{Map, Value};

use crate::caps::{parse_cpu, split_codecs, CapsFlags, CapsSource};

/// Who to call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The first online terminal of this user in the table.
    User(UserId),
    /// This terminal.
    Endpoint(Endpoint),
}

/// One command from the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Show the table: contacts, presence and pre-negotiated parameters.
    Table,
    /// Place a call: the fast path, or the prior-art call that exchanges capabilities.
    Call {
        /// The callee.
        to: Target,
        /// Whether to use the prior-art call.
        prior_art: bool,
    },
    /// Ask a contact terminal for its capabilities (the query-first baseline): the
    /// answer is shown with the parameters negotiated from it; the table is not changed.
    Query(Target),
    /// Accept (`answer`) or reject (`reject`) an incoming call.
    Answer {
        /// The call.
        call: CallId,
        /// `true` to accept.
        accept: bool,
    },
    /// End a call.
    Hangup(CallId),
    /// Change this terminal's capabilities.
    Caps(CapsSource),
    /// Add a user to the contact list.
    Add(UserId),
    /// Remove a user from the contact list.
    Remove(UserId),
    /// Log out and exit (`logout` and `quit` alike).
    Logout,
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError {
    /// `unknown_command` or `bad_command`.
    pub code: &'static str,
    /// For people.
    pub detail: String,
}

impl CommandError {
    fn unknown(word: &str) -> Self {
        Self {
            code: "unknown_command",
            detail: format!("unknown command {word:?}; {USAGE}"),
        }
    }

    fn bad(detail: impl Into<String>) -> Self {
        Self {
            code: "bad_command",
            detail: detail.into(),
        }
    }
}

/// A one-line summary of the text form.
pub const USAGE: &str = "commands: table | call USER[/SESSION] | call-prior-art USER[/SESSION] | \
query USER[/SESSION] | answer CALL | reject CALL | hangup CALL | caps FILE | caps codecs=LIST [width=N] [fps=N] \
[cpu=CLASS] [up_kbps=N] [down_kbps=N] | add USER | remove USER | logout | quit";

/// Parses a line of the text form. A blank line is no command.
pub fn parse_text(line: &str) -> Result<Option<Command>, CommandError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&word, args)) = words.split_first() else {
        return Ok(None);
    };
    let one = || match args {
        [arg] => Ok(*arg),
        _ => Err(CommandError::bad(format!("{word} takes one argument"))),
    };
    let none = || {
        if args.is_empty() {
            Ok(())
        } else {
            Err(CommandError::bad(format!("{word} takes no argument")))
        }
    };
    let cmd = match word {
        "table" => none().map(|()| Command::Table)?,
        "call" => Command::Call {
            to: target(one()?)?,
            prior_art: false,
        },
        "call-prior-art" | "call_prior_art" => Command::Call {
            to: target(one()?)?,
            prior_art: true,
        },
        "query" => Command::Query(target(one()?)?),
        "answer" | "reject" => Command::Answer {
            call: call_id(one()?)?,
            accept: word == "answer",
        },
        "hangup" => Command::Hangup(call_id(one()?)?),
        "caps" => Command::Caps(caps_text(args)?),
        "add" => Command::Add(user(one()?)?),
        "remove" => Command::Remove(user(one()?)?),
        "logout" | "quit" => none().map(|()| Command::Logout)?,
        other => return Err(CommandError::unknown(other)),
    };
    Ok(Some(cmd))
}

/// Parses a line of the JSON form: an object with a `cmd` member. A blank line is no
/// command.
pub fn parse_json(line: &str) -> Result<Option<Command>, CommandError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_str(line).map_err(|e| CommandError::bad(format!("not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(CommandError::bad("a command is a JSON object"));
    };
    let word = match obj.get("cmd") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(CommandError::bad("missing string member \"cmd\"")),
    };
    let cmd = match word {
        "table" => Command::Table,
        "call" | "call_prior_art" | "call-prior-art" => Command::Call {
            to: target(str_member(&obj, &["to"])?)?,
            prior_art: word != "call",
        },
        "answer" | "reject" => {
            let accept = match obj.get("accept") {
                None => word == "answer",
                Some(Value::Bool(b)) => *b && word == "answer",
                Some(_) => return Err(CommandError::bad("\"accept\" must be a boolean")),
            };
            Command::Answer {
                call: call_member(&obj)?,
                accept,
            }
        }
        "query" => Command::Query(target(str_member(&obj, &["to"])?)?),
        "hangup" => Command::Hangup(call_member(&obj)?),
        "caps" => Command::Caps(caps_json(&obj)?),
        "add" => Command::Add(user(str_member(&obj, &["user", "contact"])?)?),
        "remove" => Command::Remove(user(str_member(&obj, &["user", "contact"])?)?),
        "logout" | "quit" => Command::Logout,
        other => return Err(CommandError::unknown(other)),
    };
    Ok(Some(cmd))
}

fn user(s: &str) -> Result<UserId, CommandError> {
    UserId::new(s).map_err(|e| CommandError::bad(format!("{s:?}: {e}")))
}

fn target(s: &str) -> Result<Target, CommandError> {
    match s.split_once('/') {
        None => Ok(Target::User(user(s)?)),
        Some((u, session)) => {
            let session = session
                .parse::<u64>()
                .map_err(|_| CommandError::bad(format!("{s:?}: session must be a number")))?;
            Ok(Target::Endpoint(Endpoint {
                user: user(u)?,
                session: SessionId(session),
            }))
        }
    }
}

fn call_id(s: &str) -> Result<CallId, CommandError> {
    s.parse::<u64>()
        .map(CallId)
        .map_err(|_| CommandError::bad(format!("{s:?}: a call is a number")))
}

fn caps_text(args: &[&str]) -> Result<CapsSource, CommandError> {
    match args {
        [] => Err(CommandError::bad("caps takes FILE or codecs=LIST ...")),
        [file] if !file.contains('=') => Ok(CapsSource::File(PathBuf::from(file))),
        pairs => {
            let mut obj = Map::new();
            for pair in pairs {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| CommandError::bad(format!("{pair:?}: expected key=value")))?;
                let value = match v.parse::<u64>() {
                    Ok(n) if k != "codecs" => Value::from(n),
                    _ => Value::from(v),
                };
                obj.insert(k.to_owned(), value);
            }
            caps_flags(&obj)
        }
    }
}

fn caps_json(obj: &Map<String, Value>) -> Result<CapsSource, CommandError> {
    match obj.get("file") {
        Some(Value::String(f)) if !obj.contains_key("codecs") => {
            Ok(CapsSource::File(PathBuf::from(f)))
        }
        Some(Value::String(_)) => Err(CommandError::bad(
            "caps takes \"file\" or \"codecs\", not both",
        )),
        Some(_) => Err(CommandError::bad("\"file\" must be a string")),
        None => caps_flags(obj),
    }
}

/// The numbers form of `caps`, shared by both parsers (the text form's `key=value`
/// pairs are gathered into an object first).
fn caps_flags(obj: &Map<String, Value>) -> Result<CapsSource, CommandError> {
    const KEYS: [&str; 7] = [
        "cmd",
        "codecs",
        "width",
        "fps",
        "cpu",
        "up_kbps",
        "down_kbps",
    ];
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(CommandError::bad(format!("caps: unknown member {k:?}")));
    }
    let codecs = match obj.get("codecs") {
        Some(Value::String(s)) => split_codecs(s),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| CommandError::bad("\"codecs\" must hold strings"))?,
        Some(_) => return Err(CommandError::bad("\"codecs\" must be a string or an array")),
        None => return Err(CommandError::bad("caps needs a file or codecs")),
    };
    let mut flags = CapsFlags::with_codecs(codecs);
    if let Some(w) = num_member(obj, "width")? {
        flags.width = w;
    }
    if let Some(f) = num_member(obj, "fps")? {
        flags.fps = f;
    }
    if let Some(u) = num_member(obj, "up_kbps")? {
        flags.up_kbps = u;
    }
    if let Some(d) = num_member(obj, "down_kbps")? {
        flags.down_kbps = d;
    }
    match obj.get("cpu") {
        None => {}
        Some(Value::String(s)) => flags.cpu = parse_cpu(s).map_err(CommandError::bad)?,
        Some(_) => return Err(CommandError::bad("\"cpu\" must be a string")),
    }
    Ok(CapsSource::Flags(flags))
}

fn str_member<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Result<&'a str, CommandError> {
    for name in names {
        match obj.get(*name) {
            Some(Value::String(s)) => return Ok(s),
            Some(_) => return Err(CommandError::bad(format!("\"{name}\" must be a string"))),
            None => {}
        }
    }
    Err(CommandError::bad(format!(
        "missing string member \"{}\"",
        names[0]
    )))
}

fn num_member<T: TryFrom<u64>>(
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, CommandError> {
    let Some(v) = obj.get(name) else {
        return Ok(None);
    };
    v.as_u64()
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| CommandError::bad(format!("\"{name}\" must be a number in range")))
}

/// `call`: a number, or a string holding one.
fn call_member(obj: &Map<String, Value>) -> Result<CallId, CommandError> {
    match obj.get("call") {
        Some(Value::Number(n)) => n
            .as_u64()
            .map(CallId)
            .ok_or_else(|| CommandError::bad("\"call\" must be a non-negative integer")),
        Some(Value::String(s)) => call_id(s),
        Some(_) => Err(CommandError::bad("\"call\" must be a number")),
        None => Err(CommandError::bad("missing member \"call\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use precall_protocol::caps::CpuClass;

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn ep(s: &str, n: u64) -> Target {
        Target::Endpoint(Endpoint {
            user: u(s),
            session: SessionId(n),
        })
    }

    fn text(line: &str) -> Command {
        parse_text(line).unwrap().unwrap()
    }

    fn json(line: &str) -> Command {
        parse_json(line).unwrap().unwrap()
    }

    fn caps(codecs: &[&str], width: u16, fps: u16) -> Command {
        let flags = CapsFlags {
            width,
            fps,
            ..CapsFlags::with_codecs(codecs.iter().map(|c| c.to_string()).collect())
        };
        Command::Caps(CapsSource::Flags(flags))
    }

    /// Every command example of `JSON.md` is a command.
    #[test]
    fn the_documented_commands_parse() {
        let examples: Vec<&str> = include_str!("../JSON.md")
            .lines()
            .filter(|l| l.starts_with("{\"cmd\""))
            .collect();
        assert!(examples.len() >= 10, "{examples:?}");
        for line in examples {
            assert!(
                matches!(parse_json(line), Ok(Some(_))),
                "{line}: {:?}",
                parse_json(line)
            );
        }
    }

    #[test]
    fn text_commands_parse() {
        assert_eq!(text("table"), Command::Table);
        assert_eq!(
            text("  call   bob "),
            Command::Call {
                to: Target::User(u("bob")),
                prior_art: false
            }
        );
        assert_eq!(
            text("call bob/3"),
            Command::Call {
                to: ep("bob", 3),
                prior_art: false
            }
        );
        assert_eq!(
            text("call-prior-art bob/3"),
            Command::Call {
                to: ep("bob", 3),
                prior_art: true
            }
        );
        assert_eq!(
            text("answer 7"),
            Command::Answer {
                call: CallId(7),
                accept: true
            }
        );
        assert_eq!(
            text("reject 7"),
            Command::Answer {
                call: CallId(7),
                accept: false
            }
        );
        assert_eq!(text("hangup 9"), Command::Hangup(CallId(9)));
        assert_eq!(
            text("caps /tmp/c.json"),
            Command::Caps(CapsSource::File("/tmp/c.json".into()))
        );
        assert_eq!(
            text("caps codecs=h264,vp8 width=640 fps=15"),
            caps(&["h264", "vp8"], 640, 15)
        );
        assert_eq!(text("add carol"), Command::Add(u("carol")));
        assert_eq!(text("remove carol"), Command::Remove(u("carol")));
        assert_eq!(text("logout"), Command::Logout);
        assert_eq!(text("quit"), Command::Logout);
        assert_eq!(parse_text("   "), Ok(None));
    }

    #[test]
    fn bad_text_commands_are_refused() {
        let code = |line: &str| parse_text(line).unwrap_err().code;
        assert_eq!(code("dance"), "unknown_command");
        assert_eq!(code("call"), "bad_command");
        assert_eq!(code("call bob carol"), "bad_command");
        assert_eq!(code("call Bob"), "bad_command");
        assert_eq!(code("call bob/x"), "bad_command");
        assert_eq!(code("answer seven"), "bad_command");
        assert_eq!(code("hangup -1"), "bad_command");
        assert_eq!(code("table now"), "bad_command");
        assert_eq!(code("caps"), "bad_command");
        assert_eq!(code("caps codecs=h264 colour=red"), "bad_command");
        assert_eq!(code("caps width=640"), "bad_command");
        assert_eq!(code("caps codecs=h264 width=99999"), "bad_command");
        assert_eq!(code("add"), "bad_command");
    }

    #[test]
    fn json_commands_parse() {
        assert_eq!(json(r#"{"cmd":"table"}"#), Command::Table);
        assert_eq!(
            json(r#"{"cmd":"call","to":"bob"}"#),
            Command::Call {
                to: Target::User(u("bob")),
                prior_art: false
            }
        );
        assert_eq!(
            json(r#"{"cmd":"call_prior_art","to":"bob/3"}"#),
            Command::Call {
                to: ep("bob", 3),
                prior_art: true
            }
        );
        assert_eq!(
            json(r#"{"cmd":"answer","call":4}"#),
            Command::Answer {
                call: CallId(4),
                accept: true
            }
        );
        assert_eq!(
            json(r#"{"cmd":"answer","call":"4","accept":false}"#),
            Command::Answer {
                call: CallId(4),
                accept: false
            }
        );
        assert_eq!(
            json(r#"{"cmd":"reject","call":4}"#),
            Command::Answer {
                call: CallId(4),
                accept: false
            }
        );
        assert_eq!(
            json(r#"{"cmd":"hangup","call":4}"#),
            Command::Hangup(CallId(4))
        );
        assert_eq!(
            json(r#"{"cmd":"caps","file":"c.json"}"#),
            Command::Caps(CapsSource::File("c.json".into()))
        );
        assert_eq!(
            json(r#"{"cmd":"caps","codecs":"h264","width":640,"fps":15}"#),
            caps(&["h264"], 640, 15)
        );
        let Command::Caps(CapsSource::Flags(f)) = json(
            r#"{"cmd":"caps","codecs":["vp8","av1"],"cpu":"low","up_kbps":500,"down_kbps":900}"#,
        ) else {
            panic!("not a caps command");
        };
        assert_eq!(f.codecs, vec!["vp8", "av1"]);
        assert_eq!((f.cpu, f.up_kbps, f.down_kbps), (CpuClass::Low, 500, 900));
        assert_eq!(
            json(r#"{"cmd":"add","user":"carol"}"#),
            Command::Add(u("carol"))
        );
        assert_eq!(
            json(r#"{"cmd":"remove","user":"carol"}"#),
            Command::Remove(u("carol"))
        );
        assert_eq!(json(r#"{"cmd":"logout"}"#), Command::Logout);
        assert_eq!(json(r#"{"cmd":"quit"}"#), Command::Logout);
        assert_eq!(parse_json(""), Ok(None));
    }

    #[test]
    fn bad_json_commands_are_refused() {
        let code = |line: &str| parse_json(line).unwrap_err().code;
        assert_eq!(code(r#"{"cmd":"dance"}"#), "unknown_command");
        assert_eq!(code("table"), "bad_command");
        assert_eq!(code("[1]"), "bad_command");
        assert_eq!(code(r#"{"to":"bob"}"#), "bad_command");
        assert_eq!(code(r#"{"cmd":3}"#), "bad_command");
        assert_eq!(code(r#"{"cmd":"call"}"#), "bad_command");
        assert_eq!(code(r#"{"cmd":"call","to":7}"#), "bad_command");
        assert_eq!(code(r#"{"cmd":"call","to":"bob/"}"#), "bad_command");
        assert_eq!(code(r#"{"cmd":"answer"}"#), "bad_command");
        assert_eq!(code(r#"{"cmd":"answer","call":-1}"#), "bad_command");
        assert_eq!(
            code(r#"{"cmd":"answer","call":1,"accept":"yes"}"#),
            "bad_command"
        );
        assert_eq!(code(r#"{"cmd":"caps"}"#), "bad_command");
        assert_eq!(
            code(r#"{"cmd":"caps","file":"a","codecs":"h264"}"#),
            "bad_command"
        );
        assert_eq!(
            code(r#"{"cmd":"caps","codecs":"h264","fps":"fast"}"#),
            "bad_command"
        );
        assert_eq!(
            code(r#"{"cmd":"caps","codecs":"h264","cpu":"warp"}"#),
            "bad_command"
        );
        assert_eq!(code(r#"{"cmd":"add","user":"Carol"}"#), "bad_command");
        let unknown = parse_json(r#"{"cmd":"dance"}"#).unwrap_err();
        assert!(unknown.detail.contains("dance"));
    }
}
