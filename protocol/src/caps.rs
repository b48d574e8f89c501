//! Terminal capabilities and the call parameters negotiated from them.
//!
//! [`Capabilities`] is what a terminal can do (the patent's "capability parameters");
//! [`CallParams`] is what a call between two terminals will use, per direction (the
//! patent's "call parameters"). Both are validated on construction and on decoding, so
//! [`crate::negotiate()`] can rely on the spec's ranges.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::InvalidValue;
use crate::ids::Codec;

/// Largest number of codecs in one codec list.
pub const MAX_CODECS: usize = 16;
/// Largest width or height, in pixels, of a screen or camera.
pub const MAX_DIMENSION: u16 = 16_384;
/// Largest camera frame rate, in frames per second.
pub const MAX_CAMERA_FPS: u16 = 240;
/// Largest bandwidth figure, in kbit/s (10 Gbit/s).
pub const MAX_KBPS: u32 = 10_000_000;

/// A width and a height in pixels, each in `1..=MAX_DIMENSION`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Size {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
}

impl Size {
    /// The longer side.
    pub fn long(self) -> u16 {
        self.width.max(self.height)
    }

    /// The shorter side.
    pub fn short(self) -> u16 {
        self.width.min(self.height)
    }

    fn validate(self, what: &'static str) -> Result<(), InvalidValue> {
        for v in [self.width, self.height] {
            if v == 0 || v > MAX_DIMENSION {
                return Err(InvalidValue::Range {
                    what,
                    value: v.into(),
                    min: 1,
                    max: MAX_DIMENSION.into(),
                });
            }
        }
        Ok(())
    }
}

/// What the terminal's camera can capture.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Camera {
    /// Largest capture size.
    pub max: Size,
    /// Largest capture frame rate, `1..=MAX_CAMERA_FPS`.
    pub max_fps: u16,
}

/// The terminal's processing class, which bounds the pixel rate it can encode and
/// decode (spec table "CPU budgets").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CpuClass {
    /// Low-end phones and embedded devices.
    Low,
    /// Ordinary phones and laptops.
    Mid,
    /// Desktops and recent high-end phones.
    High,
    /// Workstations and room systems.
    Ultra,
}

impl CpuClass {
    /// Every class, in wire order.
    pub const ALL: [CpuClass; 4] = [Self::Low, Self::Mid, Self::High, Self::Ultra];

    /// The class's number in the fingerprint encoding (`spec`: "Fingerprint").
    pub fn code(self) -> u8 {
        match self {
            Self::Low => 0,
            Self::Mid => 1,
            Self::High => 2,
            Self::Ultra => 3,
        }
    }
}

/// Network bandwidth available to the terminal, in kbit/s, each `0..=MAX_KBPS`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Upstream (what the terminal can send).
    pub up_kbps: u32,
    /// Downstream (what the terminal can receive).
    pub down_kbps: u32,
}

/// A terminal's capabilities (claims C1–C3, C6–C8).
///
/// Always valid: build with [`Capabilities::builder`] (or [`Capabilities::new`]);
/// decoding applies the same checks.
///
/// ```
/// use precall_protocol::caps::{Capabilities, CpuClass};
///
/// let caps = Capabilities::builder()
///     .codecs(["h264", "vp8"]) // encode and decode, most preferred first
///     .screen(1920, 1080)
///     .camera(1280, 720, 30)
///     .cpu(CpuClass::High)
///     .bandwidth(4_000, 8_000)
///     .build()?;
/// assert_eq!(caps.encode()[0].as_str(), "h264");
///
/// // Invalid input is a typed error, never a panic.
/// let err = Capabilities::builder().codecs(["no spaces"]).screen(640, 360).bandwidth(1, 1).build();
/// assert!(err.is_err());
/// # Ok::<(), precall_protocol::InvalidValue>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "CapabilitiesWire")]
pub struct Capabilities {
    /// Codecs the terminal can encode, most preferred first.
    encode: Vec<Codec>,
    /// Codecs the terminal can decode, most preferred first.
    decode: Vec<Codec>,
    /// The display the terminal renders video on.
    screen: Size,
    /// The camera, or `None` for a terminal that can only receive video.
    #[serde(skip_serializing_if = "Option::is_none")]
    camera: Option<Camera>,
    /// Processing class.
    cpu: CpuClass,
    /// Network bandwidth.
    bandwidth: Bandwidth,
}

/// The unvalidated wire shape of [`Capabilities`].
#[derive(Deserialize)]
struct CapabilitiesWire {
    encode: Vec<Codec>,
    decode: Vec<Codec>,
    screen: Size,
    #[serde(default)]
    camera: Option<Camera>,
    cpu: CpuClass,
    bandwidth: Bandwidth,
}

impl TryFrom<CapabilitiesWire> for Capabilities {
    type Error = InvalidValue;
    fn try_from(w: CapabilitiesWire) -> Result<Self, InvalidValue> {
        Capabilities::new(w.encode, w.decode, w.screen, w.camera, w.cpu, w.bandwidth)
    }
}

fn check_codecs(what: &'static str, list: &[Codec]) -> Result<(), InvalidValue> {
    if list.len() > MAX_CODECS {
        return Err(InvalidValue::Length {
            what,
            len: list.len(),
            max: MAX_CODECS,
        });
    }
    for (i, c) in list.iter().enumerate() {
        if list[..i].contains(c) {
            return Err(InvalidValue::Duplicate { what, pos: i });
        }
    }
    Ok(())
}

fn check_range(what: &'static str, value: u64, min: u64, max: u64) -> Result<(), InvalidValue> {
    if value < min || value > max {
        return Err(InvalidValue::Range {
            what,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// Builds a [`Capabilities`] field by field; [`CapabilitiesBuilder::build`] validates
/// everything at once. The screen and the bandwidth are required; without a camera the
/// terminal can only receive video; the CPU class defaults to [`CpuClass::Mid`];
/// codec lists default to empty (no video that way).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct CapabilitiesBuilder {
    encode: Vec<String>,
    decode: Vec<String>,
    screen: Option<Size>,
    camera: Option<Camera>,
    cpu: Option<CpuClass>,
    bandwidth: Option<Bandwidth>,
}

impl CapabilitiesBuilder {
    /// The codecs the terminal can encode, most preferred first (codec names as the
    /// spec writes them: `h264`, `vp8`, ...).
    pub fn encode<I: IntoIterator<Item = S>, S: Into<String>>(mut self, codecs: I) -> Self {
        self.encode = codecs.into_iter().map(Into::into).collect();
        self
    }

    /// The codecs the terminal can decode, most preferred first.
    pub fn decode<I: IntoIterator<Item = S>, S: Into<String>>(mut self, codecs: I) -> Self {
        self.decode = codecs.into_iter().map(Into::into).collect();
        self
    }

    /// The same codecs to encode and to decode, most preferred first.
    pub fn codecs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, codecs: I) -> Self {
        self.encode = codecs.into_iter().map(Into::into).collect();
        self.decode = self.encode.clone();
        self
    }

    /// The display video is rendered on, in pixels.
    pub fn screen(mut self, width: u16, height: u16) -> Self {
        self.screen = Some(Size { width, height });
        self
    }

    /// The camera's largest capture size and frame rate.
    pub fn camera(mut self, width: u16, height: u16, max_fps: u16) -> Self {
        self.camera = Some(Camera {
            max: Size { width, height },
            max_fps,
        });
        self
    }

    /// The processing class.
    pub fn cpu(mut self, cpu: CpuClass) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// The bandwidth available upstream and downstream, in kbit/s.
    pub fn bandwidth(mut self, up_kbps: u32, down_kbps: u32) -> Self {
        self.bandwidth = Some(Bandwidth { up_kbps, down_kbps });
        self
    }

    /// Validates the fields as [`Capabilities::new`] does; a missing screen or
    /// bandwidth is [`InvalidValue::Missing`], a bad codec name is the codec's error.
    pub fn build(self) -> Result<Capabilities, InvalidValue> {
        let codecs = |names: Vec<String>| -> Result<Vec<Codec>, InvalidValue> {
            names.into_iter().map(Codec::new).collect()
        };
        Capabilities::new(
            codecs(self.encode)?,
            codecs(self.decode)?,
            self.screen.ok_or(InvalidValue::Missing {
                what: "screen size",
            })?,
            self.camera,
            self.cpu.unwrap_or(CpuClass::Mid),
            self.bandwidth
                .ok_or(InvalidValue::Missing { what: "bandwidth" })?,
        )
    }
}

impl Capabilities {
    /// A builder: the readable way to make a capability set.
    pub fn builder() -> CapabilitiesBuilder {
        CapabilitiesBuilder::default()
    }

    /// Validates and builds a capability set.
    ///
    /// Codec lists hold at most [`MAX_CODECS`] distinct entries (an empty list is
    /// allowed: the terminal then cannot send, or cannot receive, video); sizes are in
    /// `1..=MAX_DIMENSION`; the camera frame rate is in `1..=MAX_CAMERA_FPS`; bandwidth
    /// figures are at most [`MAX_KBPS`].
    pub fn new(
        encode: Vec<Codec>,
        decode: Vec<Codec>,
        screen: Size,
        camera: Option<Camera>,
        cpu: CpuClass,
        bandwidth: Bandwidth,
    ) -> Result<Self, InvalidValue> {
        check_codecs("encode codecs", &encode)?;
        check_codecs("decode codecs", &decode)?;
        screen.validate("screen size")?;
        if let Some(cam) = camera {
            cam.max.validate("camera size")?;
            check_range("camera fps", cam.max_fps.into(), 1, MAX_CAMERA_FPS.into())?;
        }
        check_range("up kbps", bandwidth.up_kbps.into(), 0, MAX_KBPS.into())?;
        check_range("down kbps", bandwidth.down_kbps.into(), 0, MAX_KBPS.into())?;
        Ok(Self {
            encode,
            decode,
            screen,
            camera,
            cpu,
            bandwidth,
        })
    }

    /// Codecs the terminal can encode, most preferred first.
    pub fn encode(&self) -> &[Codec] {
        &self.encode
    }
    /// Codecs the terminal can decode, most preferred first.
    pub fn decode(&self) -> &[Codec] {
        &self.decode
    }
    /// The display size.
    pub fn screen(&self) -> Size {
        self.screen
    }
    /// The camera, if any.
    pub fn camera(&self) -> Option<Camera> {
        self.camera
    }
    /// The processing class.
    pub fn cpu(&self) -> CpuClass {
        self.cpu
    }
    /// The network bandwidth.
    pub fn bandwidth(&self) -> Bandwidth {
        self.bandwidth
    }

    /// The fingerprint of this capability set (spec section "Fingerprint"): the first 16
    /// bytes of SHA-256 over a fixed binary layout of the fields, so that any two
    /// implementations that hold equal capabilities compute equal fingerprints.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(b"precall/1 caps\0");
        for list in [&self.encode, &self.decode] {
            h.update([list.len() as u8]);
            for c in list {
                h.update([c.as_str().len() as u8]);
                h.update(c.as_str().as_bytes());
            }
        }
        h.update(self.screen.width.to_be_bytes());
        h.update(self.screen.height.to_be_bytes());
        match self.camera {
            None => h.update([0]),
            Some(cam) => {
                h.update([1]);
                h.update(cam.max.width.to_be_bytes());
                h.update(cam.max.height.to_be_bytes());
                h.update(cam.max_fps.to_be_bytes());
            }
        }
        h.update([self.cpu.code()]);
        h.update(self.bandwidth.up_kbps.to_be_bytes());
        h.update(self.bandwidth.down_kbps.to_be_bytes());
        let full = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        Fingerprint(out)
    }
}

/// 128-bit fingerprint of a [`Capabilities`] value; on the wire, 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The all-zero fingerprint: in [`CallDigest::callee`] it says the caller holds no
    /// capabilities of the callee (a prior-art call), so the callee answers with its own.
    /// No capability set is expected to hash to it.
    pub const NONE: Fingerprint = Fingerprint([0; 16]);
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        f.to_string()
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return Err(InvalidValue::Length {
                what: "fingerprint",
                len: bytes.len(),
                max: 32,
            });
        }
        let nibble = |pos: usize| -> Result<u8, InvalidValue> {
            match bytes[pos] {
                b @ b'0'..=b'9' => Ok(b - b'0'),
                b @ b'a'..=b'f' => Ok(b - b'a' + 10),
                _ => Err(InvalidValue::Character {
                    what: "fingerprint",
                    pos,
                }),
            }
        };
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = nibble(2 * i)? << 4 | nibble(2 * i + 1)?;
        }
        Ok(Fingerprint(out))
    }
}

/// What the call-setup messages carry so both ends can confirm, without re-sending
/// capabilities, that they negotiated from the same two capability sets.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct CallDigest {
    /// Fingerprint of the caller's capabilities, as the caller holds them (its own).
    pub caller: Fingerprint,
    /// Fingerprint of the callee's capabilities, as the caller holds them (pushed).
    pub callee: Fingerprint,
}

/// The parameters of one direction of a call, sender to receiver.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct StreamParams {
    /// Codec the sender encodes with and the receiver decodes.
    pub codec: Codec,
    /// Capture and encode width in pixels (the longer side).
    pub width: u16,
    /// Capture and encode height in pixels (the shorter side).
    pub height: u16,
    /// Capture frame rate, frames per second.
    pub fps: u16,
    /// Target bit rate, kbit/s.
    pub bitrate_kbps: u32,
}

/// Why a direction of a call carries no video.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoVideo {
    /// The sender has no camera.
    NoCamera,
    /// No codec the sender encodes is one the receiver decodes.
    NoCommonCodec,
    /// No resolution on the ladder fits both terminals' screen, CPU and bandwidth.
    InsufficientResources,
}

/// The outcome of negotiation for one direction.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::exhaustive_enums)] // closed: a direction carries video or it does not
pub enum Direction {
    /// Video flows with these parameters.
    Video(StreamParams),
    /// No video flows in this direction, for this reason.
    Off(NoVideo),
}

impl Direction {
    /// The stream parameters, if video flows.
    pub fn video(&self) -> Option<&StreamParams> {
        match self {
            Direction::Video(p) => Some(p),
            Direction::Off(_) => None,
        }
    }
}

/// The call parameters for one pair of terminals, from one end's point of view.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct CallParams {
    /// What this end sends to the other.
    pub send: Direction,
    /// What this end receives from the other.
    pub recv: Direction,
}

impl CallParams {
    /// The same parameters seen from the other end.
    pub fn mirrored(&self) -> CallParams {
        CallParams {
            send: self.recv.clone(),
            recv: self.send.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::caps;

    #[test]
    fn the_builder_sets_every_field_and_validates_them() {
        let c = Capabilities::builder()
            .encode(["vp8"])
            .decode(["h264", "vp8"])
            .screen(1920, 1080)
            .camera(1280, 720, 30)
            .cpu(CpuClass::Ultra)
            .bandwidth(1_000, 2_000)
            .build()
            .unwrap();
        let names = |l: &[Codec]| l.iter().map(|c| c.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(c.encode()), ["vp8"]);
        assert_eq!(names(c.decode()), ["h264", "vp8"]);
        assert_eq!(
            c.screen(),
            Size {
                width: 1920,
                height: 1080
            }
        );
        let camera = Camera {
            max: Size {
                width: 1280,
                height: 720,
            },
            max_fps: 30,
        };
        assert_eq!(c.camera(), Some(camera));
        assert_eq!(c.cpu(), CpuClass::Ultra);
        assert_eq!(
            c.bandwidth(),
            Bandwidth {
                up_kbps: 1_000,
                down_kbps: 2_000
            }
        );
        // `codecs` sets both lists; the defaults: no camera, a mid-range CPU.
        let d = Capabilities::builder()
            .codecs(["av1", "vp9"])
            .screen(640, 360)
            .bandwidth(5, 6)
            .build()
            .unwrap();
        assert_eq!(names(d.encode()), ["av1", "vp9"]);
        assert_eq!(names(d.decode()), ["av1", "vp9"]);
        assert_eq!((d.camera(), d.cpu()), (None, CpuClass::Mid));
    }

    #[test]
    fn the_builder_refuses_what_new_refuses_and_missing_fields() {
        let ok = || {
            Capabilities::builder()
                .codecs(["h264"])
                .screen(640, 360)
                .bandwidth(1, 1)
        };
        assert!(ok().build().is_ok());
        assert_eq!(
            Capabilities::builder().bandwidth(1, 1).build(),
            Err(InvalidValue::Missing {
                what: "screen size"
            })
        );
        assert_eq!(
            Capabilities::builder().screen(640, 360).build(),
            Err(InvalidValue::Missing { what: "bandwidth" })
        );
        assert!(matches!(
            ok().encode(["bad name"]).build(),
            Err(InvalidValue::Character { .. })
        ));
        assert!(matches!(
            ok().decode(["h264", "h264"]).build(),
            Err(InvalidValue::Duplicate { .. })
        ));
        assert!(matches!(
            ok().camera(640, 360, 0).build(),
            Err(InvalidValue::Range { .. })
        ));
        assert!(matches!(
            ok().screen(0, 360).build(),
            Err(InvalidValue::Range { .. })
        ));
    }

    /// A fingerprint shows in logs as its 32 hexadecimal digits (spec 7.1), named.
    #[test]
    fn a_fingerprint_debugs_as_its_hex_digits() {
        let fp = caps(&["h264"], 1920, 30).fingerprint();
        let hex = fp.to_string();
        assert_eq!(hex.len(), 32);
        assert_eq!(format!("{fp:?}"), format!("Fingerprint({hex})"));
    }

    #[test]
    fn fingerprint_hex_round_trips_and_rejects_bad_text() {
        let fp = caps(&["h264"], 1920, 30).fingerprint();
        let s: String = fp.into();
        assert_eq!(s.len(), 32);
        assert_eq!(Fingerprint::try_from(s).unwrap(), fp);
        assert!(Fingerprint::try_from("AB".repeat(16)).is_err());
        assert!(Fingerprint::try_from("ab".repeat(15)).is_err());
    }

    #[test]
    fn fingerprint_changes_with_every_field() {
        let base = caps(&["h264", "vp8"], 1920, 30);
        let fp = base.fingerprint();
        let variants = [
            caps(&["vp8", "h264"], 1920, 30),
            caps(&["h264"], 1920, 30),
            caps(&["h264", "vp8"], 1280, 30),
            caps(&["h264", "vp8"], 1920, 25),
        ];
        for v in variants {
            assert_ne!(v.fingerprint(), fp, "{v:?}");
        }
        let mut other = base.clone();
        other.cpu = CpuClass::Low;
        assert_ne!(other.fingerprint(), fp);
        let mut other = base.clone();
        other.bandwidth.down_kbps += 1;
        assert_ne!(other.fingerprint(), fp);
        let mut other = base;
        other.camera = None;
        assert_ne!(other.fingerprint(), fp);
    }

    #[test]
    fn invalid_capabilities_are_rejected() {
        let c = |s: &str| Codec::new(s).unwrap();
        let screen = Size {
            width: 1920,
            height: 1080,
        };
        let bw = Bandwidth {
            up_kbps: 1000,
            down_kbps: 1000,
        };
        assert!(matches!(
            Capabilities::new(
                vec![c("h264"), c("h264")],
                vec![],
                screen,
                None,
                CpuClass::Mid,
                bw
            ),
            Err(InvalidValue::Duplicate { .. })
        ));
        let zero = Size {
            width: 0,
            height: 10,
        };
        assert!(Capabilities::new(vec![], vec![], zero, None, CpuClass::Mid, bw).is_err());
        let cam = Camera {
            max: screen,
            max_fps: 0,
        };
        assert!(Capabilities::new(vec![], vec![], screen, Some(cam), CpuClass::Mid, bw).is_err());
        let too_many: Vec<Codec> = (0..17).map(|i| c(&format!("c{i}"))).collect();
        assert!(Capabilities::new(too_many, vec![], screen, None, CpuClass::Mid, bw).is_err());
        let fat = Bandwidth {
            up_kbps: MAX_KBPS + 1,
            down_kbps: 0,
        };
        assert!(Capabilities::new(vec![], vec![], screen, None, CpuClass::Mid, fat).is_err());
    }
}
