//! [`PrecallClient`]: the core's [`Client`] behind a lock, so that the generated
//! classes may share it between threads. Each method converts its arguments, calls the
//! one core method it is named after, and converts the result.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use precall_protocol::{
    CallId, Client, MediaDescription, Password, ReqId, TerminalId, Time, UserId,
};

use crate::error::PrecallError;
use crate::event::Event;
use crate::types::{CallInfo, Capabilities, Endpoint, PeerEntry, Status};

/// What a login sends besides the credentials (claims C2 and C3).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum LoginWith {
    /// This terminal's capabilities (claim C2).
    Capabilities {
        /// The capabilities.
        capabilities: Capabilities,
    },
    /// The identifier of a terminal whose capabilities the server stored in advance
    /// (claim C3).
    TerminalId {
        /// The identifier.
        id: String,
    },
}

/// How a [`PrecallClient`] logs in, and the core's timers.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClientConfig {
    /// The account name.
    pub user: String,
    /// The password.
    pub password: String,
    /// The capabilities or the terminal identifier.
    pub login: LoginWith,
    /// How long the client may stay silent before it pings, in milliseconds
    /// (default: the core's, 20 s).
    #[uniffi(default = None)]
    pub ping_interval_ms: Option<u64>,
    /// The largest frame payload accepted from the server (default: the core's).
    #[uniffi(default = None)]
    pub max_frame: Option<u32>,
}

// The password stays out of Rust logs (spec 13.3). (The generated classes' own
// `toString` is uniffi's: an app must not log the configuration.)
impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("login", &self.login)
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

/// One terminal's client core: commands and received bytes in (with the time),
/// frames to send, events and the next deadline out. No I/O and no clock inside: the
/// application owns the connection and passes milliseconds from any clock that does
/// not go backwards.
///
/// The polling rule is the core's: after **every** call that takes `now_ms`, send
/// every frame of [`PrecallClient::poll_transmit`], handle every event of
/// [`PrecallClient::poll_event`], and re-arm the timer from
/// [`PrecallClient::poll_timeout`].
#[derive(Debug, uniffi::Object)]
pub struct PrecallClient {
    client: Mutex<Client>,
    user: UserId,
    password: Password,
    with: precall_protocol::LoginWith,
}

fn time(now_ms: u64) -> Time {
    Time(now_ms)
}

fn req(r: Result<ReqId, precall_protocol::ClientError>) -> Result<u32, PrecallError> {
    Ok(r?.0)
}

impl PrecallClient {
    fn core(&self) -> MutexGuard<'_, Client> {
        // A panic while holding the lock cannot leave the core half-changed in a way
        // the next caller could observe more harmfully than the panic itself.
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[uniffi::export]
impl PrecallClient {
    /// A client that is not logged in, with what [`PrecallClient::login`] sends.
    #[uniffi::constructor]
    pub fn new(config: ClientConfig) -> Result<Arc<Self>, PrecallError> {
        let with = match config.login {
            LoginWith::Capabilities { capabilities } => {
                precall_protocol::LoginWith::Capabilities(capabilities.try_into()?)
            }
            LoginWith::TerminalId { id } => {
                precall_protocol::LoginWith::TerminalId(TerminalId::new(id)?)
            }
        };
        let mut core = precall_protocol::ClientConfig::default();
        if let Some(ms) = config.ping_interval_ms {
            core.ping_interval = Duration::from_millis(ms);
        }
        if let Some(max) = config.max_frame {
            core.max_frame = max;
        }
        Ok(Arc::new(Self {
            client: Mutex::new(Client::new(core)),
            user: UserId::new(config.user)?,
            password: Password::new(config.password)?,
            with,
        }))
    }

    /// [`Client::login`] with the configured credentials.
    pub fn login(&self, now_ms: u64) -> Result<(), PrecallError> {
        let (user, password) = (self.user.clone(), self.password.clone());
        Ok(self
            .core()
            .login(user, password, self.with.clone(), time(now_ms))?)
    }

    /// [`Client::logout`].
    pub fn logout(&self, now_ms: u64) -> Result<(), PrecallError> {
        Ok(self.core().logout(time(now_ms))?)
    }

    /// [`Client::resume`], on a new connection after `Detached`.
    pub fn resume(&self, now_ms: u64) -> Result<(), PrecallError> {
        Ok(self.core().resume(time(now_ms))?)
    }

    /// [`Client::abandon`]: gives up a detached session.
    pub fn abandon(&self, now_ms: u64) {
        self.core().abandon(time(now_ms));
    }

    /// [`Client::receive`]: bytes read from the connection, any split. An error means
    /// the connection is unusable: close it (the core has already detached or ended
    /// the session and says so in an event).
    pub fn receive(&self, data: Vec<u8>, now_ms: u64) -> Result<(), PrecallError> {
        Ok(self.core().receive(&data, time(now_ms))?)
    }

    /// [`Client::handle_timeout`]: the deadline of [`PrecallClient::poll_timeout`]
    /// passed.
    pub fn handle_timeout(&self, now_ms: u64) {
        self.core().handle_timeout(time(now_ms));
    }

    /// [`Client::connection_closed`]: the connection ended (read EOF or an error).
    pub fn connection_closed(&self, now_ms: u64) {
        self.core().connection_closed(time(now_ms));
    }

    /// [`Client::poll_transmit`]: one whole frame to write, length prefix included.
    pub fn poll_transmit(&self) -> Option<Vec<u8>> {
        self.core().poll_transmit().map(|frame| frame.to_vec())
    }

    /// [`Client::poll_event`].
    pub fn poll_event(&self) -> Option<Event> {
        self.core().poll_event().map(Event::from)
    }

    /// [`Client::poll_timeout`]: when to call [`PrecallClient::handle_timeout`], in
    /// the milliseconds of the caller's clock.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.core().poll_timeout().map(|t| t.0)
    }

    /// [`Client::place_call`]: a fast-path call with the pre-computed parameters.
    /// The request tag (`CallRinging` or `CallFailed` carries it).
    pub fn place_call(&self, to: Endpoint, now_ms: u64) -> Result<u32, PrecallError> {
        let to = (&to).try_into()?;
        req(self.core().place_call(&to, time(now_ms)))
    }

    /// [`Client::place_call_with_media`]: the fast-path call carrying the caller's
    /// media description (spec 10.8; an SDP offer, say).
    pub fn place_call_with_media(
        &self,
        to: Endpoint,
        media: String,
        now_ms: u64,
    ) -> Result<u32, PrecallError> {
        let (to, media) = ((&to).try_into()?, MediaDescription::new(media)?);
        req(self.core().place_call_with_media(&to, media, time(now_ms)))
    }

    /// [`Client::place_call_exchanging_capabilities`]: the patent's prior art, for
    /// comparison.
    pub fn place_call_exchanging_capabilities(
        &self,
        to: Endpoint,
        now_ms: u64,
    ) -> Result<u32, PrecallError> {
        let to = (&to).try_into()?;
        req(self
            .core()
            .place_call_exchanging_capabilities(&to, time(now_ms)))
    }

    /// [`Client::query_caps`]: the query-first baseline. The request tag.
    pub fn query_caps(&self, to: Endpoint, now_ms: u64) -> Result<u32, PrecallError> {
        let to = (&to).try_into()?;
        req(self.core().query_caps(&to, time(now_ms)))
    }

    /// [`Client::answer`]: accepts (`accept` true) or rejects an incoming call.
    pub fn answer(&self, call: u64, accept: bool, now_ms: u64) -> Result<(), PrecallError> {
        Ok(self.core().answer(CallId(call), accept, time(now_ms))?)
    }

    /// [`Client::accept_with_media`]: accepts, carrying the callee's media
    /// description back to the caller.
    pub fn accept_with_media(
        &self,
        call: u64,
        media: String,
        now_ms: u64,
    ) -> Result<(), PrecallError> {
        let media = MediaDescription::new(media)?;
        Ok(self
            .core()
            .accept_with_media(CallId(call), media, time(now_ms))?)
    }

    /// [`Client::hangup`].
    pub fn hangup(&self, call: u64, now_ms: u64) -> Result<(), PrecallError> {
        Ok(self.core().hangup(CallId(call), time(now_ms))?)
    }

    /// [`Client::update_caps`]: the request tag (`CapsAcknowledged` carries it).
    pub fn update_caps(
        &self,
        capabilities: Capabilities,
        now_ms: u64,
    ) -> Result<u32, PrecallError> {
        let caps = capabilities.try_into()?;
        req(self.core().update_caps(caps, time(now_ms)))
    }

    /// [`Client::add_contact`]: the request tag.
    pub fn add_contact(&self, user: String, now_ms: u64) -> Result<u32, PrecallError> {
        let user = UserId::new(user)?;
        req(self.core().add_contact(user, time(now_ms)))
    }

    /// [`Client::remove_contact`]: the request tag.
    pub fn remove_contact(&self, user: String, now_ms: u64) -> Result<u32, PrecallError> {
        let user = UserId::new(user)?;
        req(self.core().remove_contact(user, time(now_ms)))
    }

    /// [`Client::status`].
    pub fn status(&self) -> Status {
        self.core().status().into()
    }

    /// [`Client::is_synced`]: the table holds every online contact terminal.
    pub fn is_synced(&self) -> bool {
        self.core().is_synced()
    }

    /// [`Client::can_resume`].
    pub fn can_resume(&self) -> bool {
        self.core().can_resume()
    }

    /// [`Client::caps_in_flight`].
    pub fn caps_in_flight(&self) -> bool {
        self.core().caps_in_flight()
    }

    /// [`Client::endpoint`]: this terminal, once logged in.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.core().endpoint().as_ref().map(Into::into)
    }

    /// [`Client::capabilities`]: this terminal's, once logged in.
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.core().capabilities().map(Into::into)
    }

    /// [`Client::contacts`]: the contact list.
    pub fn contacts(&self) -> Vec<String> {
        self.core()
            .contacts()
            .map(|u| u.as_str().to_owned())
            .collect()
    }

    /// [`Client::peers`]: the table, every online contact terminal with its
    /// pre-computed parameters.
    pub fn peers(&self) -> Vec<PeerEntry> {
        self.core().peers().map(Into::into).collect()
    }

    /// [`Client::peer`]: one entry of the table.
    pub fn peer(&self, endpoint: Endpoint) -> Result<Option<PeerEntry>, PrecallError> {
        let endpoint = (&endpoint).try_into()?;
        Ok(self
            .core()
            .peer(&endpoint)
            .map(|peer| (&endpoint, peer).into()))
    }

    /// [`Client::calls`].
    pub fn calls(&self) -> Vec<CallInfo> {
        self.core().calls().map(Into::into).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_debugs_without_its_password() {
        let config = ClientConfig {
            user: "alice".into(),
            password: "hunter2-secret".into(),
            login: LoginWith::TerminalId {
                id: "kiosk-1".into(),
            },
            ping_interval_ms: Some(5),
            max_frame: None,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("alice") && shown.contains("kiosk-1") && shown.contains("<redacted>")
        );
    }
}
