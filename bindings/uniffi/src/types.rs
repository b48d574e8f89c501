//! The core's values as uniffi records and enums (data classes and sealed classes in
//! Kotlin, structs and enums in Swift, dataclasses in Python), and their conversions.
//! Values coming in are validated by the core's own constructors
//! ([`precall_protocol::Capabilities::new`], [`UserId::new`], ...); nothing is
//! checked here.

use precall_protocol as core;
use precall_protocol::{Codec, SessionId, UserId};

use crate::error::PrecallError;

/// A width and a height in pixels ([`core::Size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Size {
    /// Pixels.
    pub width: u16,
    /// Pixels.
    pub height: u16,
}

/// A camera's largest mode ([`core::Camera`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Camera {
    /// The largest capture size.
    pub max: Size,
    /// The highest frame rate at that size.
    pub max_fps: u16,
}

/// The terminal's processing class ([`core::CpuClass`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
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

/// Network bandwidth in kbit/s ([`core::Bandwidth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Bandwidth {
    /// Upstream.
    pub up_kbps: u32,
    /// Downstream.
    pub down_kbps: u32,
}

/// A terminal's capabilities (claim C1; [`core::Capabilities`]): codecs are the
/// wire's lower-case tokens (`"h264"`, `"vp8"`, ...), in preference order.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Capabilities {
    /// Codecs it can encode.
    pub encode: Vec<String>,
    /// Codecs it can decode.
    pub decode: Vec<String>,
    /// Its screen.
    pub screen: Size,
    /// Its camera, if any.
    pub camera: Option<Camera>,
    /// Its processing class.
    pub cpu: CpuClass,
    /// Its network.
    pub bandwidth: Bandwidth,
}

/// Parameters of one direction of a call ([`core::StreamParams`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct StreamParams {
    /// The codec.
    pub codec: String,
    /// Width in pixels (the longer side).
    pub width: u16,
    /// Height in pixels (the shorter side).
    pub height: u16,
    /// Frames per second.
    pub fps: u16,
    /// Target bit rate, kbit/s.
    pub bitrate_kbps: u32,
}

/// One direction's outcome ([`core::Direction`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Direction {
    /// Video flows with these parameters.
    Video {
        /// The parameters.
        params: StreamParams,
    },
    /// No video flows in this direction; `reason` is the wire's word for why
    /// (`no_camera`, `no_common_codec`, `insufficient_resources`).
    Off {
        /// Why.
        reason: String,
    },
}

/// A call's parameters from one end ([`core::CallParams`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct CallParams {
    /// What this end sends.
    pub send: Direction,
    /// What this end receives.
    pub recv: Direction,
}

/// A terminal: a user and its session ([`core::Endpoint`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct Endpoint {
    /// The user.
    pub user: String,
    /// The session.
    pub session: u64,
}

/// What the client is doing ([`core::Status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Status {
    /// Not logged in; holds nothing.
    Idle,
    /// Waiting for `login_ok`.
    LoggingIn,
    /// Logged in.
    Online,
    /// Logging out; everything already deleted (claim C5).
    LoggingOut,
    /// The connection dropped; the session is resumable and the table kept.
    Detached,
    /// Waiting for `resumed`.
    Resuming,
    /// A state from a newer core.
    Other,
}

/// This end's role in a call ([`core::Role`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    /// This terminal placed the call.
    Caller,
    /// This terminal was called.
    Callee,
}

/// Where a call stands ([`core::CallState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum CallState {
    /// Caller: waiting for the callee.
    Ringing,
    /// Callee: the caller's capabilities were asked for.
    AwaitingCallerCaps,
    /// Callee: waiting for the application to answer.
    Incoming,
    /// Media may flow.
    Established,
    /// A state from a newer core.
    Other,
}

/// How a call's parameters were agreed ([`core::SetupPath`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SetupPath {
    /// From the pre-computed table: no capability crossed the wire.
    Fast,
    /// Capabilities travelled in the call signalling.
    Fallback,
}

/// One online contact terminal of the table ([`core::Peer`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PeerEntry {
    /// The terminal.
    pub endpoint: Endpoint,
    /// Its capabilities, as last pushed.
    pub capabilities: Capabilities,
    /// Their fingerprint, 32 hex digits.
    pub fingerprint: String,
    /// The call parameters, computed when the capabilities arrived.
    pub params: CallParams,
}

/// One call of this terminal ([`core::Call`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct CallInfo {
    /// The call's number.
    pub call: u64,
    /// The other terminal.
    pub peer: Endpoint,
    /// This end's role.
    pub role: Role,
    /// Where it stands.
    pub state: CallState,
    /// The parameters from this end, once known.
    pub params: Option<CallParams>,
    /// Fast, or fallback once a capability crossed the wire.
    pub path: SetupPath,
}

/// The wire's word for a value (its serde name): error codes, end reasons, reasons
/// for no video.
pub(crate) fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("unnamed ({e})"),
    }
}

impl From<core::Size> for Size {
    fn from(s: core::Size) -> Self {
        Self {
            width: s.width,
            height: s.height,
        }
    }
}

impl From<Size> for core::Size {
    fn from(s: Size) -> Self {
        Self {
            width: s.width,
            height: s.height,
        }
    }
}

impl From<core::CpuClass> for CpuClass {
    fn from(c: core::CpuClass) -> Self {
        match c {
            core::CpuClass::Low => Self::Low,
            core::CpuClass::Mid => Self::Mid,
            core::CpuClass::High => Self::High,
            // `Ultra`, and any class a newer core adds above it.
            _ => Self::Ultra,
        }
    }
}

impl From<CpuClass> for core::CpuClass {
    fn from(c: CpuClass) -> Self {
        match c {
            CpuClass::Low => Self::Low,
            CpuClass::Mid => Self::Mid,
            CpuClass::High => Self::High,
            CpuClass::Ultra => Self::Ultra,
        }
    }
}

impl From<&core::Capabilities> for Capabilities {
    fn from(c: &core::Capabilities) -> Self {
        let names = |codecs: &[Codec]| codecs.iter().map(|c| c.as_str().to_owned()).collect();
        let bw = c.bandwidth();
        Self {
            encode: names(c.encode()),
            decode: names(c.decode()),
            screen: c.screen().into(),
            camera: c.camera().map(|cam| Camera {
                max: cam.max.into(),
                max_fps: cam.max_fps,
            }),
            cpu: c.cpu().into(),
            bandwidth: Bandwidth {
                up_kbps: bw.up_kbps,
                down_kbps: bw.down_kbps,
            },
        }
    }
}

impl TryFrom<Capabilities> for core::Capabilities {
    type Error = PrecallError;

    fn try_from(c: Capabilities) -> Result<Self, PrecallError> {
        let codecs = |names: Vec<String>| -> Result<Vec<Codec>, PrecallError> {
            Ok(names
                .into_iter()
                .map(Codec::new)
                .collect::<Result<_, _>>()?)
        };
        Ok(core::Capabilities::new(
            codecs(c.encode)?,
            codecs(c.decode)?,
            c.screen.into(),
            c.camera.map(|cam| core::Camera {
                max: cam.max.into(),
                max_fps: cam.max_fps,
            }),
            c.cpu.into(),
            core::Bandwidth {
                up_kbps: c.bandwidth.up_kbps,
                down_kbps: c.bandwidth.down_kbps,
            },
        )?)
    }
}

impl From<&core::Direction> for Direction {
    fn from(d: &core::Direction) -> Self {
        match d {
            core::Direction::Video(p) => Self::Video {
                params: StreamParams {
                    codec: p.codec.as_str().to_owned(),
                    width: p.width,
                    height: p.height,
                    fps: p.fps,
                    bitrate_kbps: p.bitrate_kbps,
                },
            },
            core::Direction::Off(reason) => Self::Off {
                reason: wire_name(reason),
            },
        }
    }
}

impl From<&core::CallParams> for CallParams {
    fn from(p: &core::CallParams) -> Self {
        Self {
            send: (&p.send).into(),
            recv: (&p.recv).into(),
        }
    }
}

impl From<&core::Endpoint> for Endpoint {
    fn from(e: &core::Endpoint) -> Self {
        Self {
            user: e.user.as_str().to_owned(),
            session: e.session.0,
        }
    }
}

impl TryFrom<&Endpoint> for core::Endpoint {
    type Error = PrecallError;

    fn try_from(e: &Endpoint) -> Result<Self, PrecallError> {
        Ok(Self {
            user: UserId::new(&e.user)?,
            session: SessionId(e.session),
        })
    }
}

impl From<core::Status> for Status {
    fn from(s: core::Status) -> Self {
        match s {
            core::Status::Idle => Self::Idle,
            core::Status::LoggingIn => Self::LoggingIn,
            core::Status::Online => Self::Online,
            core::Status::LoggingOut => Self::LoggingOut,
            core::Status::Detached => Self::Detached,
            core::Status::Resuming => Self::Resuming,
            _ => Self::Other,
        }
    }
}

impl From<core::SetupPath> for SetupPath {
    fn from(p: core::SetupPath) -> Self {
        match p {
            core::SetupPath::Fast => Self::Fast,
            // `Fallback`, and any newer path: not the fast one.
            _ => Self::Fallback,
        }
    }
}

impl From<(&core::CallId, &core::Call)> for CallInfo {
    fn from((id, call): (&core::CallId, &core::Call)) -> Self {
        Self {
            call: id.0,
            peer: (&call.peer).into(),
            role: match call.role {
                core::Role::Caller => Role::Caller,
                core::Role::Callee => Role::Callee,
            },
            state: match call.state {
                core::CallState::Ringing => CallState::Ringing,
                core::CallState::AwaitingCallerCaps => CallState::AwaitingCallerCaps,
                core::CallState::Incoming => CallState::Incoming,
                core::CallState::Established => CallState::Established,
                _ => CallState::Other,
            },
            params: call.params.as_ref().map(Into::into),
            path: call.path().into(),
        }
    }
}

impl From<(&core::Endpoint, &core::Peer)> for PeerEntry {
    fn from((endpoint, peer): (&core::Endpoint, &core::Peer)) -> Self {
        Self {
            endpoint: endpoint.into(),
            capabilities: (&peer.capabilities).into(),
            fingerprint: peer.fingerprint.to_string(),
            params: (&peer.params).into(),
        }
    }
}

/// The core's [`negotiate_pair`](core::negotiate_pair): the parameters of a call
/// between a terminal with `me` and one with `them`, from `me`'s end. The table's
/// entries hold exactly this for each online contact terminal; an application never
/// needs it to call, but a test can check the table with it.
#[uniffi::export]
pub fn negotiate_pair(me: Capabilities, them: Capabilities) -> Result<CallParams, PrecallError> {
    let (me, them) = (me.try_into()?, them.try_into()?);
    Ok((&core::negotiate_pair(&me, &them)).into())
}

/// Capabilities from the wire's JSON form (spec "Capabilities"), as a server admin
/// registers them or an app stores them.
#[uniffi::export]
pub fn capabilities_from_json(json: String) -> Result<Capabilities, PrecallError> {
    let caps: core::Capabilities =
        serde_json::from_str(&json).map_err(|e| PrecallError::InvalidValue {
            detail: e.to_string(),
        })?;
    Ok((&caps).into())
}

/// Capabilities in the wire's JSON form, after the core's checks.
#[uniffi::export]
pub fn capabilities_to_json(capabilities: Capabilities) -> Result<String, PrecallError> {
    let caps: core::Capabilities = capabilities.try_into()?;
    serde_json::to_string(&caps).map_err(|e| PrecallError::InvalidValue {
        detail: e.to_string(),
    })
}

/// The fingerprint of a capability set (32 hex digits), as the table's entries and
/// the wire's call digests carry it.
#[uniffi::export]
pub fn fingerprint(capabilities: Capabilities) -> Result<String, PrecallError> {
    let caps: core::Capabilities = capabilities.try_into()?;
    Ok(caps.fingerprint().to_string())
}
