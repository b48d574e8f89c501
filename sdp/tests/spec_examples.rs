//! The worked examples of the spec's section "Media session mapping": each
//! `<!-- sdp: NAME -->` block of `spec/protocol.md` must be exactly what this crate
//! exports for the example's inputs, defined here.

use std::fs;
use std::path::Path;

use precall_protocol::{negotiate_pair, Capabilities};

/// alice: H.264 only, a 1080p screen and camera; bob: H.264 and VP8, 720p.
fn pair() -> (Capabilities, Capabilities) {
    let alice = Capabilities::builder()
        .codecs(["h264"])
        .screen(1920, 1080)
        .camera(1920, 1080, 30)
        .bandwidth(4_000, 8_000)
        .build()
        .unwrap();
    let bob = Capabilities::builder()
        .codecs(["h264", "vp8"])
        .screen(1280, 720)
        .camera(1280, 720, 30)
        .bandwidth(4_000, 8_000)
        .build()
        .unwrap();
    (alice, bob)
}

/// bob's receive-only tablet: no camera, VP8 only, a 1024x768 screen.
fn tablet() -> Capabilities {
    Capabilities::builder()
        .codecs(["vp8"])
        .screen(1024, 768)
        .bandwidth(1_000, 2_000)
        .build()
        .unwrap()
}

/// The examples, by name: the exported section text. `md` is the spec, for the example
/// whose input (a WebRTC stack's description) is itself a block of it.
fn examples(md: &str) -> Vec<(&'static str, String)> {
    let (alice, bob) = pair();
    let params = negotiate_pair(&alice, &bob);
    let offer = precall_sdp::offer(&alice, &params).unwrap();
    let answer = precall_sdp::answer(&bob, &params.mirrored(), &offer).unwrap();
    let t = tablet();
    let to_tablet = negotiate_pair(&alice, &t);
    let one_way = precall_sdp::offer(&alice, &to_tablet).unwrap();
    // Section 18.4: alice's offer put into her browser's own description.
    let stack = block(md, "stack_offer_alice").unwrap_or_default();
    let applied = precall_sdp::apply(&stack, &offer)
        .unwrap_or_else(|e| format!("precall_sdp::apply failed: {e}"));
    vec![
        ("offer_alice_to_bob", offer.to_string()),
        ("answer_bob_to_alice", answer.to_string()),
        ("offer_alice_to_tablet", one_way.to_string()),
        ("applied_offer_alice", applied),
    ]
}

/// The content of the fenced block after `<!-- sdp: NAME -->`.
fn block(md: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- sdp: {name} -->");
    let rest = &md[md.find(&marker)? + marker.len()..];
    let rest = rest.trim_start_matches('\n').strip_prefix("```sdp\n")?;
    Some(rest[..rest.find("```")?].to_owned())
}

#[test]
fn the_spec_shows_exactly_what_the_crate_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/protocol.md");
    let md = fs::read_to_string(&path).unwrap();
    assert!(
        block(&md, "stack_offer_alice").is_some(),
        "spec/protocol.md has no `<!-- sdp: stack_offer_alice -->` block"
    );
    for (name, text) in examples(&md) {
        let shown = block(&md, name)
            .unwrap_or_else(|| panic!("spec/protocol.md has no `<!-- sdp: {name} -->` block"));
        // SDP lines end with CRLF (RFC 8866 §5); the spec shows them with LF.
        let text = text.replace("\r\n", "\n");
        assert_eq!(
            shown.trim_end(),
            text.trim_end(),
            "the spec's {name} differs; it must read:\n{text}"
        );
    }
}

/// The check is not blind: a changed character is caught.
#[test]
fn a_changed_example_is_caught() {
    let (name, text) = examples("").remove(0);
    let text = text.replace("\r\n", "\n");
    let md = format!(
        "<!-- sdp: {name} -->\n```sdp\n{}\n```\n",
        text.replace("42e0", "42e1")
    );
    assert_ne!(block(&md, name).unwrap().trim_end(), text.trim_end());
    let md = format!("<!-- sdp: {name} -->\n```sdp\n{text}\n```\n");
    assert_eq!(block(&md, name).unwrap().trim_end(), text.trim_end());
}
