//! The facade in Node, through its JavaScript API: `wasm-bindgen-test` tests run by
//! `wasm-bindgen-test-runner` (`bindings/wasm/test.sh`). Each test creates a
//! `PrecallClient` with `new` from JavaScript (`Reflect.construct` on the class) and
//! calls its methods by their camelCase names through the generated glue, exactly as a
//! page does: bytes go in and out as `Uint8Array`s, times as numbers, events and
//! tables come back as JavaScript objects (checked to be plain objects, never `Map`s
//! or `BigInt`s), errors are thrown `PrecallError`s. The scenarios and their checks
//! are `common/mod.rs`'s, the ones `facade.rs` runs on the host.

#![cfg(target_arch = "wasm32")]

mod common;

use common::*;
use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use precall_protocol::Time;
use precall_wasm::PrecallClient;
use serde::Serialize;
use serde_json::{json, Value};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

/// A `PrecallClient` as JavaScript holds it.
struct JsPage {
    obj: JsValue,
}

fn js_of(v: &Value) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true))
        .expect("JSON converts")
}

fn ms(t: Time) -> JsValue {
    JsValue::from_f64(t.0 as f64)
}

/// Whether `v` holds only what JSON holds: plain objects (their prototype is
/// `Object.prototype`), arrays, strings, numbers, booleans.
fn plain(v: &JsValue, path: &str) -> Result<(), String> {
    if v.is_bigint() {
        return Err(format!("{path} is a BigInt"));
    }
    if Array::is_array(v) {
        for (i, item) in Array::from(v).iter().enumerate() {
            plain(&item, &format!("{path}[{i}]"))?;
        }
        return Ok(());
    }
    if v.is_object() {
        let proto = Object::get_prototype_of(v);
        if !JsValue::from(proto).loose_eq(&JsValue::from(Object::get_prototype_of(&Object::new())))
        {
            return Err(format!("{path} is not a plain object"));
        }
        for entry in Object::entries(v.unchecked_ref()).iter() {
            let pair = Array::from(&entry);
            let key = pair.get(0).as_string().unwrap_or_default();
            plain(&pair.get(1), &format!("{path}.{key}"))?;
        }
    }
    Ok(())
}

/// An object returned by the API, as JSON, after checking it is plain.
fn json_of(v: JsValue, what: &str) -> Value {
    if v.is_undefined() {
        return Value::Null;
    }
    if let Err(e) = plain(&v, what) {
        panic!("{e}");
    }
    serde_wasm_bindgen::from_value(v).expect("plain objects read back")
}

/// A thrown value as `{code, message}`, after checking it is a `PrecallError`.
fn thrown(e: JsValue) -> Value {
    let err = e
        .dyn_ref::<js_sys::Error>()
        .unwrap_or_else(|| panic!("threw a non-Error: {e:?}"));
    assert_eq!(err.name(), "PrecallError");
    let code = Reflect::get(&e, &"code".into()).expect("a code property");
    let code = code.as_string().expect("the code is a string");
    json!({"code": code, "message": String::from(err.message())})
}

impl JsPage {
    /// `new PrecallClient(config)` from JavaScript.
    fn new(config: &Value) -> Result<JsPage, Value> {
        let class = precall_class();
        Reflect::construct(&class, &Array::of1(&js_of(config)))
            .map(|obj| JsPage { obj })
            .map_err(thrown)
    }

    fn method(&self, name: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
        let f = Reflect::get(&self.obj, &name.into()).expect("a property");
        let f: Function = f
            .dyn_into()
            .unwrap_or_else(|_| panic!("PrecallClient has no method {name}"));
        f.apply(&self.obj, &args.iter().collect::<Array>())
    }

    fn unit(&self, name: &str, args: &[JsValue]) -> Result<(), Value> {
        let r = self.method(name, args).map_err(thrown)?;
        assert!(r.is_undefined(), "{name} returned {r:?}");
        Ok(())
    }

    fn text(&self, name: &str, args: &[JsValue]) -> Result<String, Value> {
        let r = self.method(name, args).map_err(thrown)?;
        Ok(r.as_string()
            .unwrap_or_else(|| panic!("{name} returned {r:?}")))
    }
}

/// The `PrecallClient` class, as the glue defines it (the constructor of an instance).
fn precall_class() -> Function {
    // Reached through an instance made in Rust, then used from JavaScript.
    let instance: JsValue = PrecallClient::new(js_of(&alice_config()))
        .expect("a valid configuration")
        .into();
    Reflect::get(&instance, &"constructor".into())
        .expect("a constructor")
        .dyn_into()
        .expect("a class")
}

impl Page for JsPage {
    fn login(&mut self, now: Time) -> Result<(), Value> {
        self.unit("login", &[ms(now)])
    }
    fn logout(&mut self, now: Time) -> Result<(), Value> {
        self.unit("logout", &[ms(now)])
    }
    fn resume(&mut self, now: Time) -> Result<(), Value> {
        self.unit("resume", &[ms(now)])
    }
    fn receive(&mut self, bytes: &[u8], now: Time) -> Result<(), Value> {
        self.unit("receive", &[Uint8Array::from(bytes).into(), ms(now)])
    }
    fn handle_timeout(&mut self, now: Time) {
        self.unit("handleTimeout", &[ms(now)])
            .expect("a valid time")
    }
    fn connection_closed(&mut self, now: Time) {
        self.unit("connectionClosed", &[ms(now)])
            .expect("a valid time")
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let r = self.method("pollTransmit", &[]).expect("never throws");
        if r.is_undefined() {
            return None;
        }
        let frame: Uint8Array = r.dyn_into().expect("pollTransmit returns a Uint8Array");
        Some(frame.to_vec())
    }
    fn poll_event(&mut self) -> Option<Value> {
        let r = self.method("pollEvent", &[]).expect("never throws");
        (!r.is_undefined()).then(|| json_of(r, "event"))
    }
    fn poll_timeout(&self) -> Option<f64> {
        let r = self.method("pollTimeout", &[]).expect("never throws");
        if r.is_undefined() {
            return None;
        }
        Some(r.as_f64().expect("pollTimeout returns a number"))
    }
    fn call(&mut self, peer: &Value, now: Time) -> Result<u32, Value> {
        let r = self
            .method("call", &[js_of(peer), ms(now)])
            .map_err(thrown)?;
        Ok(r.as_f64().expect("call returns a number") as u32)
    }
    fn call_with_media(&mut self, peer: &Value, media: &str, now: Time) -> Result<u32, Value> {
        let r = self
            .method("callWithMedia", &[js_of(peer), media.into(), ms(now)])
            .map_err(thrown)?;
        Ok(r.as_f64().expect("callWithMedia returns a number") as u32)
    }
    fn accept_with_media(&mut self, call: f64, media: &str, now: Time) -> Result<(), Value> {
        self.unit(
            "acceptWithMedia",
            &[JsValue::from_f64(call), media.into(), ms(now)],
        )
    }
    fn answer(&mut self, call: f64, now: Time) -> Result<(), Value> {
        self.unit("answer", &[JsValue::from_f64(call), ms(now)])
    }
    fn hangup(&mut self, call: f64, now: Time) -> Result<(), Value> {
        self.unit("hangup", &[JsValue::from_f64(call), ms(now)])
    }
    fn status(&self) -> String {
        self.text("status", &[]).expect("never throws")
    }
    fn table(&self) -> Value {
        json_of(self.method("table", &[]).expect("never throws"), "table")
    }
    fn sdp_offer(&self, peer: &Value) -> Result<String, Value> {
        self.text("sdpOffer", &[js_of(peer)])
    }
    fn sdp_answer(&self, peer: &Value) -> Result<String, Value> {
        self.text("sdpAnswer", &[js_of(peer)])
    }
    fn apply_sdp(&self, stack: &str, peer: &Value, kind: &str) -> Result<String, Value> {
        self.text("applySdp", &[stack.into(), js_of(peer), kind.into()])
    }
    fn encoder_settings(&self, peer: &Value) -> Result<Value, Value> {
        let r = self
            .method("encoderSettings", &[js_of(peer)])
            .map_err(thrown)?;
        Ok(json_of(r, "encoderSettings"))
    }
}

fn alice() -> JsPage {
    JsPage::new(&alice_config()).expect("a valid configuration")
}

#[wasm_bindgen_test]
fn a_peer_comes_online_with_the_negotiated_parameters_and_goes_offline() {
    online_then_offline(&mut alice(), &mut World::new()).unwrap();
}

/// The seeded fault: a facade that loses `peer_offline` fails the check above.
#[wasm_bindgen_test]
fn a_facade_that_drops_peer_offline_fails_the_check() {
    let mut faulty = Dropping {
        inner: alice(),
        drop_type: "peer_offline",
    };
    let e = online_then_offline(&mut faulty, &mut World::new()).unwrap_err();
    assert!(e.contains("no peer_offline"), "{e}");
}

#[wasm_bindgen_test]
fn the_sdp_helpers_say_what_precall_sdp_says_and_a_call_goes_through() {
    sdp_and_a_call(&mut alice(), &mut World::new()).unwrap();
}

#[wasm_bindgen_test]
fn media_descriptions_ride_in_the_call_and_the_acceptance_both_ways() {
    media_both_ways(&mut alice(), &mut World::new()).unwrap();
}

#[wasm_bindgen_test]
fn refusals_throw_their_codes_and_a_broken_stream_detaches_then_resumes() {
    errors_timers_and_resume(&mut alice(), &mut World::new()).unwrap();
}

#[wasm_bindgen_test]
fn the_class_has_every_method_of_the_api_under_its_javascript_name() {
    let page = alice();
    let methods = [
        "login",
        "logout",
        "resume",
        "abandon",
        "receive",
        "handleTimeout",
        "connectionClosed",
        "pollTransmit",
        "pollEvent",
        "pollTimeout",
        "call",
        "callWithMedia",
        "callPriorArt",
        "queryCaps",
        "answer",
        "acceptWithMedia",
        "reject",
        "hangup",
        "updateCaps",
        "addContact",
        "removeContact",
        "status",
        "isSynced",
        "canResume",
        "capsInFlight",
        "user",
        "endpoint",
        "capabilities",
        "contacts",
        "table",
        "peer",
        "calls",
        "sdpOffer",
        "sdpAnswer",
        "applySdp",
        "encoderSettings",
    ];
    for name in methods {
        let f = Reflect::get(&page.obj, &name.into()).unwrap();
        assert!(f.is_function(), "PrecallClient.{name} is missing");
    }
    // Before a login: nothing held, no timer, no frame.
    let undefined = |name: &str| page.method(name, &[]).unwrap().is_undefined();
    for name in [
        "user",
        "endpoint",
        "capabilities",
        "pollTimeout",
        "pollTransmit",
        "pollEvent",
    ] {
        assert!(undefined(name), "{name}() before login");
    }
    assert_eq!(page.text("status", &[]).unwrap(), "idle");
    let falsy = |name: &str| page.method(name, &[]).unwrap() == JsValue::FALSE;
    assert!(falsy("isSynced") && falsy("canResume") && falsy("capsInFlight"));
    // The plain-object check these tests rely on refuses what it must.
    assert!(plain(&js_sys::Map::new().into(), "m").is_err());
    assert!(plain(&JsValue::bigint_from_str("1"), "b").is_err());
    assert!(plain(&js_of(&json!({"a": [1, {"b": "c"}]})), "o").is_ok());
}

#[wasm_bindgen_test]
fn bad_configurations_and_arguments_throw_precall_errors() {
    let cases = [
        json!("alice"),
        json!({"user": "alice", "password": "pw"}),
        json!({"user": "alice", "password": "pw", "terminalId": "t", "capabilities": alice_caps()}),
        json!({"user": "Alice", "password": "pw", "terminalId": "t"}),
        json!({"user": "alice", "password": "pw", "terminalID": "t"}),
    ];
    for config in cases {
        let e = JsPage::new(&config).err().expect("refused");
        assert_eq!(e["code"], "invalid_config", "{config}: {e}");
    }
    let mut page = alice();
    // A time that is not one, a call number that is not one, a peer that is not one.
    let e = page
        .login(Time(0))
        .and_then(|()| page.unit("handleTimeout", &[JsValue::from_f64(f64::NAN)]));
    assert_eq!(e.unwrap_err()["code"], "invalid_time");
    let e = page.unit("answer", &[JsValue::from_f64(1.5), JsValue::from_f64(0.0)]);
    assert_eq!(e.unwrap_err()["code"], "invalid_argument");
    let e = page.text("sdpOffer", &[JsValue::from_f64(3.0)]);
    assert_eq!(e.unwrap_err()["code"], "invalid_argument");
    let e = page.text("sdpOffer", &["bob".into()]);
    assert_eq!(e.unwrap_err()["code"], "invalid_argument");
    // Capabilities out of range.
    let mut caps = serde_json::to_value(alice_caps()).unwrap();
    caps["camera"]["max_fps"] = json!(0);
    let e = page
        .method("updateCaps", &[js_of(&caps), JsValue::from_f64(0.0)])
        .map_err(thrown)
        .unwrap_err();
    assert_eq!(e["code"], "invalid_value", "{e}");
}
