//! The facade's scenarios on the host, against [`Facade`] (the JavaScript API with
//! Rust types): the same checks `node.rs` runs against the `wasm-bindgen` class in
//! Node (`bindings/wasm/test.sh`), so `cargo test --workspace` covers them too.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use precall_protocol::{Endpoint, Time};
use precall_wasm::input::{endpoint_from_text, SectionKind};
use precall_wasm::{Error, Facade};
use serde_json::{json, Value};

fn err(e: Error) -> Value {
    serde_json::to_value(e).expect("errors serialise")
}

fn peer(v: &Value) -> Result<Endpoint, Value> {
    match v.as_str() {
        Some(text) => endpoint_from_text(text).map_err(err),
        None => serde_json::from_value(v.clone())
            .map_err(|e| json!({"code": "invalid_argument", "message": e.to_string()})),
    }
}

fn ms(t: Time) -> f64 {
    t.0 as f64
}

impl Page for Facade {
    fn login(&mut self, now: Time) -> Result<(), Value> {
        Facade::login(self, ms(now)).map_err(err)
    }
    fn logout(&mut self, now: Time) -> Result<(), Value> {
        Facade::logout(self, ms(now)).map_err(err)
    }
    fn resume(&mut self, now: Time) -> Result<(), Value> {
        Facade::resume(self, ms(now)).map_err(err)
    }
    fn receive(&mut self, bytes: &[u8], now: Time) -> Result<(), Value> {
        Facade::receive(self, bytes, ms(now)).map_err(err)
    }
    fn handle_timeout(&mut self, now: Time) {
        Facade::handle_timeout(self, ms(now)).expect("a valid time")
    }
    fn connection_closed(&mut self, now: Time) {
        Facade::connection_closed(self, ms(now)).expect("a valid time")
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        Facade::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Value> {
        Facade::poll_event(self).map(|ev| serde_json::to_value(ev).expect("events serialise"))
    }
    fn poll_timeout(&self) -> Option<f64> {
        Facade::poll_timeout(self)
    }
    fn call(&mut self, to: &Value, now: Time) -> Result<u32, Value> {
        Facade::call(self, &peer(to)?, ms(now)).map_err(err)
    }
    fn call_with_media(&mut self, to: &Value, media: &str, now: Time) -> Result<u32, Value> {
        Facade::call_with_media(self, &peer(to)?, media, ms(now)).map_err(err)
    }
    fn accept_with_media(&mut self, call: f64, media: &str, now: Time) -> Result<(), Value> {
        Facade::accept_with_media(self, call, media, ms(now)).map_err(err)
    }
    fn answer(&mut self, call: f64, now: Time) -> Result<(), Value> {
        Facade::answer(self, call, ms(now)).map_err(err)
    }
    fn hangup(&mut self, call: f64, now: Time) -> Result<(), Value> {
        Facade::hangup(self, call, ms(now)).map_err(err)
    }
    fn status(&self) -> String {
        Facade::status(self).to_owned()
    }
    fn table(&self) -> Value {
        serde_json::to_value(Facade::table(self)).expect("rows serialise")
    }
    fn sdp_offer(&self, to: &Value) -> Result<String, Value> {
        Facade::sdp_offer(self, &peer(to)?).map_err(err)
    }
    fn sdp_answer(&self, to: &Value) -> Result<String, Value> {
        Facade::sdp_answer(self, &peer(to)?).map_err(err)
    }
    fn apply_sdp(&self, stack: &str, to: &Value, kind: &str) -> Result<String, Value> {
        let kind = SectionKind::parse(kind).map_err(err)?;
        Facade::apply_sdp(self, stack, &peer(to)?, kind).map_err(err)
    }
    fn encoder_settings(&self, to: &Value) -> Result<Value, Value> {
        let settings = Facade::encoder_settings(self, &peer(to)?).map_err(err)?;
        Ok(serde_json::to_value(settings).expect("settings serialise"))
    }
}

fn alice() -> Facade {
    let config = serde_json::from_value(alice_config()).expect("a valid configuration");
    Facade::new(config).expect("capabilities given")
}

#[test]
fn a_peer_comes_online_with_the_negotiated_parameters_and_goes_offline() {
    online_then_offline(&mut alice(), &mut World::new()).unwrap();
}

/// The seeded fault: a facade that loses `peer_offline` fails the check above.
#[test]
fn a_facade_that_drops_peer_offline_fails_the_check() {
    let mut faulty = Dropping {
        inner: alice(),
        drop_type: "peer_offline",
    };
    let e = online_then_offline(&mut faulty, &mut World::new()).unwrap_err();
    assert!(e.contains("no peer_offline"), "{e}");
}

#[test]
fn the_sdp_helpers_say_what_precall_sdp_says_and_a_call_goes_through() {
    sdp_and_a_call(&mut alice(), &mut World::new()).unwrap();
}

#[test]
fn media_descriptions_ride_in_the_call_and_the_acceptance_both_ways() {
    media_both_ways(&mut alice(), &mut World::new()).unwrap();
}

#[test]
fn refusals_throw_their_codes_and_a_broken_stream_detaches_then_resumes() {
    errors_timers_and_resume(&mut alice(), &mut World::new()).unwrap();
}

#[test]
fn a_terminal_id_configuration_logs_in_by_identifier() {
    let config = serde_json::from_value(json!({"user": "alice", "password": "alice-pw",
                                                "terminalId": "kiosk-1"}))
    .unwrap();
    let mut page = Facade::new(config).unwrap();
    page.login(0.0).unwrap();
    let frame = page.poll_transmit().expect("the login frame");
    let text = String::from_utf8_lossy(&frame[4..]).into_owned();
    assert!(text.contains("\"terminal_id\":\"kiosk-1\""), "{text}");
    assert_eq!(
        page.login(f64::NAN).unwrap_err().code,
        "invalid_time",
        "a bad time is refused before the core sees it"
    );
}
