//! What comes in from JavaScript: the configuration object, times in milliseconds, and
//! the ways a page names a peer, a call or a section. Conversions only: every value is
//! validated by the core's own constructors ([`UserId::new`], [`Capabilities`]'s
//! decoder, ...).

use std::time::Duration;

use precall_protocol::{
    CallId, Capabilities, ClientConfig, Endpoint, LoginWith, Password, SessionId, TerminalId, Time,
    UserId,
};
use serde::Deserialize;

use crate::error::Error;

/// The constructor's configuration object.
///
/// ```js
/// { user: "alice", password: "secret",
///   capabilities: { encode: ["h264"], decode: ["h264"], screen: { width: 1280, height: 720 },
///                   camera: { max: { width: 1280, height: 720 }, max_fps: 30 },
///                   cpu: "high", bandwidth: { up_kbps: 4000, down_kbps: 8000 } },
///   pingIntervalMs: 20000 }            // optional
/// { user: "alice", password: "secret", terminalId: "kiosk-1" }
/// ```
///
/// Exactly one of `capabilities` (the wire's capability JSON, claim C2) and
/// `terminalId` (a terminal registered with the server, claim C3). Keys are camelCase;
/// `terminal_id`, `ping_interval_ms` and `max_frame` are accepted too. Unknown keys are
/// refused, so a misspelt option does not pass silently.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The account name.
    pub user: UserId,
    /// The password, sent by [`crate::Facade::login`].
    pub password: Password,
    /// This terminal's capabilities, in the wire's JSON form.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// Or the identifier of a terminal registered with the server.
    #[serde(default, alias = "terminal_id")]
    pub terminal_id: Option<TerminalId>,
    /// [`ClientConfig::ping_interval`] in milliseconds (default: the core's).
    #[serde(default, alias = "ping_interval_ms")]
    pub ping_interval_ms: Option<u64>,
    /// [`ClientConfig::max_frame`] in bytes (default: the core's).
    #[serde(default, alias = "max_frame")]
    pub max_frame: Option<u32>,
}

impl Config {
    /// What the login sends with the credentials: the capabilities or the identifier.
    pub fn login_with(&self) -> Result<LoginWith, Error> {
        match (&self.capabilities, &self.terminal_id) {
            (Some(caps), None) => Ok(LoginWith::Capabilities(caps.clone())),
            (None, Some(id)) => Ok(LoginWith::TerminalId(id.clone())),
            _ => Err(Error::new(
                "invalid_config",
                "give exactly one of `capabilities` and `terminalId`",
            )),
        }
    }

    /// The core's configuration: its defaults, with the fields this object sets.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::default();
        if let Some(ms) = self.ping_interval_ms {
            config.ping_interval = Duration::from_millis(ms);
        }
        if let Some(max) = self.max_frame {
            config.max_frame = max;
        }
        config
    }
}

/// A time from JavaScript (`performance.now()`, `Date.now()`, any clock in
/// milliseconds that does not go backwards) as the core's [`Time`]: whole
/// milliseconds, fractions dropped. NaN, infinities and negative numbers are
/// `invalid_time`.
pub fn time(now_ms: f64) -> Result<Time, Error> {
    if !now_ms.is_finite() || now_ms < 0.0 {
        return Err(Error::new(
            "invalid_time",
            format!("{now_ms} is not a time in milliseconds (a finite number >= 0)"),
        ));
    }
    // `as` saturates: a time past u64::MAX ms is the end of time.
    Ok(Time(now_ms.trunc() as u64))
}

/// A [`Time`] (a deadline) as milliseconds for JavaScript.
pub fn millis(t: Time) -> f64 {
    t.0 as f64
}

/// A peer named as text: `"user/session"`, as [`Endpoint`]'s `Display` writes it.
pub fn endpoint_from_text(text: &str) -> Result<Endpoint, Error> {
    let bad = || {
        Error::new(
            "invalid_argument",
            format!("{text:?} is not a peer: give {{user, session}} or \"user/session\""),
        )
    };
    let (user, session) = text.rsplit_once('/').ok_or_else(bad)?;
    let session = session.parse::<u64>().map_err(|_| bad())?;
    Ok(Endpoint {
        user: UserId::new(user)?,
        session: SessionId(session),
    })
}

/// A call number from JavaScript (the `call` of `incoming_call` or `call_ringing`).
pub fn call_id(call: f64) -> Result<CallId, Error> {
    // 2^53: past it a JavaScript number no longer holds every integer.
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if call.fract() != 0.0 || !(0.0..=MAX_SAFE).contains(&call) {
        return Err(Error::new(
            "invalid_argument",
            format!("{call} is not a call number"),
        ));
    }
    Ok(CallId(call as u64))
}

/// Which `m=video` section [`crate::Facade::apply_sdp`] puts into a stack's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    /// The caller's offer ([`crate::Facade::sdp_offer`]).
    Offer,
    /// The callee's answer ([`crate::Facade::sdp_answer`]).
    Answer,
}

impl SectionKind {
    /// `"offer"` or `"answer"`.
    pub fn parse(kind: &str) -> Result<Self, Error> {
        match kind {
            "offer" => Ok(Self::Offer),
            "answer" => Ok(Self::Answer),
            _ => Err(Error::new(
                "invalid_argument",
                format!("{kind:?} is not a section kind (\"offer\" or \"answer\")"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(v: serde_json::Value) -> Result<Config, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn caps_json() -> serde_json::Value {
        json!({"encode": ["h264"], "decode": ["h264", "vp8"], "screen": {"width": 1280, "height": 720},
               "camera": {"max": {"width": 1280, "height": 720}, "max_fps": 30}, "cpu": "high",
               "bandwidth": {"up_kbps": 4000, "down_kbps": 8000}})
    }

    #[test]
    fn a_config_with_capabilities_logs_in_with_them() {
        let c = config(
            json!({"user": "alice", "password": "pw", "capabilities": caps_json(),
                              "pingIntervalMs": 5000, "maxFrame": 100000}),
        )
        .unwrap();
        let caps: Capabilities = serde_json::from_value(caps_json()).unwrap();
        assert_eq!(c.login_with().unwrap(), LoginWith::Capabilities(caps));
        assert_eq!(c.user.as_str(), "alice");
        assert_eq!(c.password.expose(), "pw");
        let cc = c.client_config();
        assert_eq!(cc.ping_interval, Duration::from_secs(5));
        assert_eq!(cc.max_frame, 100_000);
    }

    #[test]
    fn a_config_with_a_terminal_id_logs_in_with_it_and_keeps_the_core_defaults() {
        for key in ["terminalId", "terminal_id"] {
            let c = config(json!({"user": "alice", "password": "pw", key: "kiosk-1"})).unwrap();
            let id = TerminalId::new("kiosk-1").unwrap();
            assert_eq!(c.login_with().unwrap(), LoginWith::TerminalId(id));
            assert_eq!(c.client_config(), ClientConfig::default());
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        // Neither, or both.
        let neither = config(json!({"user": "alice", "password": "pw"})).unwrap();
        assert_eq!(neither.login_with().unwrap_err().code, "invalid_config");
        let both = config(
            json!({"user": "alice", "password": "pw", "capabilities": caps_json(),
                                 "terminalId": "t"}),
        )
        .unwrap();
        assert_eq!(both.login_with().unwrap_err().code, "invalid_config");
        // The core's validation: a user id with a capital, a screen of width 0, an
        // empty password; and a misspelt key.
        let e = config(json!({"user": "Alice", "password": "pw", "terminalId": "t"})).unwrap_err();
        assert!(e.contains("user id"), "{e}");
        let mut caps = caps_json();
        caps["screen"]["width"] = json!(0);
        let e =
            config(json!({"user": "alice", "password": "pw", "capabilities": caps})).unwrap_err();
        assert!(e.contains("screen size"), "{e}");
        let e = config(json!({"user": "alice", "password": "", "terminalId": "t"})).unwrap_err();
        assert!(e.contains("password"), "{e}");
        let e = config(json!({"user": "alice", "password": "pw", "terminalID": "t"})).unwrap_err();
        assert!(e.contains("terminalID"), "{e}");
    }

    #[test]
    fn times_are_whole_milliseconds_and_nothing_else_is_a_time() {
        assert_eq!(time(0.0).unwrap(), Time::ZERO);
        assert_eq!(time(1500.9).unwrap(), Time(1500));
        assert_eq!(time(1e300).unwrap(), Time(u64::MAX));
        for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(time(bad).unwrap_err().code, "invalid_time");
        }
        assert_eq!(millis(Time(20_000)), 20_000.0);
    }

    #[test]
    fn peers_are_named_user_slash_session() {
        let ep = endpoint_from_text("bob.smith@example/12").unwrap();
        assert_eq!(ep.to_string(), "bob.smith@example/12");
        for bad in ["bob", "bob/", "bob/x", "/3", "bob/-1"] {
            let e = endpoint_from_text(bad).unwrap_err();
            assert!(
                matches!(e.code, "invalid_argument" | "invalid_value"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn call_numbers_are_non_negative_integers() {
        assert_eq!(call_id(7.0).unwrap(), CallId(7));
        for bad in [-1.0, 1.5, f64::NAN, 1e16] {
            assert_eq!(call_id(bad).unwrap_err().code, "invalid_argument");
        }
        assert_eq!(SectionKind::parse("offer").unwrap(), SectionKind::Offer);
        assert_eq!(SectionKind::parse("answer").unwrap(), SectionKind::Answer);
        assert_eq!(
            SectionKind::parse("Offer").unwrap_err().code,
            "invalid_argument"
        );
    }
}
