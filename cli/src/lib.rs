//! Command-line helpers shared by `precall-server` and `precall-client`.
//!
//! [`PasswordArgs`]: where a password comes from. A password given on the command line
//! is visible to every local user (`ps`, `/proc/PID/cmdline`) and stays in shell
//! history, so, as with `psql`, `mysql` or `ssh`, the binaries read it from a file
//! (`--password-file`), from the environment (`PRECALL_PASSWORD`), or from a prompt on
//! the terminal that does not echo. `--password` still works, with a warning.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

/// The environment variable a password may come from.
pub const PASSWORD_ENV: &str = "PRECALL_PASSWORD";

/// Where the password comes from, in this order: `--password-file`, `--password`
/// (with a warning), the `PRECALL_PASSWORD` environment variable, a prompt without echo
/// on the controlling terminal.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of FILE (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The password itself. Every local user can see it (ps) and it stays in shell
    /// history: prefer --password-file, PRECALL_PASSWORD or the prompt.
    #[arg(long, value_name = "PW", conflicts_with = "password_file")]
    pub password: Option<String>,
}

/// Why no password could be read.
#[derive(Debug)]
pub struct NoPassword(pub String);

impl std::fmt::Display for NoPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoPassword {}

impl PasswordArgs {
    /// The password, from the first source given (see the type's documentation);
    /// `prompt` is shown on the terminal when it is asked for.
    pub fn read(&self, prompt: &str) -> Result<String, NoPassword> {
        if let Some(path) = &self.password_file {
            return first_line(path);
        }
        if let Some(pw) = &self.password {
            eprintln!(
                "warning: a password given with --password is visible to every local user \
                 and kept in shell history; use --password-file, {PASSWORD_ENV} or the prompt"
            );
            return Ok(pw.clone());
        }
        if let Ok(pw) = std::env::var(PASSWORD_ENV) {
            return Ok(pw);
        }
        if !std::io::stderr().is_terminal() && !std::io::stdin().is_terminal() {
            return Err(NoPassword(format!(
                "no password: give --password-file FILE, set {PASSWORD_ENV}, or run on a \
                 terminal to be asked"
            )));
        }
        rpassword::prompt_password(prompt)
            .map_err(|e| NoPassword(format!("cannot read a password from the terminal: {e}")))
    }
}

/// The first line of a file (`-`: standard input), without its line ending.
fn first_line(path: &PathBuf) -> Result<String, NoPassword> {
    let mut line = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().read_line(&mut line)
    } else {
        std::fs::File::open(path).and_then(|f| std::io::BufReader::new(f).read_line(&mut line))
    };
    read.map_err(|e| NoPassword(format!("cannot read {}: {e}", path.display())))?;
    let pw = line.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        return Err(NoPassword(format!(
            "{}: no password on its first line",
            path.display()
        )));
    }
    Ok(pw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gives_its_first_line_and_wins_over_the_rest() {
        let dir = std::env::temp_dir().join(format!("precall-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\r\nsecond line\n").unwrap();
        let args = PasswordArgs {
            password_file: Some(file.clone()),
            password: None,
        };
        assert_eq!(args.read("pw: ").unwrap(), "s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(
            args.read("pw: ").is_err(),
            "an empty first line is no password"
        );
        let missing = PasswordArgs {
            password_file: Some(dir.join("missing")),
            password: None,
        };
        assert!(missing.read("pw: ").unwrap_err().0.contains("cannot read"));
        let given = PasswordArgs {
            password_file: None,
            password: Some("flag".into()),
        };
        assert_eq!(given.read("pw: ").unwrap(), "flag");
        let _ = std::fs::remove_dir_all(dir);
    }
}
