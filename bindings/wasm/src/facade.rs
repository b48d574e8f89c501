//! [`Facade`]: the JavaScript API with Rust types. [`crate::PrecallClient`] is this,
//! with JavaScript values converted at the boundary; the host tests drive this one.
//! Each method converts its arguments (every `now_ms` through [`input::time`] to the
//! core's `Time`), calls the one core method it is named after, and converts the
//! result: no protocol rule is made here.

use precall_protocol::{
    Capabilities, Client, Endpoint, LoginWith, MediaDescription, Password, ReqId, UserId,
};

use crate::error::Error;
use crate::event::Event;
use crate::input::{self, Config, SectionKind};
use crate::sdp::{self, Encoder};
use crate::view::{self, CallRow, PeerEntry, Row};

/// One terminal's client core and what it logs in with.
#[derive(Clone, Debug)]
pub struct Facade {
    client: Client,
    user: UserId,
    password: Password,
    with: LoginWith,
}

fn req(r: Result<ReqId, precall_protocol::ClientError>) -> Result<u32, Error> {
    Ok(r?.0)
}

impl Facade {
    /// A client that is not logged in, with the credentials and the capabilities (or
    /// terminal identifier) that [`Facade::login`] sends.
    pub fn new(config: Config) -> Result<Self, Error> {
        let with = config.login_with()?;
        Ok(Self {
            client: Client::new(config.client_config()),
            user: config.user,
            password: config.password,
            with,
        })
    }

    /// The core client, for reading.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// [`Client::login`] with the configured credentials.
    pub fn login(&mut self, now_ms: f64) -> Result<(), Error> {
        let now = input::time(now_ms)?;
        let (user, password) = (self.user.clone(), self.password.clone());
        Ok(self.client.login(user, password, self.with.clone(), now)?)
    }

    /// [`Client::logout`].
    pub fn logout(&mut self, now_ms: f64) -> Result<(), Error> {
        Ok(self.client.logout(input::time(now_ms)?)?)
    }

    /// [`Client::resume`].
    pub fn resume(&mut self, now_ms: f64) -> Result<(), Error> {
        Ok(self.client.resume(input::time(now_ms)?)?)
    }

    /// [`Client::abandon`].
    pub fn abandon(&mut self, now_ms: f64) -> Result<(), Error> {
        self.client.abandon(input::time(now_ms)?);
        Ok(())
    }

    /// [`Client::receive`]. An error means the connection is unusable: close it (the
    /// core has already detached or ended the session, and says so in an event).
    pub fn receive(&mut self, bytes: &[u8], now_ms: f64) -> Result<(), Error> {
        Ok(self.client.receive(bytes, input::time(now_ms)?)?)
    }

    /// [`Client::handle_timeout`].
    pub fn handle_timeout(&mut self, now_ms: f64) -> Result<(), Error> {
        self.client.handle_timeout(input::time(now_ms)?);
        Ok(())
    }

    /// [`Client::connection_closed`].
    pub fn connection_closed(&mut self, now_ms: f64) -> Result<(), Error> {
        self.client.connection_closed(input::time(now_ms)?);
        Ok(())
    }

    /// [`Client::poll_transmit`]: one whole frame, length prefix included.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.client.poll_transmit().map(|frame| frame.to_vec())
    }

    /// [`Client::poll_event`], as the page's [`Event`].
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.client.poll_event()?;
        Some(Event::from_client(ev, &self.client, &self.user))
    }

    /// [`Client::poll_timeout`], in milliseconds.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.client.poll_timeout().map(input::millis)
    }

    /// [`Client::place_call`]: the request tag.
    pub fn call(&mut self, to: &Endpoint, now_ms: f64) -> Result<u32, Error> {
        let now = input::time(now_ms)?;
        req(self.client.place_call(to, now))
    }

    /// [`Client::place_call_with_media`]: the fast-path call carrying the caller's
    /// media description (spec 10.8; in a page, the SDP offer `applySdp` produced,
    /// with its ICE candidates). The request tag.
    pub fn call_with_media(
        &mut self,
        to: &Endpoint,
        media: &str,
        now_ms: f64,
    ) -> Result<u32, Error> {
        let (media, now) = (MediaDescription::new(media)?, input::time(now_ms)?);
        req(self.client.place_call_with_media(to, media, now))
    }

    /// [`Client::place_call_exchanging_capabilities`] (the patent's prior art, for
    /// comparison): the request tag.
    pub fn call_prior_art(&mut self, to: &Endpoint, now_ms: f64) -> Result<u32, Error> {
        let now = input::time(now_ms)?;
        req(self.client.place_call_exchanging_capabilities(to, now))
    }

    /// [`Client::query_caps`]: the request tag.
    pub fn query_caps(&mut self, to: &Endpoint, now_ms: f64) -> Result<u32, Error> {
        let now = input::time(now_ms)?;
        req(self.client.query_caps(to, now))
    }

    /// [`Client::answer`] with `accept` true.
    pub fn answer(&mut self, call: f64, now_ms: f64) -> Result<(), Error> {
        let (call, now) = (input::call_id(call)?, input::time(now_ms)?);
        Ok(self.client.answer(call, true, now)?)
    }

    /// [`Client::accept_with_media`]: accepts, carrying the callee's media
    /// description (spec 10.8; in a page, the SDP answer) back to the caller.
    pub fn accept_with_media(&mut self, call: f64, media: &str, now_ms: f64) -> Result<(), Error> {
        let (call, now) = (input::call_id(call)?, input::time(now_ms)?);
        let media = MediaDescription::new(media)?;
        Ok(self.client.accept_with_media(call, media, now)?)
    }

    /// [`Client::answer`] with `accept` false.
    pub fn reject(&mut self, call: f64, now_ms: f64) -> Result<(), Error> {
        let (call, now) = (input::call_id(call)?, input::time(now_ms)?);
        Ok(self.client.answer(call, false, now)?)
    }

    /// [`Client::hangup`].
    pub fn hangup(&mut self, call: f64, now_ms: f64) -> Result<(), Error> {
        let (call, now) = (input::call_id(call)?, input::time(now_ms)?);
        Ok(self.client.hangup(call, now)?)
    }

    /// [`Client::update_caps`]: the request tag. ([`Facade::login`] still sends the
    /// configured capabilities: a new login is a new configuration.)
    pub fn update_caps(&mut self, caps: Capabilities, now_ms: f64) -> Result<u32, Error> {
        let now = input::time(now_ms)?;
        req(self.client.update_caps(caps, now))
    }

    /// [`Client::add_contact`]: the request tag.
    pub fn add_contact(&mut self, user: &str, now_ms: f64) -> Result<u32, Error> {
        let (user, now) = (UserId::new(user)?, input::time(now_ms)?);
        req(self.client.add_contact(user, now))
    }

    /// [`Client::remove_contact`]: the request tag.
    pub fn remove_contact(&mut self, user: &str, now_ms: f64) -> Result<u32, Error> {
        let (user, now) = (UserId::new(user)?, input::time(now_ms)?);
        req(self.client.remove_contact(user, now))
    }

    /// The table ([`view::table`]).
    pub fn table(&self) -> Vec<Row> {
        view::table(&self.client)
    }

    /// One table entry ([`view::peer`]).
    pub fn peer(&self, endpoint: &Endpoint) -> Option<PeerEntry> {
        view::peer(&self.client, endpoint)
    }

    /// The calls ([`view::calls`]).
    pub fn calls(&self) -> Vec<CallRow> {
        view::calls(&self.client)
    }

    /// The status ([`view::status`]).
    pub fn status(&self) -> &'static str {
        view::status(&self.client)
    }

    /// The offer's `m=video` section for a call to `peer` ([`sdp::offer`]).
    pub fn sdp_offer(&self, peer: &Endpoint) -> Result<String, Error> {
        Ok(sdp::offer(&self.client, peer)?.to_string())
    }

    /// The answer's `m=video` section for a call from `peer` ([`sdp::answer`]).
    pub fn sdp_answer(&self, peer: &Endpoint) -> Result<String, Error> {
        Ok(sdp::answer(&self.client, peer)?.to_string())
    }

    /// A stack's description with the offer or answer section for `peer` in it
    /// ([`sdp::apply`]).
    pub fn apply_sdp(
        &self,
        stack_sdp: &str,
        peer: &Endpoint,
        kind: SectionKind,
    ) -> Result<String, Error> {
        sdp::apply(&self.client, stack_sdp, peer, kind)
    }

    /// The encoder settings of what this terminal sends to `peer` ([`sdp::encoder`]).
    pub fn encoder_settings(&self, peer: &Endpoint) -> Result<Option<Encoder>, Error> {
        sdp::encoder(&self.client, peer)
    }
}
