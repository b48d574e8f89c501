//! Replays every input under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`
//! through the fuzz targets' bodies (`precall_protocol::fuzz`) on the stable toolchain,
//! so that a crash found once can never come back unnoticed, with or without nightly
//! and cargo-fuzz.

use std::path::{Path, PathBuf};

use precall_protocol::fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

/// Runs every file of `fuzz/<kind>/<target>/` through its target; returns how many
/// ran, and the failures.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failed = Vec::new();
    for (name, body) in TARGETS {
        for path in files(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            ran += 1;
            if let Err(e) = std::panic::catch_unwind(|| body(&data)) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failed.push(format!("{name}: {}: {why}", path.display()));
            }
        }
    }
    (ran, failed)
}

#[test]
fn every_seed_corpus_file_passes() {
    let (ran, failed) = replay("corpus");
    println!("replayed {ran} corpus files");
    for (name, _) in TARGETS {
        let n = files(&fuzz_dir().join("corpus").join(name)).len();
        assert!(n >= 3, "target {name} has only {n} seed files");
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_regression_passes() {
    let (ran, failed) = replay("regressions");
    println!("replayed {ran} regression files");
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Every object member name and `type` value in the spec's wire examples.
fn wire_tokens(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.insert(format!("\\\"{k}\\\":"));
                if k == "type" {
                    if let Some(t) = x.as_str() {
                        out.insert(format!("\\\"type\\\":\\\"{t}\\\""));
                    }
                }
                wire_tokens(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| wire_tokens(x, out)),
        _ => {}
    }
}

#[test]
fn the_dictionary_names_every_type_and_member_of_the_wire_examples() {
    use precall_protocol::message::{ClientMessage, ServerMessage, WireMessage};
    let dict = std::fs::read_to_string(fuzz_dir().join("precall.dict")).expect("dictionary");
    let entries: Vec<&str> = dict
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once('='))
        .filter_map(|(_, v)| v.strip_prefix('"')?.strip_suffix('"'))
        .collect();
    let mut wanted = std::collections::BTreeSet::new();
    for t in ClientMessage::TYPES.iter().chain(ServerMessage::TYPES) {
        wanted.insert(format!("\\\"type\\\":\\\"{t}\\\""));
    }
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    // The message examples (the negotiation and fingerprint tables are not messages).
    for path in files(&vectors)
        .into_iter()
        .filter(|p| !p.ends_with("negotiate.json") && !p.ends_with("fingerprint.json"))
    {
        let text = std::fs::read_to_string(&path).expect("vector");
        let v: serde_json::Value = serde_json::from_str(&text).expect("vector JSON");
        wire_tokens(&v, &mut wanted);
    }
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !entries.contains(&w.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from fuzz/precall.dict: {missing:?}"
    );
    assert!(entries.len() > 60, "only {} entries", entries.len());
}
