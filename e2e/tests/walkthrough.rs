//! The in-memory walkthrough (`cargo run -p precall-protocol --example walkthrough`),
//! whose narration is deterministic (the state machines wired in memory, time a
//! counter), as an insta snapshot: a change in what a user is shown (a table, a call
//! path, a clean-up) shows up for review. The end-to-end demo's narration carries
//! measured times and is not snapshotted.

use std::process::Command;

use precall_e2e::*;

#[test]
fn the_walkthrough_narrates_the_same_story() -> Res<()> {
    let out = Command::new(example_bin("walkthrough")?).output()?;
    ensure!(
        out.status.success(),
        "the walkthrough failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
    Ok(())
}
