//! Building this terminal's capabilities from a wire JSON file or from a few numbers.
//!
//! Validation is the core's: [`Capabilities::new`] and the wire decoder check every
//! range; this module only turns text into their inputs and their errors into messages.

use std::path::{Path, PathBuf};

use precall_protocol::caps::{Bandwidth, Camera, CpuClass, Size};
use precall_protocol::{Capabilities, Codec};

/// Default processing class when none is given.
pub const DEFAULT_CPU: CpuClass = CpuClass::High;
/// Default bandwidth each way, in kbit/s, when none is given.
pub const DEFAULT_KBPS: u32 = 8000;
/// Default screen and camera width when only codecs are given.
pub const DEFAULT_WIDTH: u16 = 1280;
/// Default camera frame rate when only codecs are given.
pub const DEFAULT_FPS: u16 = 30;

/// Capabilities described by a few numbers: the codecs (encode and decode alike), a
/// 16:9 screen `width` pixels wide and a camera of the same size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsFlags {
    /// Codec tokens, most preferred first.
    pub codecs: Vec<String>,
    /// Screen and camera width in pixels; the height is `width / 16 * 9`.
    pub width: u16,
    /// Camera frame rate.
    pub fps: u16,
    /// Processing class.
    pub cpu: CpuClass,
    /// Upstream bandwidth, kbit/s.
    pub up_kbps: u32,
    /// Downstream bandwidth, kbit/s.
    pub down_kbps: u32,
}

impl CapsFlags {
    /// The given codecs with the default numbers.
    pub fn with_codecs(codecs: Vec<String>) -> Self {
        Self {
            codecs,
            width: DEFAULT_WIDTH,
            fps: DEFAULT_FPS,
            cpu: DEFAULT_CPU,
            up_kbps: DEFAULT_KBPS,
            down_kbps: DEFAULT_KBPS,
        }
    }

    /// Validates and builds the capability set.
    pub fn build(&self) -> Result<Capabilities, String> {
        let codecs = self
            .codecs
            .iter()
            .map(|c| Codec::new(c.as_str()).map_err(|e| format!("codec {c:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let size = Size {
            width: self.width,
            height: self.width / 16 * 9,
        };
        Capabilities::new(
            codecs.clone(),
            codecs,
            size,
            Some(Camera {
                max: size,
                max_fps: self.fps,
            }),
            self.cpu,
            Bandwidth {
                up_kbps: self.up_kbps,
                down_kbps: self.down_kbps,
            },
        )
        .map_err(|e| format!("invalid capabilities: {e}"))
    }
}

/// Where capabilities come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapsSource {
    /// A file holding the wire JSON of a capabilities object.
    File(PathBuf),
    /// A few numbers.
    Flags(CapsFlags),
}

impl CapsSource {
    /// Reads or builds the capabilities.
    pub fn load(&self) -> Result<Capabilities, String> {
        match self {
            CapsSource::File(path) => from_file(path),
            CapsSource::Flags(flags) => flags.build(),
        }
    }
}

/// Reads a capabilities object in its wire JSON form.
pub fn from_file(path: &Path) -> Result<Capabilities, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("invalid capabilities in {}: {e}", path.display()))
}

/// Splits a comma-separated codec list; the empty string is the empty list.
pub fn split_codecs(list: &str) -> Vec<String> {
    if list.trim().is_empty() {
        return Vec::new();
    }
    list.split(',').map(|c| c.trim().to_owned()).collect()
}

/// Parses a processing class by its wire name (`low`, `mid`, `high`, `ultra`).
pub fn parse_cpu(s: &str) -> Result<CpuClass, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown cpu class {s:?} (expected low, mid, high or ultra)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_a_16_9_screen_and_camera() {
        let caps = CapsFlags::with_codecs(vec!["h264".into(), "vp8".into()]);
        let caps = CapsFlags {
            width: 1920,
            fps: 25,
            ..caps
        }
        .build()
        .unwrap();
        assert_eq!(caps.screen().height, 1080);
        assert_eq!(caps.camera().unwrap().max, caps.screen());
        assert_eq!(caps.camera().unwrap().max_fps, 25);
        assert_eq!(caps.encode().len(), 2);
        assert_eq!(caps.cpu(), CpuClass::High);
    }

    #[test]
    fn invalid_flags_are_refused_with_a_message() {
        let bad_codec = CapsFlags::with_codecs(vec!["H264".into()]);
        assert!(bad_codec.build().unwrap_err().contains("codec"));
        let zero = CapsFlags {
            width: 0,
            ..CapsFlags::with_codecs(vec!["h264".into()])
        };
        assert!(zero.build().unwrap_err().contains("screen size"));
        let no_fps = CapsFlags {
            fps: 0,
            ..CapsFlags::with_codecs(vec!["h264".into()])
        };
        assert!(no_fps.build().is_err());
        let dup = CapsFlags::with_codecs(vec!["h264".into(), "h264".into()]);
        assert!(dup.build().is_err());
    }

    #[test]
    fn cpu_and_codec_lists_parse() {
        assert_eq!(parse_cpu("ultra"), Ok(CpuClass::Ultra));
        assert!(parse_cpu("fast").is_err());
        assert_eq!(split_codecs("h264, vp8"), vec!["h264", "vp8"]);
        assert!(split_codecs("").is_empty());
    }

    #[test]
    fn a_wire_file_round_trips() {
        let caps = CapsFlags::with_codecs(vec!["av1".into()]).build().unwrap();
        let dir = std::env::temp_dir().join(format!("precall-client-caps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("caps.json");
        std::fs::write(&path, serde_json::to_string(&caps).unwrap()).unwrap();
        assert_eq!(CapsSource::File(path.clone()).load(), Ok(caps));
        std::fs::write(&path, "{\"encode\":[]}").unwrap();
        assert!(from_file(&path)
            .unwrap_err()
            .contains("invalid capabilities"));
        assert!(from_file(&dir.join("missing.json"))
            .unwrap_err()
            .contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
