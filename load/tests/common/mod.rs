//! What the `precall-load` tests share: the tool's path and the server binary next to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The `precall-load` binary under test.
pub const LOAD: &str = env!("CARGO_BIN_EXE_precall-load");

/// `precall-server`, next to `precall-load`. Under `cargo test` it is built first with
/// the same profile (cheap when fresh), so the test never drives a stale server.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(LOAD)
            .parent()
            .expect("precall-load has a directory");
        let bin = dir.join(format!("precall-server{}", std::env::consts::EXE_SUFFIX));
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-q", "-p", "precall-server"])
                .arg("--manifest-path")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"));
            if let Some(target_dir) = dir.parent() {
                cmd.arg("--target-dir").arg(target_dir);
            }
            match dir.file_name().and_then(|n| n.to_str()) {
                Some("release") => {
                    cmd.arg("--release");
                }
                // `cargo test` builds this package's binaries with the test profile.
                Some("debug") => {
                    cmd.args(["--profile", "test"]);
                }
                _ => {}
            }
            let status = cmd.stdin(Stdio::null()).status().expect("run cargo");
            assert!(status.success(), "cannot build precall-server");
        }
        assert!(bin.is_file(), "{} missing", bin.display());
        bin
    })
    .clone()
}
