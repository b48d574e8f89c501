//! Capability sets and call parameters: the tests' capabilities, their JSON, and call
//! parameters in words.

use precall_protocol::{negotiate_pair, Capabilities, CpuClass};
use serde_json::{json, Value};

/// A capability set: `codecs` both ways, a 16:9 screen and camera `width` pixels wide,
/// `fps` frames per second, high CPU, 8 Mbit/s each way (the core's `sample_caps`).
pub fn caps(codecs: &[&str], width: u16, fps: u16) -> Capabilities {
    let height = width / 16 * 9;
    Capabilities::builder()
        .codecs(codecs.iter().copied())
        .screen(width, height)
        .camera(width, height, fps)
        .cpu(CpuClass::High)
        .bandwidth(8000, 8000)
        .build()
        .expect("the tests' capabilities are valid")
}

/// The phone of the spec's examples (`bob-phone`): portrait screen, mid CPU.
pub fn phone_caps() -> Capabilities {
    serde_json::from_value(json!({
        "encode": ["vp8", "h264"], "decode": ["av1", "vp8", "h264"],
        "screen": {"width": 1080, "height": 2340},
        "camera": {"max": {"width": 1080, "height": 1920}, "max_fps": 30},
        "cpu": "mid", "bandwidth": {"up_kbps": 4000, "down_kbps": 12000}
    }))
    .expect("valid capabilities")
}

/// A capability set as a JSON value, exactly as on the wire.
pub fn caps_json(c: &Capabilities) -> Value {
    serde_json::to_value(c).expect("capabilities serialise")
}

/// The call parameters the core computes for a call from a terminal with `me` to one
/// with `them`, as JSON (`{"send":…,"recv":…}`, the Direction JSON of the core).
pub fn params_json(me: &Capabilities, them: &Capabilities) -> Value {
    serde_json::to_value(negotiate_pair(me, them)).expect("params serialise")
}

/// One direction of a call in words: `h264 1280x720@30 2500 kbit/s` or `off (no_camera)`.
pub fn describe_direction(d: &Value) -> String {
    if let Some(v) = d.get("video") {
        format!(
            "{} {}x{}@{} {} kbit/s",
            v["codec"].as_str().unwrap_or("?"),
            v["width"],
            v["height"],
            v["fps"],
            v["bitrate_kbps"]
        )
    } else if let Some(off) = d.get("off") {
        format!("off ({})", off.as_str().unwrap_or("?"))
    } else {
        d.to_string()
    }
}

/// Call parameters (`{"send","recv"}`) in words.
pub fn describe_params(p: &Value) -> String {
    format!(
        "send {} | recv {}",
        describe_direction(&p["send"]),
        describe_direction(&p["recv"])
    )
}

/// The parameters of a table row or a `peer_online` event (`params` member, or
/// `send`/`recv` members directly).
pub fn params_of(v: &Value) -> Value {
    if let Some(p) = v.get("params") {
        return p.clone();
    }
    json!({"send": v["send"], "recv": v["recv"]})
}
