//! The `negotiate` target: arbitrary capability pairs through the real rule.

use arbitrary::{Arbitrary, Unstructured};

use crate::caps::Capabilities;
use crate::negotiate::negotiate_pair;
use crate::properties;

/// Runs the target on one input. Panics when a property breaks.
pub fn negotiate(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((a, b, raise)) = <(Capabilities, Capabilities, [u32; 4])>::arbitrary(&mut u) else {
        return;
    };
    if let Err(e) = properties::all(negotiate_pair, &a, &b, raise) {
        panic!("{e}\n a = {a:?}\n b = {b:?}\n raise = {raise:?}");
    }
    // Equal capabilities, however they travelled, have equal fingerprints.
    let copy: Capabilities = serde_json::from_slice(&crate::codec::encode_payload(&a))
        .unwrap_or_else(|e| panic!("capabilities do not round-trip: {e}"));
    assert_eq!(copy, a);
    assert_eq!(copy.fingerprint(), a.fingerprint());
    assert_eq!(
        a == b,
        a.fingerprint() == b.fingerprint(),
        "fingerprint collision or split"
    );
}
