//! The command lines' `--help`, as insta snapshots: what an operator reads. A changed
//! flag, default or description shows up for review (`cargo insta review`).

use std::path::Path;
use std::process::Command;

use precall_e2e::*;

fn help(bin: &Path, args: &[&str]) -> Res<String> {
    let out = Command::new(bin).args(args).arg("--help").output()?;
    ensure!(
        out.status.success(),
        "{} {args:?} --help failed: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn server_help() -> Res<()> {
    ensure_binaries()?;
    let server = server_bin();
    insta::assert_snapshot!("server", help(&server, &[])?);
    insta::assert_snapshot!("server_serve", help(&server, &["serve"])?);
    insta::assert_snapshot!("server_admin", help(&server, &["admin"])?);
    for sub in ["user", "contact", "terminal", "import"] {
        insta::assert_snapshot!(
            format!("server_admin_{sub}"),
            help(&server, &["admin", sub])?
        );
    }
    Ok(())
}

#[test]
fn client_help() -> Res<()> {
    ensure_binaries()?;
    insta::assert_snapshot!("client", help(&client_bin(), &[])?);
    Ok(())
}
